// Editing one of our own messages in place: a styled box that grows with
// its text, Enter to save, Esc to cancel.

import { config } from './config.js';
import { els, h } from './dom.js';
import { send } from './connection.js';
import { autoGrow } from './composer.js';
import { isOwn } from './messages.js';
import { ERROR_TEXT, offlineToast, toast } from './notices.js';
import { state } from './state.js';

export function startEdit(id) {
  const entry = state.messages.get(id);
  if (!entry || !isOwn(entry.data)) return false;
  if (state.editing) cancelEdit();
  state.editing = id;
  const li = entry.el;
  const body = li.querySelector('.msg-text');
  const area = h('textarea', {
    cls: 'edit-input', testid: 'edit-input', attrs: { 'aria-label': 'Edit message', rows: '1', dir: 'auto' },
  });
  area.value = entry.data.content || '';
  const save = h('button', { cls: 'btn btn-small btn-primary', text: 'Save', testid: 'edit-save', attrs: { type: 'button' } });
  const cancel = h('button', { cls: 'btn btn-small', text: 'Cancel', testid: 'edit-cancel', attrs: { type: 'button' } });
  const box = h('div', { cls: 'edit-box', testid: 'edit-box' }, [area, h('div', { cls: 'edit-bar' }, [
    h('span', { cls: 'edit-hint', text: 'Enter to save · Shift+Enter for a new line · Esc to cancel' }),
    h('span', { cls: 'edit-buttons' }, [cancel, save])])]);
  body.hidden = true;
  li.querySelector('.show-more')?.setAttribute('hidden', '');
  body.after(box);
  li.classList.add('msg--editing');
  const commit = () => {
    const content = area.value;
    if (!content.trim() && !entry.data.attachment) { toast('A message cannot be empty; use Delete instead.'); return; }
    if (Array.from(content).length > config.max_message_chars) { toast(ERROR_TEXT.too_long); return; }
    if (content !== entry.data.content && !send({ type: 'edit', message_id: id, content })) {
      offlineToast('the edit was not saved');
      return;
    }
    cancelEdit();
  };
  save.addEventListener('click', commit);
  cancel.addEventListener('click', () => cancelEdit());
  area.addEventListener('input', () => autoGrow(area, 320));
  area.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); commit(); }
    if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); cancelEdit(); }
  });
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
  autoGrow(area, 320);
  return true;
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
