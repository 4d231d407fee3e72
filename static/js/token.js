// Invitations (token mode): a signed token that arrives in an invite link's
// fragment, `/?room=private-design#token=...`. A fragment never reaches a
// server nor a Referer, and the page takes it out of the address at once so
// it is not bookmarked, copied on or left in the history. The latest token
// is kept (localStorage, shared by every tab) and presented on every
// WebSocket (`?token=`, a browser cannot set headers there) and upload
// (`Authorization: Bearer`).
//
// Its payload is read here only to put words on the screen: whose it is
// (`sub`, the name to chat as), which rooms it opens, when it expires. The
// signature is not checked and nothing is decided by it: the server checks
// every token itself.

import { load, save } from './store.js';

const KEY_TOKEN = 'roomcast.token';

function base64urlJson(part) {
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Uint8Array.from(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** `{ sub, rooms, exp, moderator }` as the token says (unverified), or null if it cannot be read. */
export function decodeToken(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return null;
  try {
    const p = base64urlJson(parts[1]);
    if (!p || typeof p.sub !== 'string' || !p.sub.trim()) return null;
    return {
      sub: p.sub.trim(),
      rooms: Array.isArray(p.rooms) ? p.rooms.filter((r) => typeof r === 'string') : [],
      exp: typeof p.exp === 'number' ? p.exp : 0,
      moderator: p.role === 'moderator',
    };
  } catch {
    return null;
  }
}

/** The kept invitation: `{ token, sub, rooms, exp, moderator }`, or null. */
export function savedInvite() {
  const token = load(KEY_TOKEN) || '';
  const claims = token ? decodeToken(token) : null;
  return claims ? { token, ...claims } : null;
}

/** The token to present as `user`, or '' (one for someone else would only be refused). */
export function tokenFor(user) {
  const inv = savedInvite();
  return inv && inv.sub === (user || '').trim() ? inv.token : '';
}

/** Forgets the kept token (the server called it invalid: it never will be). */
export function dropToken(token) {
  if (load(KEY_TOKEN) === token) save(KEY_TOKEN, null);
}

/** Runs `cb` when another tab keeps a new token (an invite link opened there). */
export function onTokenStored(cb) {
  window.addEventListener('storage', (e) => { if (e.key === KEY_TOKEN && e.newValue) cb(); });
}

/** A room the invitation names outright (not a `prefix*` pattern), to enter when the link names none. */
export const invitedRoom = (inv) => inv.rooms.find((r) => r.trim() && !r.includes('*')) || '';

/**
 * Takes `#token=...` out of the address (keeping the rest of it) and keeps
 * the token. Returns null when the address carries none, `{ invalid: true }`
 * when it cannot be read, else the invitation.
 */
export function takeInvite() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.has('token')) return null;
  const token = (params.get('token') || '').trim();
  params.delete('token');
  const rest = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
  const claims = decodeToken(token);
  if (!claims) return { invalid: true };
  save(KEY_TOKEN, token);
  return { token, ...claims };
}
