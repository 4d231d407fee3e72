// Why a connection was refused, in words a person can act on.
//
// A browser never says why a WebSocket handshake failed: a name in use
// (409), a private room (403) and an expired invitation (401) all look like
// the same dead socket. The server answers a plain GET to the same URL (the
// "preflight", docs/protocol.md) with the status and JSON the upgrade got,
// so after a failed attempt the page asks it, and decides whether trying
// again can help.

import { quoted } from './format.js';
import { inviteFor, savedInvite } from './token.js';

/** `{ status, error, message }` the preflight answered, or null when the server could not be reached. */
export async function preflight(path) {
  try {
    const res = await fetch(path, { cache: 'no-store', credentials: 'omit' });
    let body = null;
    try { body = await res.json(); } catch { /* not JSON */ }
    return { status: res.status, error: body?.error || '', message: body?.message || '' };
  } catch {
    return null;
  }
}

/**
 * What to do about a preflight's answer for `room` and `user`:
 * - `{ retry: true, text? }`: a passing problem; keep trying (saying `text`).
 * - `{ dropClaim: true }` / `{ dropToken: true, ... }`: forget a credential.
 * - `{ stop: 'name' | 'room' | 'token', text }`: trying again cannot help;
 *   `stop` says which field the person has to change (token: none of them,
 *   they need a new invite link).
 */
export function explainRefusal(answer, { room, user }) {
  if (!answer) return { retry: true, text: navigator.onLine ? 'The server cannot be reached.' : 'You are offline.' };
  const { status, error, message } = answer;
  // The invitation the attempt presented, else the latest kept (someone else's).
  const inv = inviteFor(user, room) || savedInvite();
  switch (error) {
    case 'name_taken':
      return { stop: 'name', text: `${quoted(user)} is being used in this room by someone else; pick another name.` };
    case 'bad_claim':
      return { dropClaim: true };
    case 'private_room':
      return {
        stop: 'room',
        text: `${quoted(room)} is a private room: it needs an invite link, and this server does not hand them out. Pick another room.`,
      };
    case 'token_required':
      if (inv && inv.sub !== user) {
        return {
          stop: 'name',
          text: `Your invitation is for ${quoted(inv.sub)}: join as ${inv.sub}, or open an invite link for ${quoted(user)}.`,
        };
      }
      return { stop: 'token', text: 'This server is invitation-only: open the invite link you were given to join.' };
    case 'token_expired':
      return { stop: 'token', text: expiredText() };
    case 'invalid_token':
    case 'token_too_large':
      return {
        dropToken: true,
        stop: 'token',
        text: 'Your invite link is not valid (it may be damaged, or from another server). Ask for a new link.',
      };
    case 'wrong_user':
      return { stop: 'name', text: `Your invitation is for ${quoted(inv ? inv.sub : 'someone else')}, not ${quoted(user)}; join with that name.` };
    case 'room_not_allowed':
      return { stop: 'room', text: `Your invitation does not open the private room ${quoted(room)}; ask for an invite link to it.` };
    case 'origin_not_allowed':
      return { stop: 'token', text: 'This page’s address is not allowed to connect to this chat server.' };
    case 'too_many_connections':
      // 429: this address's own share is taken (other tabs, or others on
      // the same network); 503: the whole server is full.
      if (status === 429) {
        return { retry: true, text: 'Too many chat connections are open from your network; close a tab or two and this one will connect.' };
      }
      return { retry: true, text: 'The server is up but is not taking new connections right now; it is probably full.' };
    case 'rate_limited':
      return { retry: true, text: 'Reconnecting too often from your network; trying again shortly.' };
    case 'shutting_down':
      return { retry: true, text: 'The server is restarting.' };
    case 'unavailable':
      return { retry: true, text: 'The server is briefly unavailable.' };
    default:
      break;
  }
  // Names with characters the server refuses (e.g. invisible ones) are only
  // caught there; its sentence says which.
  if (status === 400 && error === 'bad_request') {
    return { stop: 'name', text: `The server refused this name or room: ${(message || 'it is not valid').replace(/[.\s]+$/, '')}.` };
  }
  if (status >= 500) return { retry: true, text: 'The server is briefly unavailable.' };
  return { retry: true };
}

/** What an expired invitation means for the person holding it. */
export function expiredText() {
  return 'Your invitation has expired. Ask for a new invite link and open it to continue.';
}
