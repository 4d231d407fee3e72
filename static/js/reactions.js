// A message's reactions on screen, kept up to date from the server's events.
// Small reactions arrive whole; once a message's reactions are large
// (protocol.md "Reactions on the wire") events carry a few names per emoji
// and `reaction_counts`, a `reaction_update` only the change, and the whole
// list is fetched with a `reactions` request when someone looks at it.

import { h } from './dom.js';
import { send } from './connection.js';
import { state } from './state.js';

/** Messages whose whole list was asked for and has not come yet. */
const asked = new Set();
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
    const mine = users.includes(state.user);
    const more = count - users.length;
    const who = more > 0 ? `${users.join(', ')} and ${more} more` : users.join(', ');
    const button = h('button', {
      cls: 'reaction', testid: 'reaction',
      attrs: {
        type: 'button', 'data-action': 'toggle-reaction', 'data-emoji': emoji,
        'aria-pressed': String(mine), 'data-users': who, title: who,
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

function askWhole(id) {
  if (!id || asked.has(id)) return;
  if (send({ type: 'reactions', message_id: id })) asked.add(id);
}

/** A `reaction_update`: the whole reactions while small, else the change. */
export function applyReactionUpdate(ev) {
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
  asked.delete(ev.message_id);
  const entry = state.messages.get(ev.message_id);
  if (!entry || !ev.reactions || typeof ev.reactions !== 'object') return;
  entry.data.reactions = ev.reactions;
  delete entry.data.reaction_counts;
  renderReactions(entry.el, entry.data);
}
