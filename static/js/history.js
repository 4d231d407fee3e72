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
// first one the welcome brought; a trimmed gap stands for messages the
// page let go of to stay small (see MAX_SHOWN). Loading a hole asks for the
// newest page below its upper end and puts it right under the edge, so a
// hole shrinks upwards, one request at a time in the whole page; but a gap
// whose edge is in the lower half of the view when it loads (the reader is
// above it, reading down) is filled from its lower end, the page that
// follows what they read going in right above the edge (when that page
// brings nothing, one from the upper end follows, never a run of them).
//
// What the reader looks at stays put: when they are below the edge, the
// element just under it is measured before and after the insert and the
// difference is scrolled away (measuring also covers browsers whose own
// scroll anchoring already moved it, and those without any); above the
// edge, nothing they see moves.
//
// Old messages are not news: they are built outside the live path (only
// live ones reach the announcer in attention.js) and the list itself is
// not a live region. One polite status line says what a load did.
//
// A page is read from the store at some moment while it is on its way; a
// change to one of its messages heard meanwhile (`message_updated`,
// `message_deleted`, `reaction_update`: live events, dropped for messages
// not on the page) may be newer than what it brings. So changes to messages
// not on the page are kept while a page is out and applied, in order, to
// the messages it brings (applying one the page already shows changes
// nothing: each says what its message, or its emoji, is now). At most
// MAX_HEARD of them.
//
// Bounds: a request asks for at most PAGE_SIZE messages (the server's
// limit). Nothing loads by itself but a page that does not fill the screen;
// every further page needs the reader to go to a hole again. And a
// long-lived tab does not grow for ever, wherever the reader is and in a
// background tab too: see MAX_SHOWN.

import { $, els, h } from './dom.js';
import {
  buildMessage, confirmPendingFromHistory, deleteMessage, regroup, updateMessage,
} from './messages.js';
import { applyReactionUpdate } from './reactions.js';
import { followingBottom, scrollToBottom } from './scroll.js';
import { state } from './state.js';
import { PAGE_SIZE, fetchPage } from './pages.js';

/**
 * Messages kept on the page: a few thousand stay smooth on a phone. The
 * list is bounded however the reader reads, in a background tab too
 * (trim):
 * - following the newest, the oldest beyond MAX_SHOWN leave once PAGE_SIZE
 *   more have come, and the top hole reopens above the first one kept;
 * - scrolled up (reading back, or a tab left in the background mid-read,
 *   or a long read in a busy room), the list may grow to MAX_LIST. Past
 *   that, what the reader looks at is kept with AROUND messages on either
 *   side, and the newest up to MAX_SHOWN in all; those between go, a
 *   trimmed gap in their place ("Load these messages"), and those far
 *   above go to the top hole. Nothing in view moves; the focus stays, or,
 *   if its message went, goes to the first message in view.
 * Messages of a server's previous life (archived) cannot be loaded again:
 * they are bounded apart, at most MAX_SHOWN of them (the newest, or those
 * around what the reader looks at), and those beyond leave with no hole.
 * They lead the list (a reset puts the new numbering under them) and are
 * counted at the reset that makes them (`archived`), so the bounds above
 * count only messages that can be taken off, without walking the list.
 * Never taken off: the message being edited, and messages waiting to be
 * sent (always last).
 */
const MAX_SHOWN = 3000;
/** The most messages a reader who is not following the newest keeps before a trim. */
const MAX_LIST = MAX_SHOWN + 5 * PAGE_SIZE;
/** Messages kept on either side of what the reader looks at when the list is cut. */
const AROUND = 5 * PAGE_SIZE;
/** Gap marks one resume may leave (more would be noise; reloading the room shows all). */
const MAX_GAPS = 10;
/** The top hole loads when the reader is this close to the top. */
const NEAR_TOP_PX = 400;

/** Words per kind of hole: the note, the button, and the status line's. */
const TEXT = {
  top: {
    note: '', more: 'Load older messages', failed: 'Could not load older messages.', done: 'Beginning of the conversation',
    loading: 'Loading older messages…', loaded: 'older ',
  },
  missed: {
    note: 'Some messages were missed while you were disconnected.', more: 'Load missed messages',
    failed: 'Could not load the missed messages.', done: '', loading: 'Loading missed messages…', loaded: 'missed ',
  },
  trimmed: {
    note: 'Some messages here were taken off the page to keep it fast.', more: 'Load these messages',
    failed: 'Could not load these messages.', done: '', loading: 'Loading messages…', loaded: '',
  },
};
/** What a gap says once the server that knew its messages is gone (a reset): nothing to load. */
const GONE = 'Some messages here are no longer stored on the server.';

