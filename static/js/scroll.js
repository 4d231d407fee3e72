// Where the reader is: following the newest message, or reading further up.
// New messages never yank a reader who scrolled up; a pill counts them, and
// a "New" line marks where the messages that arrived while away begin.

import { els, h } from './dom.js';

let following = true; // at the bottom as of the last scroll
let unseen = 0; // messages that arrived below the reader's view
let awayRun = false; // the "New" line marks the start of the current run
let divider = null;

export function isNearBottom() {
  const l = els.list;
  return l.scrollHeight - l.scrollTop - l.clientHeight < 60;
}

export const followingBottom = () => following;

export function scrollToBottom() {
  els.list.scrollTop = els.list.scrollHeight;
  following = true;
  seen();
}

/** The reader has seen everything: the pill goes; the "New" line stays where it is. */
function seen() {
  unseen = 0;
  els.newPill.hidden = true;
  if (!document.hidden) awayRun = false;
}

/**
 * Someone else's message was added; `stick` says the reader was at the
 * bottom before. Away (tab hidden, or scrolled up): the first such message
 * gets the "New" line above it.
 */
export function arrived(li, stick) {
  if ((document.hidden || !stick) && !awayRun) {
    awayRun = true;
    divider ??= h('li', { cls: 'new-divider', testid: 'new-divider' }, [h('span', { text: 'New' })]);
    li.before(divider);
  }
  if (stick) {
    scrollToBottom();
    return;
  }
  unseen += 1;
  els.newPill.textContent = `${unseen} new message${unseen === 1 ? '' : 's'} ↓`;
  els.newPill.hidden = false;
}

/** Sending, or entering a room, ends the "New" section. */
export function clearNewDivider() {
  divider?.remove();
  divider = null;
  awayRun = false;
}

export function resetScroll() {
  clearNewDivider();
  unseen = 0;
  following = true;
  els.newPill.hidden = true;
}

export function initScroll() {
  els.list.addEventListener('scroll', () => {
    following = isNearBottom();
    if (following) seen();
  }, { passive: true });
  els.newPill.addEventListener('click', () => { scrollToBottom(); els.input.focus(); });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && following) awayRun = false;
  });
}
