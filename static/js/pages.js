// One page of a room's history from the server (GET
// /api/rooms/{room}/messages?before=SEQ&limit=N, protocol.md "Scrollback"),
// for scrollback (history.js) and for bringing the messages on screen up to
// date after a resume (resync.js).
//
// A read that has no whole answer within HISTORY_DEADLINE_MS is given up
// (it throws, as a refused one does): a request that hangs must not hold
// the one load the page allows at a time for ever.

import { HISTORY_DEADLINE_MS } from './config.js';
import { state } from './state.js';
import { tokenFor } from './token.js';

/** Messages per request: the most the server gives (src/http/history.rs MAX_LIMIT). */
export const PAGE_SIZE = 100;

/**
 * The newest `limit` messages below `before`, as the server answers:
 * `{ messages, has_more }` (404, a room without messages: an empty page).
 * `signal` cancels it; the deadline covers the answer's body too.
 */
export async function fetchPage({ before, limit = PAGE_SIZE, signal }) {
  const room = state.roomTitle || state.room;
  const url = `/api/rooms/${encodeURIComponent(room)}/messages?before=${before}&limit=${limit}`;
  // In token mode history is read with the same invitation the socket uses.
  const token = tokenFor(state.user, room);
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const stop = new AbortController();
  const cancel = () => stop.abort();
  if (signal?.aborted) cancel();
  signal?.addEventListener('abort', cancel);
  const timer = setTimeout(cancel, HISTORY_DEADLINE_MS);
  try {
    const res = await fetch(url, { cache: 'no-store', signal: stop.signal, headers });
    if (res.status === 404) return { messages: [], has_more: false };
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return await res.json();
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', cancel);
  }
}
