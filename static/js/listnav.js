// The message list is one Tab stop, not one per button: only one message
// (the newest, or the one last moved to) and its own controls are in the
// Tab order. ↑/↓, PageUp/PageDown, Home/End move between messages; Enter
// goes into a message's controls and Esc back out; typing a character while
// in the list writes it in the composer.

import { els } from './dom.js';

const CONTROLS = 'a[href], button, video, audio';
let chosen = null; // the message moved to, while focus is in the list
let scheduled = false;

const messages = () => [...els.list.querySelectorAll(':scope > li.msg')];
const current = () => (chosen && chosen.isConnected ? chosen : messages().at(-1) || null);

function schedule() {
  if (scheduled) return;
  scheduled = true;
  queueMicrotask(apply);
}

/** Gives the current message and its controls tabindex 0, every other one -1. */
function apply() {
  scheduled = false;
  const cur = current();
  for (const li of messages()) {
    const index = li === cur ? 0 : -1;
    if (li.tabIndex !== index) li.tabIndex = index;
    for (const c of li.querySelectorAll(CONTROLS)) {
      if (!c.closest('.edit-box') && c.tabIndex !== index) c.tabIndex = index;
    }
  }
}

function typeIntoComposer(e) {
  e.preventDefault();
  const box = els.input;
  box.focus();
  box.setRangeText(e.key, box.selectionStart, box.selectionEnd, 'end');
  box.dispatchEvent(new Event('input', { bubbles: true }));
}

function onKey(e) {
  const li = e.target.closest('#messages > li.msg');
  if (!li || e.target.matches('textarea, input, video, audio') || e.altKey || e.ctrlKey || e.metaKey) return;
  const onItem = e.target === li;
  const all = messages();
  const i = all.indexOf(li);
  const move = (j) => {
    e.preventDefault();
    all[Math.max(0, Math.min(all.length - 1, j))]?.focus();
  };
  switch (e.key) {
    case 'ArrowUp': move(i - 1); break;
    case 'ArrowDown': move(i + 1); break;
    case 'PageUp': move(i - 10); break;
    case 'PageDown': move(i + 10); break;
    case 'Home': if (onItem) move(0); break;
    case 'End': if (onItem) move(all.length - 1); break;
    case 'Enter':
      if (onItem) {
        const first = [...li.querySelectorAll(CONTROLS)].find((c) => c.offsetParent !== null);
        if (first) { e.preventDefault(); first.focus(); }
      }
      break;
    case 'Escape':
      if (!onItem) { e.preventDefault(); li.focus(); }
      break;
    default:
      if (e.key.length === 1 && (onItem || e.key !== ' ')) typeIntoComposer(e);
  }
}

export function initListNav() {
  new MutationObserver(schedule).observe(els.list, { childList: true, subtree: true });
  els.list.addEventListener('focusin', (e) => {
    const li = e.target.closest('#messages > li.msg');
    if (li && li !== chosen) { chosen = li; schedule(); }
  });
  // Leaving the list: Tab back in lands on the newest message again.
  els.list.addEventListener('focusout', (e) => {
    if (!els.list.contains(e.relatedTarget)) { chosen = null; schedule(); }
  });
  els.list.addEventListener('keydown', onKey);
}
