// On a phone the sidebar (rooms, people) is a drawer: ☰ opens it, and a
// tap on the dimmed page beside it, its ✕, Esc or choosing a room closes
// it. While open, the page behind is inert and focus is inside; closing
// gives focus back to ☰.

import { els, isNarrow } from './dom.js';
import { refreshActiveRooms } from './rooms.js';

const behind = () => [els.topbar, els.banner, els.chat];
export const drawerOpen = () => document.body.classList.contains('sidebar-open');

export function openDrawer() {
  if (!isNarrow() || drawerOpen()) return;
  document.body.classList.add('sidebar-open');
  els.sidebarToggle.setAttribute('aria-expanded', 'true');
  els.backdrop.hidden = false;
  for (const el of behind()) el.inert = true;
  els.drawerClose.focus();
  refreshActiveRooms();
}

export function closeDrawer({ refocus = true } = {}) {
  if (!drawerOpen()) return;
  document.body.classList.remove('sidebar-open');
  els.sidebarToggle.setAttribute('aria-expanded', 'false');
  els.backdrop.hidden = true;
  for (const el of behind()) el.inert = false;
  if (refocus) els.sidebarToggle.focus();
}

export function initDrawer() {
  els.sidebarToggle.addEventListener('click', openDrawer);
  els.drawerClose.addEventListener('click', () => closeDrawer());
  els.backdrop.addEventListener('click', () => closeDrawer());
  els.onlineSummary.addEventListener('click', () => {
    if (isNarrow()) openDrawer();
    else els.onlineList.closest('section').scrollIntoView({ block: 'nearest' });
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && drawerOpen()) { e.preventDefault(); closeDrawer(); }
  });
  // Rotated or resized to the desktop layout: the sidebar is no longer a drawer.
  matchMedia('(max-width: 720px)').addEventListener('change', (e) => { if (!e.matches) closeDrawer({ refocus: false }); });
}
