// Scrollback: messages older than the page shows, read a page at a time from
// the server's store (GET /api/rooms/{room}/messages?before=SEQ&limit=N)
// when the reader goes looking for them. A reconnect that missed messages
// (`welcome.gap`) leaves a hole in the middle, filled the same way.
//
// A hole is a run of seqs the page does not show, marked by an edge: an
// <li> in the list that is not a message, holding a real button (keyboard
// and screen-reader users need something to press; scrolling is not enough).
// The top hole runs from the start of the conversation to the oldest
// message shown; a gap runs from the last seq seen before a reconnect to the
// first one the welcome brought. Loading a hole asks for the newest page
// below its upper end and puts it right under the edge, so every hole
// shrinks upwards, one request at a time in the whole page.
//
// What the reader looks at stays put: the element just under the edge is
// measured before and after the insert and the difference is scrolled away
// (measuring also covers browsers whose own scroll anchoring already moved
// it, and those without any).
//
// Old messages are not news: they are built outside the live path (only
// live ones reach the announcer in attention.js) and the list itself is
// not a live region. One polite status line says what a load did.
//
// Bounds: a request asks for at most PAGE_SIZE messages (the server's
// limit). Nothing loads by itself but a page that does not fill the screen;
// every further page needs the reader to go up again. And a long-lived tab
// does not grow for ever: while the reader follows the newest messages,
// the list keeps at most MAX_SHOWN of them, in a background tab too; the
// oldest leave the page and the top hole reopens to fetch them again if
// wanted.

import { $, els, h } from './dom.js';
import { buildMessage, regroup } from './messages.js';
import { followingBottom, scrollToBottom } from './scroll.js';
import { state } from './state.js';
import { tokenFor } from './token.js';

/** Messages per request: the most the server gives (src/http/history.rs MAX_LIMIT). */
const PAGE_SIZE = 100;
/**
 * Messages kept on the page while the reader is at the bottom: a few
 * thousand stay smooth on a phone. A reader scrolling back further is
 * not cut short; the list is trimmed back once they return to the bottom.
 */
const MAX_SHOWN = 3000;
/** Gap marks one resume may leave (more would be noise; reloading the room shows all). */
const MAX_GAPS = 10;
/** The top hole loads when the reader is this close to the top. */
const NEAR_TOP_PX = 400;

const TEXT = {
  top: { more: 'Load older messages', failed: 'Could not load older messages.', done: 'Beginning of the conversation' },
  gap: { more: 'Load missed messages', failed: 'Could not load the missed messages.', done: '' },
};

let top = null; // the top hole, or null before a welcome
let gaps = []; // holes in the middle, top to bottom
let busy = false; // a request is out (one at a time for the whole page)
let controller = null;
let generation = 0; // bumped on every reset: answers for an older list are dropped
let lastScrollTop = 0;
let trimQueued = false;

const status = () => $('history-status');
function say(text) {
  const s = status();
  if (s) s.textContent = text;
}

/**
 * An edge: `kind` is 'top' or 'gap'; `lower` < the seqs it stands for <
 * `upper`. States: more (a button), loading, failed (a retry button),
 * done (top: "Beginning of the conversation"; a gap: gone).
 */
function makeHole(kind, lower, upper) {
  const note = h('span', { cls: 'history-note', testid: 'history-note' });
  const button = h('button', {
    cls: 'btn btn-small history-load', testid: kind === 'top' ? 'load-older' : 'load-missed',
    attrs: { type: 'button', 'data-history': kind },
  });
  const el = h('li', { cls: `history-edge history-edge--${kind}`, testid: kind === 'top' ? 'history-top' : 'history-gap' }, [note, button]);
  const hole = { kind, el, note, button, lower, upper, state: 'more' };
  el.hole = hole;
  setHoleState(hole, upper <= lower + 1 ? 'done' : 'more');
  return hole;
}

function setHoleState(hole, s) {
  hole.state = s;
  hole.el.dataset.state = s;
  const t = TEXT[hole.kind];
  if (s === 'failed') hole.note.textContent = t.failed;
  else if (hole.kind === 'gap') hole.note.textContent = 'Some messages were missed while you were disconnected.';
  else hole.note.textContent = s === 'done' ? t.done : '';
  hole.note.hidden = !hole.note.textContent;
  hole.button.hidden = s === 'done';
  // Not `disabled`: that would throw the focus out of a button being pressed.
  hole.button.setAttribute('aria-disabled', String(s === 'loading'));
  hole.button.textContent = s === 'loading' ? 'Loading…' : s === 'failed' ? 'Try again' : t.more;
}

/** Forgets every hole and ignores answers still on their way (room switch, fresh welcome). */
export function resetHistory() {
  generation += 1;
  controller?.abort();
  controller = null;
  busy = false;
  top?.el.remove();
  for (const g of gaps) g.el.remove();
  top = null;
  gaps = [];
  say('');
}

const msgSeq = (el) => (el && el.dataset.seq ? Number(el.dataset.seq) : null);

