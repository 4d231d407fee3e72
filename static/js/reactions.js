// A message's reactions on screen, kept up to date from the server's events.
// Small reactions arrive whole; once a message's reactions are large
// (protocol.md "Reactions on the wire") events carry a few names per emoji
// and `reaction_counts`, a `reaction_update` only the change, and the whole
// list is fetched with a `reactions` request when someone looks at it.
//
// Is a reaction mine? The names say so while they are whole, or when mine is
// among the sample. Otherwise the page goes by what this browser saw its
// person do (store.js keeps it across reloads) and marks the button unsure:
// pressing it asks for exactly what it shows (`add` when not pressed,
// `remove` when pressed, never a `toggle` that could undo a reaction the
// sample hid) and fetches the whole list, which settles it.
//
// Whole lists asked for and not answered are forgotten when refused or when
// the connection drops, so looking again asks again. They never overlap
// with resync.js's checks, which share the request and its refusals.

import { h } from './dom.js';
import { send } from './connection.js';
import { checking } from './resync.js';
import { state } from './state.js';
import { ownReactions, rememberOwnReactions } from './store.js';

/** Messages whose whole list was asked for and has not come yet, oldest first. */
const asked = new Set();
/** Who waits until no whole list is out (resync.js, before its checks). */
let settledWaiters = [];
/** True while focus is put back after a rebuild: that is not a new look. */
let refocusing = false;

/** How many people reacted with `emoji` on message data `m`. */
const countOf = (m, emoji, users) => m.reaction_counts?.[emoji] ?? users.length;

/** Draws message data `m`'s reactions into its element. */
export function renderReactions(li, m) {
  const box = li.querySelector('.msg-reactions');
  const buttons = [];
  for (const [emoji, users] of Object.entries(m.reactions || {})) {
    if (!Array.isArray(users)) continue;
    const count = countOf(m, emoji, users);
    if (count <= 0) continue;
    const more = count - users.length;
    const sure = users.includes(state.user) || more <= 0;
    const mine = sure ? users.includes(state.user) : ownReactions(state.user, li.dataset.id).has(emoji);
    const who = more > 0 ? `${users.join(', ')} and ${more} more` : users.join(', ');
    const button = h('button', {
      cls: 'reaction', testid: 'reaction',
      attrs: {
        type: 'button', 'data-action': 'toggle-reaction', 'data-emoji': emoji,
        'aria-pressed': String(mine), 'data-sure': String(sure), 'data-users': who, title: who,
        'aria-label': `${emoji} ${count}: ${who}. ${mine ? 'Remove your reaction' : `React with ${emoji}`}`,
      },
    }, [h('span', { cls: 'reaction-emoji', text: emoji }), h('span', { cls: 'reaction-count', testid: 'reaction-count', text: String(count) })]);
    // Only some names are here: looking at the button fetches them all.
    if (more > 0) {
      const want = () => askWhole(li.dataset.id);
      button.addEventListener('pointerenter', want);
      button.addEventListener('focus', () => { if (!refocusing) want(); });
    }
    buttons.push(button);
  }
  // Rebuilding drops the focused button: a keyboard user who just toggled
  // one stays on that emoji, or on ☺+ once it is gone.
  const focused = box.contains(document.activeElement) ? document.activeElement.dataset.emoji : undefined;
  box.replaceChildren(...buttons);
  box.hidden = buttons.length === 0;
  if (focused === undefined) return;
  const same = buttons.find((b) => b.dataset.emoji === focused);
  refocusing = true;
  (same || li.querySelector('[data-action="react"]'))?.focus({ preventScroll: true });
  if (!li.contains(document.activeElement)) li.focus({ preventScroll: true }); // ☺+ hidden (touch screens)
  refocusing = false;
}

/** Fetches message `id`'s whole list, unless it is on its way (or a check is). */
export function askWhole(id) {
  if (!id || asked.has(id) || checking()) return;
  if (send({ type: 'reactions', message_id: id })) asked.add(id);
}

/** Resolves once no whole list is out. */
export function wholeSettled() {
  return asked.size ? new Promise((resolve) => settledWaiters.push(resolve)) : Promise.resolve();
}

function forget(id) {
  asked.delete(id);
  if (asked.size) return;
  const waiters = settledWaiters;
  settledWaiters = [];
  for (const resolve of waiters) resolve();
}

/**
 * An `error` refusing a `reactions` request, if one of ours is out: answers
 * come in order, so it is the oldest (a rate limit's names it). Forgotten,
 * and no toast: nobody asked for it in words. True when it was ours.
 */
export function wholeRefused(ev) {
  if (!asked.size) return false;
  const [oldest] = asked;
  forget(typeof ev.message_id === 'string' && asked.has(ev.message_id) ? ev.message_id : oldest);
  return true;
}

/** The connection dropped: what was asked will not be answered. */
export function wholeDropped() {
  for (const id of [...asked]) forget(id);
}

/** Keeps what this browser knows of its person's reactions on message `id`. */
function rememberOwn(id, change) {
  const own = ownReactions(state.user, id);
  change(own);
  rememberOwnReactions(state.user, id, own);
}

/** A `reaction_update`: the whole reactions while small, else the change. */
export function applyReactionUpdate(ev) {
  if (ev.user === state.user && typeof ev.message_id === 'string' && typeof ev.emoji === 'string') {
    rememberOwn(ev.message_id, (own) => (ev.action === 'add' ? own.add(ev.emoji) : own.delete(ev.emoji)));
  }
  const entry = state.messages.get(ev.message_id);
  if (!entry) return;
  const m = entry.data;
  if (ev.reactions && typeof ev.reactions === 'object') {
    m.reactions = ev.reactions;
    delete m.reaction_counts;
  } else {
    const reactions = { ...(m.reactions || {}) };
    const counts = { ...(m.reaction_counts || {}) };
    const users = (reactions[ev.emoji] || []).filter((u) => u !== ev.user);
    if (ev.action === 'add') users.push(ev.user);
    const count = typeof ev.count === 'number' ? ev.count : users.length;
    if (count > 0) {
      reactions[ev.emoji] = users;
      counts[ev.emoji] = count;
    } else {
      delete reactions[ev.emoji];
      delete counts[ev.emoji];
    }
    m.reactions = reactions;
    m.reaction_counts = counts;
  }
  renderReactions(entry.el, m);
}

/** The answer to a `reactions` request: every name. */
export function applyWholeReactions(ev) {
  forget(ev.message_id);
  if (!ev.reactions || typeof ev.reactions !== 'object') return;
  rememberOwn(ev.message_id, (own) => {
    own.clear();
    for (const [emoji, users] of Object.entries(ev.reactions)) if (Array.isArray(users) && users.includes(state.user)) own.add(emoji);
  });
  const entry = state.messages.get(ev.message_id);
  if (!entry) return;
  entry.data.reactions = ev.reactions;
  delete entry.data.reaction_counts;
  renderReactions(entry.el, entry.data);
}
