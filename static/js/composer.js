// The message box: sending, messages waiting for their echo, messages
// written while offline (sent once reconnected, never twice), those kept
// aside while another room is open, drafts kept per room, and the typing
// signal.

import { config, TYPING_SEND_EVERY_MS } from './config.js';
import { els, enterSends, h, imeKey, touchScreen } from './dom.js';
import { randomId } from './format.js';
import { buildMessage, regroup } from './messages.js';
import { send } from './connection.js';
import { waitFor } from './pace.js';
import { clearNewDivider, scrollToBottom } from './scroll.js';
import { state } from './state.js';
import { loadDraft, roomKey, saveDraft } from './store.js';
import { toast } from './notices.js';
import { clearUploads, readyAttachments, uploadsBusy } from './uploads.js';

let lastTypingSent = 0;

const NOT_SENT = 'Not sent yet: it goes once reconnected.';
const WAITING = 'Waiting for the connection…';

/**
 * Messages not yet confirmed in rooms this page left, to be put back when
 * the same name enters the room again: `name + room key` -> { room,
 * messages }, the room left longest ago first. In this page only (a reload
 * asks first, see initComposer), and bounded: at most STASH_PER_ROOM
 * messages a room and STASH_ROOMS rooms; what does not fit is dropped with
 * a toast saying how many, and from which room.
 */
const stashed = new Map();
const STASH_PER_ROOM = 50;
const STASH_ROOMS = 20;
const stashKey = (user, room) => `${user}\n${roomKey(room)}`;

/** Shows one or more sentences under the composer ('' or [] clears it). */
export function composerError(lines) {
  const list = Array.isArray(lines) ? lines : [lines].filter(Boolean);
  els.composerError.replaceChildren(...list.map((t) => h('span', { cls: 'error-line', text: t })));
}

export function updateSendState() {
  const len = Array.from(els.input.value).length;
  const max = config.max_message_chars;
  els.charCount.textContent = len > max * 0.8 ? `${len} / ${max}` : '';
  els.charCount.classList.toggle('over', len > max);
  els.sendBtn.setAttribute('aria-disabled', String(uploadsBusy() || len > max));
}

export function autoGrow(area = els.input, max = 200) {
  area.style.height = 'auto';
  area.style.height = `${Math.min(area.scrollHeight + 2, max)}px`;
}

/** Puts this room's saved draft in the box (entering a room, or a reload). */
export function loadComposer() {
  els.input.value = loadDraft(state.room);
  autoGrow();
  updateSendState();
}

function submit() {
  composerError('');
  const content = els.input.value;
  if (uploadsBusy()) { composerError('Wait for the upload to finish, or remove it.'); return; }
  const files = readyAttachments();
  if (!content.trim() && !files.length) return;
  const len = Array.from(content).length;
  if (len > config.max_message_chars) {
    composerError(`Messages can be at most ${config.max_message_chars} characters; this one has ${len}.`);
    return;
  }
  // Each attachment is its own message; the text goes with the first.
  queue(content.trim() ? content : '', files[0] || null);
  for (const f of files.slice(1)) queue('', f);
  els.input.value = '';
  saveDraft(state.room, '');
  clearUploads();
  autoGrow();
  updateSendState();
  clearNewDivider();
  scrollToBottom();
  // `lastTypingSent` is deliberately not reset: a typing request before
  // every message would spend two of the server's rate budget per message.
}

/** Adds a pending message at the end of the log and sends it if connected. */
function queue(content, attachment) {
  const p = addPending({ clientId: randomId(), content, attachment, timestamp: new Date().toISOString() });
  // Typed now: it goes now, unless older ones still wait their turn.
  if (state.connState !== 'connected') setStatus(p, NOT_SENT);
  else if (outbox.length) post(p);
  else transmit(p);
}

/**
 * Messages to send, in order, as the server's rate allows (pace.js): after
 * a reconnect (or "Send again") they go out at the rate, not in one burst
 * past it; one typed meanwhile waits behind them. SPARE tokens stay for
 * what the person does meanwhile.
 */
const outbox = [];
const SPARE = 2;
let outboxTimer = 0;

function post(p) {
  if (!outbox.includes(p)) outbox.push(p);
  setStatus(p, 'Sending…');
  drain();
}

