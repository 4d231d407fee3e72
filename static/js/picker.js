// The reaction picker: one popup, opened next to a message's ☺+ button,
// placed below it or, when there is no room there, above it, always inside
// the window and clear of the composer. The common eight come first; a
// search box filters the rest by name.

import { els, h } from './dom.js';
import { send } from './connection.js';
import { askWhole } from './reactions.js';
import { EMOJI, QUICK } from './emoji-data.js';
import { offlineToast } from './notices.js';

const COLUMNS = 8; // matches .picker-grid in style.css
let opener = null;
let target = null; // the message element the picker is open for
let search;
let grid;
let empty;

function build() {
  search = h('input', {
    cls: 'picker-search', testid: 'picker-search',
    attrs: { type: 'search', placeholder: 'Search emoji', 'aria-label': 'Search emoji', autocomplete: 'off', spellcheck: 'false' },
  });
  const words = new Map(EMOJI);
  const order = [...QUICK, ...EMOJI.map(([e]) => e).filter((e) => !QUICK.includes(e))];
  grid = h('div', { cls: 'picker-grid', attrs: { role: 'group', 'aria-label': 'Emoji' } }, order.map((emoji) => {
    const name = (words.get(emoji) || '').split(' ').slice(0, 3).join(' ');
    const b = h('button', {
      cls: 'picker-emoji', text: emoji, testid: 'picker-emoji',
      attrs: { type: 'button', 'data-emoji': emoji, 'aria-label': `React with ${emoji}`, title: name },
    });
    b.dataset.words = words.get(emoji) || '';
    return b;
  }));
  empty = h('p', { cls: 'picker-empty', attrs: { role: 'status' } });
  els.picker.replaceChildren(search, grid, empty);
}

const visibleButtons = () => [...grid.children].filter((b) => !b.hidden);

function filter() {
  const terms = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const b of grid.children) {
    const hit = terms.every((t) => b.dataset.words.includes(t) || b.dataset.emoji === t);
    b.hidden = !hit;
    if (hit) shown++;
  }
  empty.textContent = shown ? '' : `No emoji match “${search.value.trim()}”.`;
  grid.scrollTop = 0;
}

export function openPicker(li, button) {
  if (!els.picker.hidden && opener === button) { closePicker(); return; }
  if (!grid) build();
  opener = button;
  target = li;
  search.value = '';
  filter();
  els.picker.hidden = false;
  place(button);
  grid.firstElementChild.focus({ preventScroll: true });
}

/** Below the button if it fits above the composer, else above; clamped to the window. */
function place(button) {
  const p = els.picker;
  const r = button.getBoundingClientRect();
  const floor = Math.min(window.innerHeight, els.composer.parentElement.getBoundingClientRect().top) - 8;
  const { offsetHeight: height, offsetWidth: width } = p;
  let top = r.bottom + 4;
  const up = top + height > floor;
  if (up) top = Math.max(8, r.top - height - 4);
  const left = Math.max(8, Math.min(r.right - width, window.innerWidth - width - 8));
  p.style.top = `${Math.round(top)}px`;
  p.style.left = `${Math.round(left)}px`;
  p.classList.toggle('picker--up', up);
}

export function closePicker({ refocus = true } = {}) {
  if (els.picker.hidden) return;
  els.picker.hidden = true;
  if (refocus && opener && opener.isConnected) opener.focus();
  opener = null;
  target = null;
}

function choose(emoji) {
  const id = target && target.dataset.id;
  // An emoji the message shows as ours comes off; any other goes on (what
  // the page shows, never a toggle: see reactions.js).
  const chip = id && [...target.querySelectorAll('.msg-reactions [data-emoji]')].find((b) => b.dataset.emoji === emoji);
  const action = chip?.getAttribute('aria-pressed') === 'true' ? 'remove' : 'add';
  if (id && !send({ type: 'reaction', message_id: id, emoji, action })) offlineToast('the reaction was not sent');
  else if (chip?.dataset.sure === 'false') askWhole(id);
  closePicker();
}

function onGridKey(e) {
  const buttons = visibleButtons();
  const i = buttons.indexOf(document.activeElement);
  const go = (j) => { e.preventDefault(); buttons[Math.max(0, Math.min(buttons.length - 1, j))]?.focus(); };
  switch (e.key) {
    case 'ArrowRight': go(i + 1); break;
    case 'ArrowLeft': go(i - 1); break;
    case 'ArrowDown': go(i + COLUMNS); break;
    case 'ArrowUp':
      if (i < COLUMNS) { e.preventDefault(); search.focus(); } else go(i - COLUMNS);
      break;
    case 'Home': go(0); break;
    case 'End': go(buttons.length - 1); break;
    default:
      // Typing in the grid searches.
      if (e.key.length === 1 && !e.ctrlKey && !e.metaKey && !e.altKey && e.key !== ' ') {
        e.preventDefault();
        search.focus();
        search.value += e.key;
        filter();
      }
  }
}

export function initPicker() {
  els.picker.addEventListener('click', (e) => {
    e.stopPropagation();
    const b = e.target.closest('button[data-emoji]');
    if (b) choose(b.dataset.emoji);
  });
  els.picker.addEventListener('input', (e) => { if (e.target === search) filter(); });
  els.picker.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); closePicker(); return; }
    if (e.target === search) {
      if (e.key === 'ArrowDown') { e.preventDefault(); visibleButtons()[0]?.focus(); }
      if (e.key === 'Enter') { e.preventDefault(); const first = visibleButtons()[0]; if (first) choose(first.dataset.emoji); }
      return;
    }
    if (e.target.closest('.picker-grid')) onGridKey(e);
  });
  document.addEventListener('click', (e) => {
    if (!els.picker.hidden && !els.picker.contains(e.target) && e.target !== opener) closePicker({ refocus: false });
  });
  els.picker.addEventListener('focusout', (e) => {
    if (!els.picker.hidden && e.relatedTarget && !els.picker.contains(e.relatedTarget)) closePicker({ refocus: false });
  });
  // The button it belongs to moved: follow it while it is in view.
  const follow = () => {
    if (els.picker.hidden || !opener) return;
    const r = opener.getBoundingClientRect();
    const list = els.list.getBoundingClientRect();
    if (!opener.isConnected || r.bottom < list.top || r.top > list.bottom) closePicker({ refocus: false });
    else place(opener);
  };
  els.list.addEventListener('scroll', follow, { passive: true });
  window.addEventListener('resize', follow);
}