let top = null; // the top hole, or null before a welcome
let gaps = []; // holes in the middle, top to bottom
let busy = false; // a request is out (one at a time for the whole page)
let controller = null;
let generation = 0; // bumped on every reset: answers for an older list are dropped
let lastScrollTop = 0;
let trimQueued = false;
let archived = 0; // messages of a server's previous life on the page (see MAX_SHOWN)
/** Changes heard while a page is out, the oldest dropped past it: a busy room's second or two. */
const MAX_HEARD = 500;
let heard = null; // while a page is out: changes to messages not on the page, in order

const status = () => $('history-status');
function say(text) {
  const s = status();
  if (s) s.textContent = text;
}

/**
 * An edge: `kind` is 'top' or 'gap'; `lower` < the seqs it stands for <
 * `upper`; a gap is 'missed' (a reconnect) or 'trimmed' (see MAX_SHOWN).
 * States: more (a button), loading, failed (a retry button), done (top:
 * "Beginning of the conversation"; a gap: gone), gone (a gap whose server
 * restarted: a note, no button; no longer a hole).
 */
function makeHole(kind, lower, upper, why = 'missed') {
  const note = h('span', { cls: 'history-note', testid: 'history-note' });
  const button = h('button', {
    cls: 'btn btn-small history-load', testid: kind === 'top' ? 'load-older' : 'load-missed',
    attrs: { type: 'button', 'data-history': kind },
  });
  const text = kind === 'top' ? 'top' : why;
  const el = h('li', {
    cls: `history-edge history-edge--${kind}${text === 'trimmed' ? ' history-edge--trimmed' : ''}`,
    testid: kind === 'top' ? 'history-top' : 'history-gap',
  }, [note, button]);
  const hole = { kind, text, el, note, button, lower, upper, state: 'more' };
  el.hole = hole;
  setHoleState(hole, upper <= lower + 1 ? 'done' : 'more');
  return hole;
}

function setHoleState(hole, s) {
  hole.state = s;
  hole.el.dataset.state = s;
  const t = TEXT[hole.text];
  hole.note.textContent = s === 'failed' ? t.failed : s === 'done' ? t.done : s === 'gone' ? GONE : t.note;
  hole.note.hidden = !hole.note.textContent;
  hole.button.hidden = s === 'done' || s === 'gone';
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
  heard = null;
  top?.el.remove();
  for (const g of gaps) g.el.remove();
  top = null;
  gaps = [];
  archived = 0;
  say('');
}

const msgSeq = (el) => (el && el.dataset.seq ? Number(el.dataset.seq) : null);

/** A live change to a message; kept if it is not on the page and a page is on its way. */
export function heardWhileLoading(ev) {
  if (!heard || typeof ev.message_id !== 'string' || state.messages.has(ev.message_id)) return;
  heard.push(ev);
  if (heard.length > MAX_HEARD) heard.shift();
}

/** Applies the changes heard while the page was out to the messages it brought. */
function applyHeard(changes) {
  for (const ev of changes) {
    if (!state.messages.has(ev.message_id)) continue;
    if (ev.type === 'message_updated') updateMessage(ev);
    else if (ev.type === 'message_deleted') deleteMessage(ev);
    else if (ev.type === 'reaction_update') applyReactionUpdate(ev);
  }
}

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
    // be fetched for them, and a gap among them counts in the old numbering
    // (loading it would put messages of the new one in their place): each
    // stays as a note, and an answer still on its way is dropped. The new
    // numbering starts below them.
    for (const g of gaps) setHoleState(g, 'gone');
    gaps = [];
    resetHistory();
    // Counted once here: archived messages are only made by a reset (see trim).
    archived = els.list.querySelectorAll(':scope > li.msg--archived').length;
    addGap(0, firstSeq, elementOf(first));
    queueTrim();
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

/**
 * Fetches the page under `hole` and inserts it under the edge; `down`
 * (a gap only): the page just above its lower end, inserted above the edge.
 * `readingDown`: see insertPage.
 */
