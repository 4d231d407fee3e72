// Who this browser is in the chat: the name the person chose, kept here.
//
// Names are never handed out by links. Invite links carry the room only;
// an address with `user=` is followed only when that is already this
// browser's name, otherwise the page asks. Sign-in (signed tokens, claimed
// names) belongs in this module too: it decides the name a connection uses.

import { load, save } from './store.js';

const KEY_USER = 'roomcast.user';

export const savedName = () => (load(KEY_USER) || '').trim();
export const saveName = (name) => save(KEY_USER, name.trim());

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
