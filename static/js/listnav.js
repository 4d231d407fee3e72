// The message list is one Tab stop, not one per button: only one message
// (the newest, or the one last moved to) and its own controls are in the
// Tab order. ↑/↓, PageUp/PageDown, Home/End move between messages; Enter
// goes into a message's controls and Esc back out; typing a character while
// in the list writes it in the composer.

import { els } from './dom.js';

const CONTROLS = 'a[href], button, video, audio';
const MESSAGE = '#messages > li.msg';
let chosen = null; // the message moved to, while focus is in the list
let tabbed = null; // the message that has tabindex 0 now
let scheduled = false;

const messages = () => [...els.list.querySelectorAll(':scope > li.msg')];

/** The newest message, found from the end (what follows it is rarely more than a few notices). */
function newest() {
  let el = els.list.lastElementChild;
  while (el && !el.matches('li.msg')) el = el.previousElementSibling;
  return el;
}

const current = () => (chosen && chosen.isConnected ? chosen : newest());

/** Gives `root` (a message, or something in one) and the controls in it `index`. */
function setIndex(root, index) {
  if (root.matches(MESSAGE) && root.tabIndex !== index) root.tabIndex = index;
  const controls = root.matches(CONTROLS) ? [root] : [];
  for (const c of [...controls, ...root.querySelectorAll(CONTROLS)]) {
    if (!c.closest('.edit-box') && c.tabIndex !== index) c.tabIndex = index;
  }
}

/** The current message and its controls get tabindex 0, the one that had it -1. */
function retarget() {
  scheduled = false;
  const cur = current();
  if (cur === tabbed) return;
  if (tabbed) setIndex(tabbed, -1);
  tabbed = cur;
  if (cur) setIndex(cur, 0);
}

function schedule() {
  if (scheduled) return;
  scheduled = true;
  queueMicrotask(retarget);
}

/**
 * Only what was added is looked at, never the whole list: a busy room adds
 * a message at a time, and walking thousands of them for each would make a
 * long-lived tab ever slower.
 */
function onMutations(records) {
  retarget();
  for (const r of records) {
    for (const node of r.addedNodes) {
      if (node.nodeType !== Node.ELEMENT_NODE) continue;
      const li = node.closest(MESSAGE);
      if (li) setIndex(node, li === tabbed ? 0 : -1);
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
  new MutationObserver(onMutations).observe(els.list, { childList: true, subtree: true });
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
