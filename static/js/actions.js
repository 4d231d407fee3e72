// What can be done to a message: react, edit, delete, unfold. Buttons are
// delegated from the list. With a mouse they show on hover and focus; on a
// touch screen a tap (or a long press) on a message opens its action bar.

import { els, isTouch } from './dom.js';
import { send } from './connection.js';
import { startEdit } from './edit.js';
import { offlineToast } from './notices.js';
import { openPicker } from './picker.js';
import { askWhole } from './reactions.js';

const LONG_PRESS_MS = 450;
let openLi = null;
let pressTimer = 0;
let pressStart = null;
let swallowClick = false;

function openActions(li) {
  if (openLi && openLi !== li) closeActions();
  openLi = li;
  li.classList.add('msg--actions-open');
}

export function closeActions() {
  openLi?.classList.remove('msg--actions-open');
  openLi = null;
}

function unfold(button) {
  const body = document.getElementById(button.getAttribute('aria-controls'));
  const open = button.getAttribute('aria-expanded') !== 'true';
  body?.classList.toggle('msg-text--folded', !open);
  button.setAttribute('aria-expanded', String(open));
  button.textContent = open ? 'Show less' : 'Show more';
}

function act(button, li) {
  if (button.dataset.action === 'show-more') { unfold(button); return; }
  const id = li.dataset.id;
  if (!id || li.classList.contains('msg--archived')) return;
  switch (button.dataset.action) {
    case 'toggle-reaction': {
      // What the button shows, never a toggle: a sample of the names may
      // hide that the reaction is already ours (reactions.js).
      const action = button.getAttribute('aria-pressed') === 'true' ? 'remove' : 'add';
      if (!send({ type: 'reaction', message_id: id, emoji: button.dataset.emoji, action })) offlineToast('the reaction was not sent');
      else if (button.dataset.sure === 'false') askWhole(id);
      break;
    }
    case 'react': openPicker(li, button); break;
    case 'edit': closeActions(); startEdit(id); break;
    case 'delete':
      // The native dialog is keyboard- and screen-reader-friendly for free.
      if (window.confirm('Delete this message for everyone?')) {
        if (!send({ type: 'delete', message_id: id })) offlineToast('the message was not deleted');
      }
      closeActions();
      break;
    default: break;
  }
}

const ignoredTap = (target) => target.closest('a, video, audio, textarea, input, .edit-box, .msg-failed-actions');

export function initActions() {
  els.list.addEventListener('click', (e) => {
    const li = e.target.closest('li.msg');
    if (!li) return;
    const button = e.target.closest('button[data-action]');
    if (button) { act(button, li); return; }
    if (swallowClick) { swallowClick = false; return; }
    if (!isTouch() || ignoredTap(e.target) || li.classList.contains('msg--deleted')) return;
    if (openLi === li) closeActions(); else openActions(li);
  });
  // Long press: Android sends contextmenu; elsewhere a held touch is timed.
  els.list.addEventListener('contextmenu', (e) => {
    const li = e.target.closest('li.msg');
    if (!isTouch() || !li || ignoredTap(e.target) || e.target.closest('img')) return;
    e.preventDefault();
    openActions(li);
  });
  els.list.addEventListener('pointerdown', (e) => {
    const li = e.target.closest('li.msg');
    swallowClick = false;
    if (e.pointerType !== 'touch' || !li || ignoredTap(e.target)) return;
    pressStart = { x: e.clientX, y: e.clientY };
    clearTimeout(pressTimer);
    pressTimer = setTimeout(() => { openActions(li); swallowClick = true; }, LONG_PRESS_MS);
  });
  const cancelPress = () => { clearTimeout(pressTimer); pressStart = null; };
  els.list.addEventListener('pointermove', (e) => {
    if (pressStart && Math.hypot(e.clientX - pressStart.x, e.clientY - pressStart.y) > 10) cancelPress();
  });
  els.list.addEventListener('pointerup', cancelPress);
  els.list.addEventListener('pointercancel', cancelPress);
  document.addEventListener('click', (e) => { if (openLi && !openLi.contains(e.target)) closeActions(); });
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeActions(); });
}
