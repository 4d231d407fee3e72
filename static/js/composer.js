// The message box: sending, messages waiting for their echo, messages
// written while offline (sent once reconnected, never twice), drafts kept
// per room, and the typing signal.

import { config, TYPING_SEND_EVERY_MS } from './config.js';
import { els, h } from './dom.js';
import { randomId } from './format.js';
import { buildMessage, regroup } from './messages.js';
import { send } from './connection.js';
import { clearNewDivider, scrollToBottom } from './scroll.js';
import { state } from './state.js';
import { loadDraft, saveDraft } from './store.js';
import { toast } from './notices.js';
import { clearUploads, readyAttachments, uploadsBusy } from './uploads.js';

let lastTypingSent = 0;

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
  const clientId = randomId();
  const p = { clientId, content, attachment, sent: false, failed: false, el: null };
  p.el = buildMessage({
    message_id: '', user: state.user, content, timestamp: new Date().toISOString(), reactions: {}, attachment,
  }, { pending: true });
  p.el.dataset.clientId = clientId;
  state.pending.set(clientId, p);
  els.list.append(p.el);
  regroup(p.el);
  if (state.connState === 'connected') transmit(p);
  else setStatus(p, 'Not sent yet: it goes once reconnected.');
}

function transmit(p) {
  const msg = { type: 'message', content: p.content, client_id: p.clientId };
  if (p.attachment) msg.attachment = { url: p.attachment.url };
  p.sent = send(msg);
  p.failed = false;
  p.el.classList.remove('msg--failed');
  p.el.querySelector('.msg-failed-actions')?.remove();
  setStatus(p, p.sent ? 'Sending…' : 'Not sent yet: it goes once reconnected.');
}

function setStatus(p, text) {
  p.el.querySelector('.msg-status').textContent = text;
}

/** The connection dropped: messages without an echo may or may not have arrived. */
export function connectionDropped() {
  for (const p of state.pending.values()) {
    if (!p.failed) setStatus(p, p.sent ? 'Waiting for the connection…' : 'Not sent yet: it goes once reconnected.');
  }
}

/**
 * After a `welcome` whose history was matched against our pending messages
 * (confirmPendingFromHistory). Unsent ones go now. Ones sent before the drop
 * and not in the history go again only when `covered` (the history holds
 * every message since we last saw the room, so theirs is certainly not
 * there); otherwise the person decides, so nothing is ever sent twice.
 */
export function connectionBack({ covered }) {
  for (const p of [...state.pending.values()]) {
    if (p.failed) continue;
    if (!p.sent || covered) transmit(p);
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
    // Moved to the end: it is now ordered after everything received.
    els.list.append(p.el);
    regroup(p.el);
    transmit(p);
  });
  discard.addEventListener('click', () => {
    state.pending.delete(p.clientId);
    const next = p.el.nextElementSibling;
    p.el.remove();
    if (next) regroup(next);
  });
  p.el.querySelector('.msg-main').append(h('div', { cls: 'msg-failed-actions' }, [retry, ' · ', discard]));
}

export function initComposer({ editLast }) {
  els.composer.addEventListener('submit', (e) => { e.preventDefault(); submit(); });
  els.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    } else if (e.key === 'ArrowUp' && !els.input.value) {
      if (editLast()) e.preventDefault(); // like most chat apps: edit the last message of ours
    } else if (e.key === 'Escape') {
      composerError('');
    }
  });
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
