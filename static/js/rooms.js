// Rooms: the ones this browser visited, the active public ones the server
// lists (GET /api/rooms), the invite link, which names the room only, and
// the lock that marks private rooms (`private-...`: only invitations open
// them, and the server never lists them).

import { ACTIVE_ROOMS_SHOWN } from './config.js';
import { els, h } from './dom.js';
import { toast } from './notices.js';
import { state } from './state.js';
import { recentRooms, sameRoom } from './store.js';
import { switchRoom } from './navigation.js';

/** Refetched at most this often (opening the drawer, entering a room, the join form). */
const ACTIVE_ROOMS_TTL_MS = 15000;
let active = []; // [{ room, online_count }] as the server listed them, at most 50
let fetchedAt = 0;

/** The server's rule (any case): rooms named `private-...` need an invitation. */
export const isPrivateRoom = (room) => /^private-/i.test((room || '').trim());

const SVG = 'http://www.w3.org/2000/svg';
/** A padlock drawn in the text colour, named "private room" for assistive technology. */
export function lockIcon() {
  const svg = document.createElementNS(SVG, 'svg');
  for (const [k, v] of Object.entries({
    class: 'icon lock-icon', viewBox: '0 0 24 24', width: '14', height: '14', role: 'img', 'aria-label': 'private room',
  })) svg.setAttribute(k, v);
  svg.dataset.testid = 'room-lock';
  const title = document.createElementNS(SVG, 'title');
  title.textContent = 'Private room';
  const body = document.createElementNS(SVG, 'rect');
  for (const [k, v] of Object.entries({ x: '5', y: '10.5', width: '14', height: '10', rx: '2', fill: 'currentColor' })) body.setAttribute(k, v);
  const shackle = document.createElementNS(SVG, 'path');
  for (const [k, v] of Object.entries({
    d: 'M8 10.5V8a4 4 0 0 1 8 0v2.5', fill: 'none', stroke: 'currentColor', 'stroke-width': '2', 'stroke-linecap': 'round',
  })) shackle.setAttribute(k, v);
  svg.append(title, body, shackle);
  return svg;
}

/** The room header's lock: shown for a private room. */
export function showRoomLock(room) {
  els.roomLock.replaceChildren(...(isPrivateRoom(room) ? [lockIcon()] : []));
  els.roomLock.hidden = !isPrivateRoom(room);
}

export const roomHref = (room) => `${location.pathname}?${new URLSearchParams({ room })}`;
export const inviteUrl = () => `${location.origin}${roomHref(state.roomTitle || state.room)}`;

function roomLink(room, extra) {
  const current = Boolean(state.room) && sameRoom(room, state.room);
  const a = h('a', { cls: `room-link${current ? ' current' : ''}`, attrs: { href: roomHref(room) } },
    [h('span', { cls: 'room-link-name', text: `# ${room}`, attrs: { dir: 'auto' } }), isPrivateRoom(room) ? lockIcon() : null, extra]);
  if (current) a.setAttribute('aria-current', 'page');
  a.addEventListener('click', (e) => {
    if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return; // new-tab clicks go through
    e.preventDefault();
    switchRoom(room);
  });
  return h('li', {}, [a]);
}

export function renderRecentRooms() {
  els.roomList.replaceChildren(...recentRooms().map((room) => roomLink(room)));
}

function renderActiveRooms() {
  const shown = active.slice(0, ACTIVE_ROOMS_SHOWN);
  const count = (n) => h('span', { cls: 'room-count', text: `${n} online` });
  const items = shown.map((r) => roomLink(r.room, count(r.online_count)));
  if (!active.length) items.push(h('li', { cls: 'muted small', text: 'No active public rooms right now.' }));
  else if (active.length > shown.length) {
    items.push(h('li', { cls: 'muted small', text: `and ${active.length - shown.length} more` }));
  }
  els.activeRooms.replaceChildren(...items);

  // On the join form: a tap fills in the room.
  els.joinRoomsSection.hidden = active.length === 0;
  els.joinActiveRooms.replaceChildren(...shown.map((r) => {
    const b = h('button', { cls: 'chip', attrs: { type: 'button' } }, [
      h('span', { text: r.room, attrs: { dir: 'auto' } }), count(r.online_count)]);
    b.addEventListener('click', () => {
      els.joinRoom.value = r.room;
      (els.joinName.value.trim() ? els.joinForm.querySelector('[type=submit]') : els.joinName).focus();
    });
    return h('li', {}, [b]);
  }));
}

/** Fetches the active rooms unless fetched moments ago (`force` always does). */
export async function refreshActiveRooms({ force = false } = {}) {
  if (!force && Date.now() - fetchedAt < ACTIVE_ROOMS_TTL_MS) { renderActiveRooms(); return; }
  fetchedAt = Date.now();
  try {
    const res = await fetch('/api/rooms', { cache: 'no-store' });
    const body = res.ok ? await res.json() : null;
    const rooms = body && Array.isArray(body.rooms) ? body.rooms : [];
    active = rooms
      .filter((r) => r && typeof r.room === 'string' && typeof r.online_count === 'number')
      .slice(0, 50);
  } catch { /* offline: keep what we had */ }
  renderActiveRooms();
}

async function copyInvite() {
  const url = inviteUrl();
  // The link names the room only; a private room also needs each person's
  // own invitation, which this page cannot make.
  const also = isPrivateRoom(state.roomTitle || state.room)
    ? ' It is a private room: each person also needs an invitation of their own.' : '';
  try {
    await navigator.clipboard.writeText(url);
    toast(`Invite link copied: ${url}${also}`, { kind: 'ok', timeout: also ? 8000 : 4000 });
  } catch {
    // No clipboard (plain http on another host): show it to copy by hand.
    toast(`Copy this invite link: ${url}${also}`, { kind: 'ok', timeout: 20000 });
  }
}

export function initRooms() {
  els.inviteBtn.addEventListener('click', copyInvite);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshActiveRooms(); });
}
