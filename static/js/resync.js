// After a resume: the messages already on screen brought up to date.
//
// A resume (`?after=`) replays only what was posted after `after`: edits,
// reactions and deletes made meanwhile to messages the page already had
// never come (protocol.md "Resuming"), the page's own among them when their
// answers were lost in the drop. So once a resume is welcomed, the newest
// of those messages are read again through scrollback (pages.js), newest
// first, and whatever differs is applied as the live events would apply it.
//
// Bounds: at most MAX_PAGES requests, one at a time, each starting at the
// newest message on screen not read yet (a hole on screen costs nothing).
// Edits, reactions and deletes apply only to a room's newest messages (its
// memory, 500 by default), which five pages of 100 cover.
//
// When a missing message counts as deleted: a page is the store's view,
// and with Redis and PostgreSQL the database may not have another
// instance's latest post yet (protocol.md "Several instances"). So a
// message on screen that a page leaves out is only a candidate, and only
// if the page covers its seq (an older message in the page, none newer
// than `before`: a page says nothing about seqs below its oldest message,
// which a room kept in memory may simply have let go of). A candidate is
// shown deleted once the room confirms it: a `reactions` request for it is
// answered `unknown_message`. At most MAX_CHECKS a resume, one at a time,
// and never while a whole list reactions.js asked for is out: both are
// `reactions` requests, and a refusal says only which kind it answers.
//
// A message a live event changed while a page was on its way keeps what
// the event said (the page may be older). An edit in a page older than
// the one on screen (a database a moment behind) is not applied.

import { send } from './connection.js';
import { els } from './dom.js';
import { deleteMessage, updateMessage } from './messages.js';
import { PAGE_SIZE, fetchPage } from './pages.js';
import { wholeSettled } from './reactions.js';
import { state } from './state.js';

const MAX_PAGES = 5;
const MAX_CHECKS = 10;

let run = 0; // bumped by every resume: an older run stops at its next step
let active = 0; // the run under way (its number), 0 when none: only then are ids recorded
const touched = new Set(); // ids a live event changed during the run under way
let waiting = null; // the `reactions` check out: { id, resolve }

/** A live event changed message `id`: a page on its way must not undo it. */
export function touchedLive(id) {
  if (active) touched.add(id);
}

/** How many ids are recorded now (for tests: nothing is held between runs). */
export const touchedCount = () => touched.size;

/**
 * The answer to a check, if it is one: a `reactions` event for the message
 * checked (it exists), or an `error` answering a `reactions` request
 * (`unknown_message`: it is gone). True when it was ours, and the error
 * needs no toast.
 */
export function checkAnswered(ev) {
  if (!waiting) return false;
  if (ev.type === 'reactions' && ev.message_id !== waiting.id) return false;
  if (ev.type === 'error' && ev.ref !== 'reactions') return false;
  const { resolve } = waiting;
  waiting = null;
  resolve(ev.type === 'error' && ev.code === 'unknown_message' ? 'gone' : 'kept');
  return true;
}

/** A check is out: reactions.js asks for no whole list meanwhile. */
export function checking() {
  return waiting !== null;
}

/** The connection dropped: a check out will get no answer. */
export function resyncDropped() {
  run += 1;
  checkAnswered({ type: 'error', ref: 'reactions', code: 'dropped' });
}

/** Does the room still know message `id`? 'gone', 'kept', or 'unknown' (no answer). */
async function ask(id) {
  await wholeSettled();
  return new Promise((resolve) => {
    waiting = { id, resolve };
    if (!send({ type: 'reactions', message_id: id })) checkAnswered({ type: 'error', ref: 'reactions', code: 'unsent' });
  });
}

/** Message data fields a page may bring newer. */
const shape = (m) => JSON.stringify([m.content || '', m.edited_at || '', m.reactions || {}, m.reaction_counts || {}, m.attachment || null]);
const editTime = (m) => (m.edited_at ? Date.parse(m.edited_at) || 0 : 0);

/**
 * Called by the `welcome` handler of a resume (not a reset), once its
 * history is on the page: messages on screen up to `after` are read again.
 */
export async function resyncAfterResume(after) {
  run += 1;
  const mine = run;
  active = mine;
  touched.clear();
  try {
    await reread(mine, after);
  } finally {
    // Over (or overtaken by a newer run, which keeps its own record).
    if (active === mine) {
      active = 0;
      touched.clear();
    }
  }
}

/** The body of run `mine`: see resyncAfterResume. */
async function reread(mine, after) {
  // The same connection (a room switch makes another): else this run is over.
  const { ws } = state;
  const live = () => run === mine && state.ws === ws && state.connState === 'connected';
  // Newest first: confirmed messages on screen the resume did not bring.
  const shown = [...els.list.querySelectorAll(':scope > li.msg[data-seq][data-id]:not(.msg--archived)')]
    .map((el) => ({ seq: Number(el.dataset.seq), id: el.dataset.id }))
    .filter((m) => m.seq <= after && state.messages.has(m.id))
    .sort((a, b) => b.seq - a.seq);
  const candidates = [];
  for (let i = 0, pages = 0; i < shown.length && pages < MAX_PAGES; pages += 1) {
    const before = shown[i].seq + 1;
    let body;
    try {
      body = await fetchPage({ before, limit: PAGE_SIZE });
    } catch {
      break; // no loop: the next resume reads again
    }
    if (!live()) return;
    const page = (Array.isArray(body?.messages) ? body.messages : [])
      .filter((m) => m && typeof m.message_id === 'string' && typeof m.seq === 'number');
    if (!page.length) break; // nothing older is kept: this page covers no seq
    const byId = new Map(page.map((m) => [m.message_id, m]));
    const oldest = Math.min(...page.map((m) => m.seq));
    for (; i < shown.length && shown[i].seq >= oldest; i += 1) {
      const { id, seq } = shown[i];
      const fresh = byId.get(id);
      if (touched.has(id) || !state.messages.has(id)) continue;
      if (!fresh) {
        if (seq > oldest) candidates.push(id);
        continue;
      }
      const entry = state.messages.get(id);
      if (shape(fresh) === shape(entry.data)) continue;
      // A database a moment behind may hold an edit older than the one shown.
      const older = editTime(fresh) < editTime(entry.data);
      updateMessage(older ? { ...fresh, content: entry.data.content, edited_at: entry.data.edited_at } : fresh);
    }
  }
  for (const id of candidates.slice(0, MAX_CHECKS)) {
    if (!live()) return;
    const answer = await ask(id);
    if (!live()) return;
    if (answer === 'gone' && !touched.has(id)) deleteMessage({ message_id: id });
  }
}