function drain() {
  clearTimeout(outboxTimer);
  while (outbox.length && state.connState === 'connected') {
    const wait = waitFor(SPARE);
    if (wait) { outboxTimer = setTimeout(drain, wait); return; }
    const p = outbox.shift();
    // Discarded, or confirmed from a history, while it waited its turn.
    if (state.pending.get(p.clientId) === p && !p.failed) transmit(p);
  }
}

/**
 * A pending message at the end of the log, as the current name. `since`:
 * the highest seq seen when it first went out, so a post of it has a
 * higher one (see confirmPendingFromHistory).
 */
function addPending({ clientId, content, attachment, timestamp, sent = false, since }) {
  const p = { clientId, content, attachment, timestamp, user: state.user, sent, since, failed: false, el: null };
  p.el = buildMessage({
    message_id: '', user: state.user, content, timestamp, reactions: {}, attachment,
  }, { pending: true });
  p.el.dataset.clientId = clientId;
  state.pending.set(clientId, p);
  els.list.append(p.el);
  regroup(p.el);
  return p;
}

function transmit(p) {
  const msg = { type: 'message', content: p.content, client_id: p.clientId };
  if (p.attachment) msg.attachment = { url: p.attachment.url };
  p.sent = send(msg);
  if (p.sent && p.since === undefined) p.since = state.lastSeq;
  p.failed = false;
  p.el.classList.remove('msg--failed');
  p.el.querySelector('.msg-failed-actions')?.remove();
  setStatus(p, p.sent ? 'Sending…' : NOT_SENT);
}

function setStatus(p, text) {
  p.el.querySelector('.msg-status').textContent = text;
}

/** The connection dropped: messages without an echo may or may not have arrived. */
export function connectionDropped() {
  // Those still waiting their turn were never sent: the next welcome sends them.
  clearTimeout(outboxTimer);
  outbox.length = 0;
  for (const p of state.pending.values()) {
    if (!p.failed) setStatus(p, p.sent ? WAITING : NOT_SENT);
  }
}

/**
 * Leaving the room (navigation.js): its messages not yet confirmed are put
 * aside with what they say, their attachment and client_id, whether they
 * went out and since which seq, and `state.pending` is emptied. Call it
 * before the session's room changes.
 */
export function stashPending() {
  const all = [...state.pending.values()];
  state.pending.clear();
  if (!all.length || !state.room) return;
  const room = state.roomTitle || state.room;
  const key = stashKey(all[0].user, state.room);
  const earlier = stashed.get(key)?.messages || [];
  const messages = [...earlier, ...all.map((p) => ({
    clientId: p.clientId, content: p.content, attachment: p.attachment, timestamp: p.timestamp,
    sent: p.sent, since: p.since, failed: p.failed ? p.el.querySelector('.msg-status').textContent : '',
  }))];
  // Kept in send order, so the oldest are the ones that stay.
  if (messages.length > STASH_PER_ROOM) {
    stashDropped(room, messages.length - STASH_PER_ROOM, `at most ${STASH_PER_ROOM} are kept per room`);
  }
  stashed.delete(key);
  stashed.set(key, { room, messages: messages.slice(0, STASH_PER_ROOM) });
  while (stashed.size > STASH_ROOMS) {
    const [oldest, { room: gone, messages: lost }] = stashed.entries().next().value;
    stashed.delete(oldest);
    stashDropped(gone, lost.length, `they are kept for at most ${STASH_ROOMS} rooms`);
  }
}

function stashDropped(room, n, why) {
  toast(`${n} unconfirmed message${n === 1 ? '' : 's'} in #${room} ${n === 1 ? 'was' : 'were'} dropped: ${why}.`);
}

/**
 * Entering a room (navigation.js, with the session's room and name set and
 * the log empty): the messages stashed when this name left it go back at
 * the end of the log. The next `welcome` treats them as any pending ones
 * (connectionBack): unsent ones go, sent ones are matched against the
 * history and sent again only when it covers everything, else offered.
 */
export function restorePending() {
  const key = stashKey(state.user, state.room);
  const saved = stashed.get(key);
  if (!saved) return;
  stashed.delete(key);
  for (const m of saved.messages) {
    const p = addPending(m);
    if (m.failed) markFailed(p, m.failed);
    else setStatus(p, p.sent ? WAITING : NOT_SENT);
  }
}

