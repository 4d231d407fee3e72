// Who this browser is in the chat: the name the person chose, and the
// claim that proves it is the same browser as before.
//
// Names are never handed out by plain links. Room links carry the room
// only; an address with `user=` is followed only when that is already this
// browser's name, otherwise the page asks. The one exception is a signed
// invitation (token.js): the server itself names its holder there.
//
// The claim (open mode): the server gives a connection that came without
// one a random secret in its `welcome`; whoever presents it again is the
// same identity, so a reload, a reconnect or another tab gets its own name
// back during the grace in which the server holds it for us. It is kept in
// localStorage, shared by every tab and room of this browser.

import { load, save } from './store.js';

const KEY_USER = 'roomcast.user';
const KEY_CLAIM = 'roomcast.claim';

export const savedName = () => (load(KEY_USER) || '').trim();
export const saveName = (name) => save(KEY_USER, name.trim());

/** The stored claim if it has the shape the server hands out (43 base64url characters), else ''. */
export function savedClaim() {
  const c = load(KEY_CLAIM) || '';
  return /^[A-Za-z0-9_-]{43}$/.test(c) ? c : '';
}

/**
 * A `welcome` handed us a claim. The first one stored wins: two tabs that
 * connected at the same moment without one each got a claim, and the one
 * already kept is the one other tabs are using.
 */
export function keepClaim(claim) {
  if (typeof claim === 'string' && !savedClaim()) save(KEY_CLAIM, claim);
}

/** The server called `claim` malformed: forget it (unless another tab already replaced it). */
export function dropClaim(claim) {
  if (savedClaim() === claim || !savedClaim()) save(KEY_CLAIM, null);
}

/** The server's rules (PROTOCOL.md), checked before connecting; '' when fine. */
export function validateName(value, what, max) {
  const v = value.trim();
  if (!v) return `Please enter a ${what}.`;
  const len = Array.from(v).length;
  if (len > max) return `The ${what} can be at most ${max} characters; this one has ${len}.`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(v)) return `The ${what} cannot contain control characters.`;
  if (what === 'room' && v.includes('/')) return 'The room name cannot contain “/”.';
  return '';
}

/**
 * What to do with the name an address carries (`user=`, maybe empty):
 * `{ join: name }` to enter as this browser's own name, or `{ ask: prefill,
 * note }` to show the form with a sentence saying why.
 */
export function nameForLink(linkUser) {
  const mine = savedName();
  const offered = (linkUser || '').trim();
  if (!offered) return mine ? { join: mine } : { ask: '', note: '' };
  if (offered === mine) return { join: mine };
  if (mine) {
    return {
      ask: mine,
      note: `This link names “${offered}”, but this browser chats as “${mine}”. Join as yourself, or change the name.`,
    };
  }
  return {
    ask: offered,
    note: `This link suggests the name “${offered}”. Links never decide who you are: check the name, then join.`,
  };
}
