// Invitations (token mode): a signed token that arrives in an invite link's
// fragment, `/?room=private-design#token=...`. A fragment never reaches a
// server nor a Referer, and the page takes it out of the address at once so
// it is not bookmarked, copied on or left in the history. Tokens are kept
// (localStorage, shared by every tab), a few of them, since one person may
// hold invitations to several private rooms; the one presented for a room
// (`?token=` on the WebSocket, a browser cannot set headers there;
// `Authorization: Bearer` on uploads and history pages) is one whose
// `rooms` open it, by the server's rule (admits).
//
// Its payload is read here only to pick a token and to put words on the
// screen: whose it is (`sub`, the name to chat as), which rooms it opens,
// when it expires. The signature is not checked and nothing is decided by
// it: the server checks every token itself.

import { load, save } from './store.js';

const KEY_TOKENS = 'roomcast.tokens';
/** Kept before a browser could keep several: read once, then moved. */
const KEY_OLD = 'roomcast.token';
/** Tokens kept; one more drops expired ones, then the one kept longest ago. */
export const MAX_TOKENS = 8;

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

/** Every kept invitation, `{ token, sub, rooms, exp, moderator }`, the one kept last at the end. */
function kept() {
  let list = [];
  try {
    const v = JSON.parse(load(KEY_TOKENS) || '[]');
    if (Array.isArray(v)) list = v.filter((t) => typeof t === 'string');
  } catch { /* damaged: start over */ }
  const old = load(KEY_OLD);
  if (old) {
    // One token kept the earlier way: it joins the list, once.
    if (!list.includes(old)) list.unshift(old);
    save(KEY_TOKENS, JSON.stringify(list));
    save(KEY_OLD, null);
  }
  return list.map((token) => {
    const claims = decodeToken(token);
    return claims ? { token, ...claims } : null;
  }).filter(Boolean);
}

function keep(list) {
  save(KEY_TOKENS, list.length ? JSON.stringify(list.map((i) => i.token)) : null);
}

/** Not past its expiry (the server allows 30 s more, which is not counted on). */
export const usable = (inv) => Boolean(inv) && inv.exp * 1000 > Date.now();

/** The room's key, as the server compares rooms (lowercase; a pattern's prefix too). */
const key = (room) => room.trim().toLowerCase();

/**
 * Whether invitation `inv` opens `room`, by the server's rule: a room not
 * named `private-…` is open to every valid token; a private one needs an
 * entry of `rooms` naming it, or a `prefix*` it starts with (`*`: every
 * room), without case.
 */
export function admits(inv, room) {
  const k = key(room);
  if (!k.startsWith('private-')) return true;
  return inv.rooms.some((r) => (r.endsWith('*') ? k.startsWith(r.slice(0, -1).toLowerCase()) : key(r) === k));
}

/** The latest kept invitation: `{ token, sub, rooms, exp, moderator }`, or null. */
export function savedInvite() {
  return kept().at(-1) || null;
}

/**
 * The invitation to present as `user` in `room`: of those for `user` (one
 * for someone else would only be refused), the latest kept that opens the
 * room and has not expired; else the latest that opens it; else the latest
 * for `user`, whose refusal the server will explain. Null if none.
 */
export function inviteFor(user, room) {
  const mine = kept().filter((inv) => inv.sub === (user || '').trim()).reverse();
  const opens = mine.filter((inv) => admits(inv, room || ''));
  return opens.find(usable) || opens[0] || mine[0] || null;
}

/** The token to present as `user` in `room`, or ''. */
export function tokenFor(user, room) {
  return inviteFor(user, room)?.token || '';
}

/** Forgets a kept token (the server called it invalid: it never will be). */
export function dropToken(token) {
  const list = kept();
  const rest = list.filter((inv) => inv.token !== token);
  if (rest.length !== list.length) keep(rest);
}

/** Runs `cb` when another tab keeps a new token (an invite link opened there). */
export function onTokenStored(cb) {
  window.addEventListener('storage', (e) => { if (e.key === KEY_TOKENS && e.newValue) cb(); });
}

/** A room the invitation names outright (not a `prefix*` pattern), to enter when the link names none. */
export const invitedRoom = (inv) => inv.rooms.find((r) => r.trim() && !r.includes('*')) || '';

/** The same invitation but for its expiry: the same person, the same rooms. */
const sameGrant = (a, b) => a.sub === b.sub && a.moderator === b.moderator
  && JSON.stringify(a.rooms.map(key).sort()) === JSON.stringify(b.rooms.map(key).sort());

/**
 * Keeps `inv`, the latest: an earlier one with the same grant (a renewal
 * replaces what it renews) and expired ones go, and past MAX_TOKENS the
 * ones kept longest ago.
 */
function store(inv) {
  const list = kept().filter((o) => o.token !== inv.token && !sameGrant(o, inv) && usable(o));
  list.push(inv);
  keep(list.slice(-MAX_TOKENS));
}

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
  const inv = { token, ...claims };
  store(inv);
  return inv;
}