/** Messages not confirmed yet, here and in rooms left (what a reload would lose). */
export function unconfirmedCount() {
  let n = state.pending.size;
  for (const { messages } of stashed.values()) n += messages.length;
  return n;
}

/**
 * After a `welcome` whose history was matched against our pending messages
 * (confirmPendingFromHistory). Unsent ones go now. Ones sent before the drop
 * and not in the history go again only when `covered` (the history holds
 * every message since we last saw the room, so theirs is certainly not
 * there); otherwise the person decides, so nothing is ever sent twice.
 */
export function connectionBack({ covered, serverLast }) {
  for (const p of [...state.pending.values()]) {
    if (p.failed) continue;
    // Sent in an earlier visit to a room whose numbering went back since
    // (the server forgot it): this history cannot tell.
    const sure = covered && !(p.since > serverLast);
    if (!p.sent || sure) post(p);
    else markFailed(p, 'The connection dropped before the server confirmed this message.');
  }
}

/**
 * The server refused a retry of this message: it had taken the first send,
 * and that message has since gone (deleted, or with Redis too old). The same
 * `client_id` would be refused again, so "Send again" posts it anew under a
 * new one.
 */
export function markGone(p) {
  state.pending.delete(p.clientId);
  p.clientId = randomId();
  p.el.dataset.clientId = p.clientId;
  p.since = undefined;
  state.pending.set(p.clientId, p);
  markFailed(p, 'This message was posted, then deleted or aged out before this page saw it. Send again to post it anew.');
}

export function markFailed(p, reason) {
  p.failed = true;
  p.el.classList.add('msg--failed');
  setStatus(p, reason);
  if (p.el.querySelector('.msg-failed-actions')) return;
  const retry = h('button', { cls: 'btn-link', text: 'Send again', testid: 'retry-message', attrs: { type: 'button' } });
  const discard = h('button', { cls: 'btn-link', text: 'Discard', testid: 'discard-message', attrs: { type: 'button' } });
  retry.addEventListener('click', () => {
    if (state.connState !== 'connected') { toast('Still offline; try again once connected.', { tag: 'offline' }); return; }
    // Moved to the end: it is now ordered after everything received, and
    // after everything sent (`state.pending` is in send order: a refusal
    // is pinned on the oldest waiting, events.js).
    els.list.append(p.el);
    regroup(p.el);
    state.pending.delete(p.clientId);
    state.pending.set(p.clientId, p);
    p.failed = false;
    post(p);
  });
  discard.addEventListener('click', () => {
    state.pending.delete(p.clientId);
    const next = p.el.nextElementSibling;
    p.el.remove();
    if (next) regroup(next);
  });
  p.el.querySelector('.msg-main').append(h('div', { cls: 'msg-failed-actions' }, [retry, ' · ', discard]));
}

/** The hint under the box says what Enter does here (see enterSends). */
function showKeys() {
  els.composerKeys.textContent = enterSends()
    ? 'Enter to send · Shift+Enter for a new line · ↑ to edit your last message'
    : 'Enter for a new line · the Send button sends';
}

export function initComposer({ editLast }) {
  // Leaving the page loses what is not confirmed (here or in rooms left):
  // the browser asks first.
  window.addEventListener('beforeunload', (e) => {
    if (!unconfirmedCount()) return;
    e.preventDefault();
    e.returnValue = true; // browsers before preventDefault was enough
  });
  els.composer.addEventListener('submit', (e) => { e.preventDefault(); submit(); });
  els.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && enterSends() && !imeKey(e)) {
      e.preventDefault();
      submit();
    } else if (e.key === 'ArrowUp' && !els.input.value) {
      if (editLast()) e.preventDefault(); // like most chat apps: edit the last message of ours
    } else if (e.key === 'Escape') {
      composerError('');
    }
  });
  showKeys();
  touchScreen.addEventListener('change', showKeys);
  els.input.addEventListener('input', () => {
    autoGrow();
    updateSendState();
    saveDraft(state.room, els.input.value);
    const now = Date.now();
    if (els.input.value && now - lastTypingSent > TYPING_SEND_EVERY_MS) {
      if (send({ type: 'typing' })) lastTypingSent = now;
    }
  });
}