async function load(hole, { down = false, readingDown = false } = {}) {
  if (busy || !hole || !hole.el.isConnected || (hole.state !== 'more' && hole.state !== 'failed')) return;
  down = down && hole.kind === 'gap';
  busy = true;
  heard = [];
  const gen = generation;
  controller = new AbortController();
  setHoleState(hole, 'loading');
  say(TEXT[hole.text].loading);
  // The server pages downwards only; at most PAGE_SIZE seqs above the lower
  // end are all in one page.
  const before = down ? Math.min(hole.upper, hole.lower + PAGE_SIZE + 1) : hole.upper;
  let body;
  try {
    // A page that hangs is given up at its deadline (pages.js) and offered again.
    body = await fetchPage({ before, signal: controller.signal });
  } catch {
    if (gen !== generation) return; // reset meanwhile; resetHistory cleared `busy`
    busy = false;
    heard = null;
    // No loop: a failed hole waits for its retry button (or Home).
    setHoleState(hole, 'failed');
    say(TEXT[hole.text].failed);
    return;
  }
  if (gen !== generation) return;
  busy = false;
  controller = null;
  const changes = heard;
  heard = null;
  if (!hole.el.isConnected) return;
  // Going down, a page of seqs that are all gone (deleted, or dropped by the
  // store's retention) brings nothing, and so may the next hundred pages.
  // Rather than walk them, one page from the upper end (where the server
  // pages from) either closes the gap or brings the messages nearest below
  // it; then nothing more until the reader goes to the hole again.
  const brought = insertPage(hole, body, { down, before, readingDown });
  applyHeard(changes);
  if (brought === 'empty') load(hole, { readingDown: true });
  else if (!readingDown) queueCheck();
}

/**
 * Returns 'empty' when a page going down brought nothing and the gap stays.
 * `readingDown`: an upward page asked for a reader going down (after an
 * empty page): the keyboard focus goes to the oldest message it brought.
 */
function insertPage(hole, body, { down, before, readingDown }) {
  const raw = (Array.isArray(body?.messages) ? body.messages : [])
    .filter((m) => m && typeof m.message_id === 'string' && typeof m.seq === 'number')
    .sort((a, b) => a.seq - b.seq);
  const fresh = raw.filter((m) => m.seq > hole.lower && m.seq < hole.upper && !state.messages.has(m.message_id));
  const focusWasOnEdge = hole.el.contains(document.activeElement);

  // The element under the edge stays put for a reader below the edge; a
  // reader above it sees nothing move.
  const anchor = hole.el.nextElementSibling;
  const held = hole.kind === 'top' || !readerAbove(hole) ? anchor : null;
  const heldTop = held ? held.getBoundingClientRect().top : 0;
  // A message of ours still waiting (its echo was lost, and it may be
  // offered with "Send again") is this page's message when the page has
  // it: confirmed, it takes its place here (the rule the welcome uses).
  confirmPendingFromHistory(fresh);
  const left = [];
  const added = fresh.map((m) => {
    const entry = state.messages.get(m.message_id);
    if (entry?.fromHistory) {
      delete entry.fromHistory;
      if (entry.el.nextElementSibling) left.push(entry.el.nextElementSibling);
      return entry.el;
    }
    const li = buildMessage(m);
    state.messages.set(m.message_id, { data: m, el: li });
    return li;
  });
  if (down) hole.el.before(...added);
  else hole.el.after(...added);
  for (const li of added) regroup(li);
  for (const el of left) if (el.isConnected) regroup(el);
  if (anchor) regroup(anchor);

  let finished;
  if (down) {
    // Every seq below `before` in the hole came, or is gone.
    hole.lower = Math.max(hole.lower, before - 1);
    finished = hole.upper <= hole.lower + 1;
  } else {
    if (raw.length) hole.upper = Math.min(hole.upper, raw[0].seq);
    finished = !body?.has_more || raw.length === 0 || hole.upper <= hole.lower + 1 || raw[0].seq <= hole.lower;
  }
  if (finished && hole.kind === 'gap') {
    hole.el.remove();
    gaps = gaps.filter((g) => g !== hole);
    if (anchor) regroup(anchor);
  } else {
    setHoleState(hole, finished ? 'done' : 'more');
  }
  if (held) {
    els.list.scrollTop += held.getBoundingClientRect().top - heldTop;
    lastScrollTop = els.list.scrollTop; // not the reader scrolling
  }

  const n = added.length;
  if (down && !n && !finished) return 'empty';
  say(`${n ? `Loaded ${n} ${TEXT[hole.text].loaded}message${n === 1 ? '' : 's'}.` : ''}${finished && hole.kind === 'top' ? ' Beginning of the conversation.' : ''}`.trim());

  // Pressed from the keyboard: carry on from the message that arrived next
  // to where the reader was (the newest, going up; the oldest, going down);
  // the edge may be gone or out of view.
  if (focusWasOnEdge) {
    const below = anchor && anchor.matches('li.msg') ? anchor : null;
    const target = (down || readingDown ? added[0] : added.at(-1)) || below;
    if (target) {
      target.focus({ preventScroll: true });
      target.scrollIntoView({ block: 'nearest' });
    }
  }
  return '';
}

