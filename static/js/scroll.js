// Where the reader is: following the newest message, or reading further up.
// New messages never yank a reader who scrolled up; a pill counts them, and
// a "New" line marks where the messages that arrived while away (or while
// disconnected) begin.

import { els, h, isTouch } from './dom.js';

let following = true; // at the bottom as of the last scroll
let unseen = 0; // messages that arrived below the reader's view
let awayRun = false; // the "New" line marks the start of the current run
let divider = null;
let bottomOwed = false; // hidden: scroll to the bottom once the tab shows

/** Closer than this to the bottom counts as at the bottom. */
const NEAR_BOTTOM_PX = 60;

/**
 * In a hidden tab nobody scrolls, so where the reader was as of the last
 * scroll stands, and nothing measures or scrolls the list: either would
 * lay out thousands of messages for each one a busy room adds in the
 * background. The scroll to the bottom is done once the tab shows again.
 */
export function isNearBottom() {
  if (document.hidden) return following;
  const l = els.list;
  return l.scrollHeight - l.scrollTop - l.clientHeight < NEAR_BOTTOM_PX;
}

export const followingBottom = () => following;

export function scrollToBottom() {
  bottomOwed = document.hidden;
  if (!bottomOwed) els.list.scrollTop = els.list.scrollHeight;
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
  if (document.hidden || !stick) markNew(li);
  if (stick) {
    scrollToBottom();
    return;
  }
  count(1);
}

/** The "New" line goes above `li`, unless it already marks where the current unread run began. */
export function markNew(li) {
  if (awayRun) return;
  awayRun = true;
  divider ??= h('li', { cls: 'new-divider', testid: 'new-divider' }, [h('span', { text: 'New' })]);
  li.before(divider);
}

function count(n) {
  unseen += n;
  els.newPill.textContent = `${unseen} new message${unseen === 1 ? '' : 's'} ↓`;
  els.newPill.hidden = false;
}

/**
 * Others' messages a resume brought (`lis`, oldest first, marked with
 * markNew), posted while the connection was down: nobody saw them arrive,
 * not even a reader at the bottom. That reader is shown where they begin,
 * the "New" line near the top of the view with a little of what was read
 * above it, not where they end; the pill counts them unless they all fit.
 * A hidden tab follows the newest, as with live messages; a reader further
 * up stays where they are.
 */
export function missedArrived(lis, stick) {
  if (!lis.length) return;
  if (stick && !document.hidden) {
    const l = els.list;
    const start = divider?.isConnected ? divider : lis[0];
    const y = l.scrollTop + start.getBoundingClientRect().top - l.getBoundingClientRect().top - l.clientHeight / 4;
    if (y >= l.scrollHeight - l.clientHeight - NEAR_BOTTOM_PX) {
      scrollToBottom(); // they all fit in the view
      return;
    }
    l.scrollTop = Math.max(l.scrollTop, y);
    following = false;
  } else if (stick) {
    scrollToBottom();
    return;
  }
  count(lis.length);
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
  bottomOwed = false;
  els.newPill.hidden = true;
}

export function initScroll() {
  els.list.addEventListener('scroll', () => {
    following = isNearBottom();
    if (following) seen();
  }, { passive: true });
  els.newPill.addEventListener('click', () => {
    scrollToBottom();
    // The pill goes: the focus goes to the message box, but on a touch
    // screen to the newest message (focusing the box opens the keyboard).
    if (!isTouch()) { els.input.focus(); return; }
    let last = els.list.lastElementChild;
    while (last && !last.matches('li.msg')) last = last.previousElementSibling;
    last?.focus({ preventScroll: true });
  });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) return;
    if (bottomOwed && following) scrollToBottom();
    bottomOwed = false;
    if (following) awayRun = false;
  });
}
