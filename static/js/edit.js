// Editing one of our own messages in place: a styled box that grows with
// its text, Enter to save (the Save button on touch screens), Esc to cancel.
// An edit the server refuses comes back in its box, with the reason.

import { config } from './config.js';
import { els, enterSends, h, imeKey } from './dom.js';
import { send } from './connection.js';
import { autoGrow } from './composer.js';
import { isOwn } from './messages.js';
import { ERROR_TEXT, offlineToast, toast } from './notices.js';
import { state } from './state.js';

/**
 * Edits sent and not answered yet, oldest first: `{ id, content }`. The
 * server answers requests in order, so an `error` about an edit is about
 * the oldest one here, unless it names its message (the rate limit's);
 * its `message_updated` takes one off.
 */
const waiting = [];
const MAX_WAITING = 50;
/**
 * Refused edits that came while another box was open, oldest first: each
 * opens, with its text and reason, when the person closes the box before
 * it. Bounded like `waiting`.
 */
const later = [];

/**
 * Opens the edit box on message `id`. `content`: the text to start from
 * (the message's own by default); `error`: a sentence shown in the box;
 * `focus`: whether the box takes the keyboard focus.
 */
export function startEdit(id, { content, error = '', focus = true } = {}) {
  const entry = state.messages.get(id);
  if (!entry || !isOwn(entry.data)) return false;
  if (state.editing) cancelEdit();
  state.editing = id;
  const li = entry.el;
  const body = li.querySelector('.msg-text');
  const area = h('textarea', {
    cls: 'edit-input', testid: 'edit-input',
    attrs: { 'aria-label': 'Edit message', rows: '1', dir: 'auto', 'aria-describedby': 'edit-error' },
  });
  area.value = content ?? (entry.data.content || '');
  const save = h('button', { cls: 'btn btn-small btn-primary', text: 'Save', testid: 'edit-save', attrs: { type: 'button' } });
  const cancel = h('button', { cls: 'btn btn-small', text: 'Cancel', testid: 'edit-cancel', attrs: { type: 'button' } });
  const hint = enterSends() ? 'Enter to save · Shift+Enter for a new line · Esc to cancel' : '';
  const box = h('div', { cls: 'edit-box', testid: 'edit-box' }, [area,
    h('p', { cls: 'field-error', text: error, testid: 'edit-error', attrs: { id: 'edit-error', role: 'alert' } }),
    h('div', { cls: 'edit-bar' }, [
      h('span', { cls: 'edit-hint', text: hint }),
      h('span', { cls: 'edit-buttons' }, [cancel, save])])]);
  body.hidden = true;
  li.querySelector('.show-more')?.setAttribute('hidden', '');
  body.after(box);
  li.classList.add('msg--editing');
  const commit = () => {
    const content = area.value;
    if (!content.trim() && !entry.data.attachment) { toast('A message cannot be empty; use Delete instead.'); return; }
    if (Array.from(content).length > config.max_message_chars) { toast(ERROR_TEXT.too_long); return; }
    if (content !== entry.data.content) {
      if (!send({ type: 'edit', message_id: id, content })) {
        offlineToast('the edit was not saved');
        return;
      }
      waiting.push({ id, content });
      // Bounded, however the server answers: this list is only emptied
      // by answers and by a new connection.
      if (waiting.length > MAX_WAITING) waiting.shift();
    }
    closeBox();
  };
  save.addEventListener('click', commit);
  cancel.addEventListener('click', () => closeBox());
  area.addEventListener('input', () => autoGrow(area, 320));
  area.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && enterSends() && !imeKey(e)) { e.preventDefault(); commit(); }
    if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); closeBox(); }
  });
  if (focus) {
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }
  autoGrow(area, 320);
  return true;
}

/** A `message_updated`: when it is one of our edits, that edit was taken. */
export function editApplied(m) {
  const i = waiting.findIndex((w) => w.id === m.message_id && w.content === m.content);
  if (i >= 0) waiting.splice(i, 1);
}

/**
 * The server refused an edit (`error` with `ref` `edit`) for `reason`: the
 * edit of `messageId` when the refusal names one (the rate limit's, which
 * may overtake answers still on their way), else the oldest edit still
 * waiting; its box opens again with what was typed and the reason. It does
 * not replace another edit in progress, nor take the focus from text being
 * typed elsewhere. False when the reason could not be shown there (the
 * caller says it another way).
 */
export function editRefused(reason, messageId = null) {
  const at = messageId === null ? 0 : waiting.findIndex((w) => w.id === messageId);
  const refused = at < 0 ? undefined : waiting.splice(at, 1)[0];
  if (!refused) return false;
  if (state.editing) {
    // Not over the box being typed in: it opens once that one is closed.
    later.push({ ...refused, reason });
    if (later.length > MAX_WAITING) later.shift();
    toast(`An edit of another message was not saved (${reason.replace(/[.\s]+$/, '')}); it opens again when you close this one.`);
    return true;
  }
  const active = document.activeElement;
  const idle = !active || active === document.body || (active === els.input && !els.input.value);
  return startEdit(refused.id, { content: refused.content, error: reason, focus: idle });
}

/** The person closed the box (saved or cancelled): a refused edit held back opens. */
function closeBox() {
  cancelEdit();
  while (later.length) {
    const next = later.shift();
    if (startEdit(next.id, { content: next.content, error: next.reason })) return;
  }
}

/** A new connection: edits sent on the old one will never be answered. */
export function forgetWaitingEdits() {
  waiting.length = 0;
}

export function cancelEdit({ refocus = true } = {}) {
  const id = state.editing;
  state.editing = null;
  const entry = id && state.messages.get(id);
  if (!entry) return;
  const li = entry.el;
  li.querySelector('.edit-box')?.remove();
  li.classList.remove('msg--editing');
  li.querySelector('.msg-text').hidden = !entry.data.content;
  li.querySelector('.show-more')?.removeAttribute('hidden');
  if (refocus) els.input.focus();
}

/** ↑ in an empty composer: edit the newest message of ours still on the server. */
export function editLast() {
  const own = [...els.list.querySelectorAll('.msg--own[data-id]:not(.msg--archived)')].pop();
  return own ? startEdit(own.dataset.id) : false;
}