/** The element that shows the message of `m`, if it is on the page. */
const elementOf = (m) => (m && state.messages.get(m.message_id)?.el) || null;

/**
 * Called by the `welcome` handler once its history is in the list, before
 * it scrolls. `after` is the seq the client asked to resume from (0 when
 * entering), `reset` says the server forgot what the page shows.
 */
export function historyWelcome({ resuming, after, reset, gap, history, serverLast }) {
  const first = history[0];
  const firstSeq = typeof first?.seq === 'number' ? first.seq : (serverLast ?? 0) + 1;
  if (!resuming) {
    resetHistory();
    // An empty room says "This is the start" by itself; no edge then.
    if (history.length === 0) return;
    top = makeHole('top', 0, firstSeq);
    els.list.prepend(top.el);
  } else if (reset) {
    // The messages above are the server's previous life: nothing older can
    // be fetched for them. The new numbering starts below them.
    if (top) { top.el.remove(); top = null; }
    addGap(0, firstSeq, elementOf(first));
  } else if (gap) {
    // Missed before the first message brought, or inside: the welcome skips
    // a message too large for its budget. Seqs also skip where messages
    // were deleted; such a hole finds nothing and closes at its first load.
    if (firstSeq > after + 1) addGap(after, firstSeq, elementOf(first));
    for (let i = 1; i < history.length && gaps.length < MAX_GAPS; i += 1) {
      const [a, b] = [history[i - 1].seq, history[i].seq];
      if (typeof a === 'number' && typeof b === 'number' && b > a + 1) addGap(a, b, elementOf(history[i]));
    }
  }
  // A page that does not fill the screen asks for more; a gap in view fills.
  queueCheck();
}

function addGap(lower, upper, below) {
  const hole = makeHole('gap', lower, upper);
  if (hole.state === 'done') return;
  // Right above the message after the hole (pending messages stay last).
  els.list.insertBefore(hole.el, below && below.parentNode === els.list ? below : els.list.querySelector(':scope > .msg--pending'));
  gaps.push(hole);
}

/** Fetches the page under `hole` and inserts it under the edge. */
async function load(hole) {
  if (busy || !hole || !hole.el.isConnected || (hole.state !== 'more' && hole.state !== 'failed')) return;
  busy = true;
  const gen = generation;
  controller = new AbortController();
  setHoleState(hole, 'loading');
  say(hole.kind === 'top' ? 'Loading older messages…' : 'Loading missed messages…');
  const room = state.roomTitle || state.room;
  const url = `/api/rooms/${encodeURIComponent(room)}/messages?before=${hole.upper}&limit=${PAGE_SIZE}`;
  let body;
  try {
    // In token mode history is read with the same invitation the socket uses.
    const token = tokenFor(state.user);
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const res = await fetch(url, { cache: 'no-store', signal: controller.signal, headers });
    // 404: the room has no messages at all (any more): nothing is older.
    if (res.status === 404) body = { messages: [], has_more: false };
    else if (!res.ok) throw new Error(`HTTP ${res.status}`);
    else body = await res.json();
  } catch {
    if (gen !== generation) return; // reset meanwhile; resetHistory cleared `busy`
    busy = false;
    // No loop: a failed hole waits for its retry button (or Home).
    setHoleState(hole, 'failed');
    say(hole.kind === 'top' ? 'Could not load older messages.' : 'Could not load the missed messages.');
    return;
  }
  if (gen !== generation) return;
  busy = false;
  controller = null;
  if (!hole.el.isConnected) return;
  insertPage(hole, body);
  queueCheck();
}

function insertPage(hole, body) {
  const raw = (Array.isArray(body?.messages) ? body.messages : [])
    .filter((m) => m && typeof m.message_id === 'string' && typeof m.seq === 'number')
    .sort((a, b) => a.seq - b.seq);
  const fresh = raw.filter((m) => m.seq > hole.lower && m.seq < hole.upper && !state.messages.has(m.message_id));
  const focusWasOnEdge = hole.el.contains(document.activeElement);

  const anchor = hole.el.nextElementSibling;
  const anchorTop = anchor ? anchor.getBoundingClientRect().top : 0;
  const added = fresh.map((m) => {
    const li = buildMessage(m);
    state.messages.set(m.message_id, { data: m, el: li });
    return li;
  });
  hole.el.after(...added);
  for (const li of added) regroup(li);
  if (anchor) {
    regroup(anchor);
    els.list.scrollTop += anchor.getBoundingClientRect().top - anchorTop;
  }

  if (raw.length) hole.upper = Math.min(hole.upper, raw[0].seq);
  const finished = !body?.has_more || raw.length === 0 || hole.upper <= hole.lower + 1 || raw[0].seq <= hole.lower;
  if (finished && hole.kind === 'gap') {
    hole.el.remove();
    gaps = gaps.filter((g) => g !== hole);
    if (anchor) regroup(anchor);
  } else {
    setHoleState(hole, finished ? 'done' : 'more');
  }

  const n = added.length;
  const what = hole.kind === 'top' ? 'older' : 'missed';
  say(`${n ? `Loaded ${n} ${what} message${n === 1 ? '' : 's'}.` : ''}${finished && hole.kind === 'top' ? ' Beginning of the conversation.' : ''}`.trim());

  // Pressed from the keyboard: carry on from the newest message that arrived,
  // just above where the reader was; the edge may be gone or out of view.
  if (focusWasOnEdge) {
    const target = added.at(-1) || (anchor && anchor.matches('li.msg') ? anchor : null);
    if (target) {
      target.focus({ preventScroll: true });
      target.scrollIntoView({ block: 'nearest' });
    }
  }
}

