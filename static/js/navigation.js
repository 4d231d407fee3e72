// Which screen shows: the join form, or a room. Reads the address
// (?room=, and a `user=` that is only followed when it is already this
// browser's name), enters rooms without reloading, and keeps the address
// shareable: it names the room only.

import { els } from './dom.js';
import { connect, disconnect } from './connection.js';
import { state } from './state.js';
import { rememberRoom, sameRoom } from './store.js';
import { nameForLink, saveName, validateName } from './identity.js';
import { closePicker } from './picker.js';
import { closeActions } from './actions.js';
import { closeDrawer } from './drawer.js';
import { clearUploads } from './uploads.js';
import { composerError, loadComposer } from './composer.js';
import { resetTyping } from './typing.js';
import { resetPresence, setOnline } from './presence.js';
import { resetScroll } from './scroll.js';
import { resetHistory } from './history.js';
import { resetUnread } from './attention.js';
import { refreshActiveRooms, renderRecentRooms, roomHref } from './rooms.js';
import { toast } from './notices.js';

/** Enters `room` as `user`: resets the view and connects. No page reload. */
export function enterRoom(room, user, { push = true } = {}) {
  room = room.trim();
  user = user.trim();
  disconnect();
  closePicker({ refocus: false });
  closeActions();
  closeDrawer({ refocus: false });
  clearUploads();
  Object.assign(state, {
    room, roomTitle: room, user, hasConnected: false, lastSeq: 0, attempts: 0,
    closeReason: '', serverRestarting: false, editing: null,
  });
  state.messages.clear();
  state.pending.clear();
  resetTyping();
  resetPresence();
  resetScroll();
  resetHistory();
  els.list.replaceChildren();
  saveName(user);
  rememberRoom(room);
  if (push) history.pushState({ room }, '', roomHref(room));
  else history.replaceState({ room }, '', roomHref(room));
  els.roomTitle.textContent = room;
  els.meName.textContent = user;
  resetUnread();
  renderRecentRooms();
  setOnline([], 0);
  els.joinView.hidden = true;
  els.chatView.hidden = false;
  composerError('');
  loadComposer();
  connect();
  els.input.focus();
}

export function switchRoom(room) {
  const err = validateName(room, 'room', 64);
  if (err) { toast(err); return; }
  if (sameRoom(room, state.room)) { closeDrawer(); return; }
  enterRoom(room, state.user);
}

/** The join form, with the name and room to start from and what to say. */
function showJoin({ name = '', room = '', note = '', error = '' } = {}) {
  disconnect();
  closeDrawer({ refocus: false });
  els.chatView.hidden = true;
  els.joinView.hidden = false;
  els.joinName.value = name;
  if (room) els.joinRoom.value = room;
  els.joinNote.textContent = note;
  els.joinNote.hidden = !note;
  els.joinError.textContent = error;
  const nameFirst = !name || note || error;
  (nameFirst ? els.joinName : els.joinRoom).focus();
  state.roomTitle = '';
  document.title = 'roomcast';
  refreshActiveRooms();
}

/** Shows what the address asks for. */
export function route() {
  const params = new URLSearchParams(location.search);
  const room = (params.get('room') || '').trim();
  const decision = nameForLink(params.get('user'));
  if (room && decision.join) {
    const error = validateName(room, 'room', 64) || validateName(decision.join, 'name', 32);
    if (error) { showJoin({ name: decision.join, room, error }); return; }
    if (sameRoom(room, state.room) && decision.join === state.user && state.connState !== 'idle') return;
    enterRoom(room, decision.join, { push: false });
    return;
  }
  const name = decision.ask || '';
  showJoin({ name, room, note: decision.note, error: name && decision.note ? validateName(name, 'name', 32) : '' });
}

export function initNavigation() {
  els.joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const error = validateName(els.joinName.value, 'name', 32) || validateName(els.joinRoom.value, 'room', 64);
    els.joinError.textContent = error;
    if (error) return;
    els.joinNote.hidden = true;
    enterRoom(els.joinRoom.value, els.joinName.value);
  });
  els.roomForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const room = els.roomInput.value;
    if (!room.trim()) return;
    els.roomInput.value = '';
    switchRoom(room);
  });
  els.changeName.addEventListener('click', () => {
    state.user = '';
    showJoin({ room: state.roomTitle || state.room });
  });
  window.addEventListener('popstate', route);
}