/** The edge of `hole` is in the lower half of the view (or below it): the reader is above it. */
function readerAbove(hole) {
  const view = els.list.getBoundingClientRect();
  const edge = hole.el.getBoundingClientRect();
  return edge.top + edge.bottom > view.top + view.bottom;
}

/** The reader is near the top of the list (or it does not fill the screen). */
const nearTop = () => els.list.scrollTop < NEAR_TOP_PX;

const edgeFocused = () => Boolean(document.activeElement?.closest?.('.history-edge'));

/** Loads what the reader's position asks for, if anything. */
function check({ up = true, down = false } = {}) {
  if (busy || !(up || down) || edgeFocused()) return;
  if (up && top && top.state === 'more' && nearTop()) { load(top); return; }
  // A gap loads once its edge is in view while the reader goes up or down
  // to it, from the side they are on.
  const view = els.list.getBoundingClientRect();
  for (const g of gaps) {
    if (g.state !== 'more') continue;
    const r = g.el.getBoundingClientRect();
    if (r.bottom > view.top && r.top < view.bottom) { load(g, { down: readerAbove(g) }); return; }
  }
}

/** Checks once layout has settled (after a welcome scrolled, after a page went in). */
function queueCheck() {
  requestAnimationFrame(() => check());
}

/** Indexes of the first and the last of `msgs` (in list order) that show in `view`. */
function inView(msgs, view) {
  const firstWhere = (test) => {
    let [lo, hi] = [0, msgs.length];
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (test(msgs[mid].getBoundingClientRect())) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
  const first = Math.min(firstWhere((r) => r.bottom > view.top), msgs.length - 1);
  return [first, Math.max(first, firstWhere((r) => r.top >= view.bottom) - 1)];
}

/**
 * Keeps the list within its bounds (MAX_SHOWN says which): each run of
 * messages not kept leaves the page in one go, with everything between its
 * neighbours (notices, the "New" line, edges of holes it swallows), and a
 * hole takes its place; archived messages past their own bound leave with
 * no hole (nothing could bring them back). Rare: only past a bound, and
 * then well below it.
 */
function trim() {
  trimQueued = false;
  const following = followingBottom();
  const most = following ? MAX_SHOWN + PAGE_SIZE : MAX_LIST;
  // Every element but a message is rare (notices, edges): fewer children
  // than the limit, archived ones aside, means nothing to do, without
  // walking the list.
  if (busy || (els.list.childElementCount - archived <= most && archived <= MAX_SHOWN)) return;
  const msgs = [...els.list.querySelectorAll(':scope > li.msg:not(.msg--pending)')];
  const n = msgs.length;
  // msgs[0..a) are of the server's previous life: archived ones lead the
  // list (a reset puts the new numbering under them).
  let a = n;
  while (a > 0 && !msgs[a - 1].classList.contains('msg--archived')) a -= 1;
  archived = a;
  const over = n - a > most;
  if (!over && a <= MAX_SHOWN) return;
  let place = null; // the first message in view: it stays where it is
  let placeTop = 0;
  let first = n - 1; // the first in view, when it is measured
  let last = n - 1;
  if (!following) {
    // One layout, in a background tab too: trims are rare, and where the
    // reader is can only be measured.
    const view = els.list.getBoundingClientRect();
    if (!view.height) return; // the room is not shown (the join form): nothing arrives
    [first, last] = inView(msgs, view);
    place = msgs[first];
    placeTop = place.getBoundingClientRect().top;
  }
  const kept = new Array(n).fill(true);
  if (over) {
    kept.fill(false, a);
    const keep = (from, to) => { for (let i = Math.max(a, from); i < Math.min(n, to); i += 1) kept[i] = true; };
    if (following) {
      keep(n - MAX_SHOWN, n);
    } else {
      keep(first - AROUND, last + 1 + AROUND);
      const around = kept.filter(Boolean).length - a;
      keep(n - Math.max(PAGE_SIZE, MAX_SHOWN - around), n);
    }
    const editing = state.editing && state.messages.get(state.editing)?.el;
    for (let i = a; i < n; i += 1) {
      const li = msgs[i];
      if (li === editing || li.classList.contains('msg--archived') || msgSeq(li) === null) kept[i] = true;
    }
  }
  // Archived ones kept: MAX_SHOWN in a row, around what the reader looks
  // at if that is among them, else the newest.
  let [from, to] = [0, a];
  if (a > MAX_SHOWN) {
    from = !following && first < a ? Math.min(Math.max(0, first - AROUND), a - MAX_SHOWN) : a - MAX_SHOWN;
    to = from + MAX_SHOWN;
  }

  const focus = document.activeElement;
  const focusInList = focus !== els.list && els.list.contains(focus);
  // The newest is always kept: every run has a kept message below it.
  for (let i = a, above = a ? msgs[a - 1] : null; over && i < n; i += 1) {
    if (kept[i]) { above = msgs[i]; continue; }
    let j = i;
    while (!kept[j]) j += 1;
    cut(above, msgs[j]);
    [above, i] = [msgs[j], j];
  }
  if (to < a) {
    // Under what the reader looks at: a note says messages were there.
    const note = makeHole('gap', 0, 0, 'trimmed');
    setHoleState(note, 'gone');
    msgs[to].before(note.el);
    removeRun(msgs[to], msgs[a - 1]);
  }
  if (from > 0) {
    removeRun(els.list.firstElementChild, msgs[from].previousElementSibling);
    regroup(msgs[from]);
  }
  archived = to - from;
  // Focus left in what went (the reader moved away with a mouse) would fall
  // to the page's start; it goes where the reader is instead.
  if (focusInList && !focus.isConnected) {
    (place || [...els.list.querySelectorAll(':scope > li.msg')].at(-1))?.focus({ preventScroll: true });
  }
  if (following) {
    scrollToBottom();
  } else {
    els.list.scrollTop += place.getBoundingClientRect().top - placeTop;
    lastScrollTop = els.list.scrollTop; // not the reader scrolling
  }
}

/** Takes `from`, `to` and everything between them off the page, with no hole for them. */
function removeRun(from, to) {
  for (let el = from; el;) {
    const next = el === to ? null : el.nextElementSibling;
    if (el.dataset.id) state.messages.delete(el.dataset.id);
    el.remove();
    el = next;
  }
  if (top && !top.el.isConnected) top = null;
  gaps = gaps.filter((g) => g.el.isConnected);
}

/**
 * Takes everything between message `above` (null: the top of the list) and
 * message `below` off the page; a trimmed gap (or the top hole) stands for
 * it. Messages of a server's previous life (archived) end the numbering
 * above: the gap under them starts at 0, as the reset's own does; and they
 * never bound a hole from below (their seqs are the old numbering's).
 */
function cut(above, below) {
  if (below.classList.contains('msg--archived')) return;
  const upper = msgSeq(below);
  const lower = !above ? 0 : above.classList.contains('msg--archived') ? 0 : msgSeq(above);
  // Out of order (never from this server): no hole could bring them back.
  if (upper === null || lower === null || upper <= lower + 1) return;
  const first = above ? above.nextElementSibling : top ? top.el.nextElementSibling : els.list.firstElementChild;
  for (let el = first; el && el !== below;) {
    const next = el.nextElementSibling;
    if (el.dataset.id) state.messages.delete(el.dataset.id);
    el.remove();
    el = next;
  }
  gaps = gaps.filter((g) => g.el.isConnected);
  if (above) {
    const hole = makeHole('gap', lower, upper, 'trimmed');
    below.before(hole.el);
    gaps.push(hole);
  } else {
    if (!top) {
      top = makeHole('top', 0, upper);
      els.list.prepend(top.el);
    }
    top.upper = upper;
    setHoleState(top, upper <= 1 ? 'done' : 'more');
  }
  regroup(below);
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
    if (hole) load(hole, { down: readerAbove(hole) });
  });
  els.list.addEventListener('scroll', () => {
    const y = els.list.scrollTop;
    const [up, down] = [y < lastScrollTop, y > lastScrollTop];
    lastScrollTop = y;
    check({ up, down });
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