/** The reader is near the top of the list (or it does not fill the screen). */
const nearTop = () => els.list.scrollTop < NEAR_TOP_PX;

const edgeFocused = () => Boolean(document.activeElement?.closest?.('.history-edge'));

/** Loads what the reader's position asks for, if anything. */
function check({ up = true } = {}) {
  if (busy || !up || edgeFocused()) return;
  if (top && top.state === 'more' && nearTop()) { load(top); return; }
  // A gap loads once its edge is in view while the reader goes up to it.
  const view = els.list.getBoundingClientRect();
  for (const g of gaps) {
    if (g.state !== 'more') continue;
    const r = g.el.getBoundingClientRect();
    if (r.bottom > view.top && r.top < view.bottom) { load(g); return; }
  }
}

/** Checks once layout has settled (after a welcome scrolled, after a page went in). */
function queueCheck() {
  requestAnimationFrame(() => check());
}

/**
 * While the reader follows the newest messages, the oldest beyond
 * MAX_SHOWN leave the page (in bulk, PAGE_SIZE past the limit, so this is
 * rare) and the top hole reopens above the first one kept.
 */
function trim() {
  trimQueued = false;
  // Every element but a message is rare (notices, edges): fewer children
  // than the limit means nothing to do, without walking the list.
  if (busy || !followingBottom() || state.editing || els.list.childElementCount <= MAX_SHOWN + PAGE_SIZE) return;
  const msgs = els.list.querySelectorAll(':scope > li.msg:not(.msg--pending)');
  if (msgs.length <= MAX_SHOWN + PAGE_SIZE) return;
  const keep = msgs[msgs.length - MAX_SHOWN];
  const seq = msgSeq(keep);
  // Archived messages (the server forgot them) could not come back.
  if (seq === null || keep.classList.contains('msg--archived')) return;
  // Focus left far above (the reader scrolled down with a mouse) would fall
  // to the page's start; it goes where the reader is instead.
  const f = document.activeElement;
  const focusGoes = f && els.list.contains(f) && Boolean(keep.compareDocumentPosition(f) & Node.DOCUMENT_POSITION_PRECEDING);
  for (let el = top ? top.el.nextElementSibling : els.list.firstElementChild; el && el !== keep;) {
    const next = el.nextElementSibling;
    if (el.dataset.id) state.messages.delete(el.dataset.id);
    if (el.hole) gaps = gaps.filter((g) => g !== el.hole);
    el.remove();
    el = next;
  }
  if (!top) {
    top = makeHole('top', 0, seq);
    els.list.prepend(top.el);
  }
  top.upper = seq;
  setHoleState(top, seq <= 1 ? 'done' : 'more');
  regroup(keep);
  if (focusGoes) [...els.list.querySelectorAll(':scope > li.msg')].at(-1)?.focus({ preventScroll: true });
  scrollToBottom();
}

/**
 * Once per frame; in a hidden tab, which runs no frames (a background tab
 * in a busy room would grow for ever), on a timer instead.
 */
function queueTrim() {
  if (trimQueued) return;
  trimQueued = true;
  if (document.hidden) setTimeout(trim, 0);
  else requestAnimationFrame(trim);
}

export function initHistory() {
  els.list.addEventListener('click', (e) => {
    const button = e.target.closest('button[data-history]');
    const hole = button?.closest('.history-edge')?.hole;
    if (hole) load(hole);
  });
  els.list.addEventListener('scroll', () => {
    const y = els.list.scrollTop;
    const up = y < lastScrollTop;
    lastScrollTop = y;
    check({ up });
    if (!up && followingBottom()) queueTrim();
  }, { passive: true });
  // Keyboard readers: Home, or ↑/PageUp on the first message, asks for more.
  els.list.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey || !top) return;
    const li = e.target;
    if (!(li instanceof HTMLElement) || !li.matches('#messages > li.msg')) return;
    const firstMsg = els.list.querySelector(':scope > li.msg');
    if (e.key === 'Home' || ((e.key === 'ArrowUp' || e.key === 'PageUp') && li === firstMsg)) load(top);
  });
  // Trimmed when something arrives, and when the reader comes back down.
  new MutationObserver(queueTrim).observe(els.list, { childList: true });
  // A frame asked for just before the tab went to the background waits
  // until it comes back: a timer does it now.
  document.addEventListener('visibilitychange', () => { if (document.hidden && trimQueued) setTimeout(trim, 0); });
}
