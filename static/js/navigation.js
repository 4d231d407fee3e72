// Which screen shows: the join form, or a room. Reads the address
// (?room=, a `user=` that is only followed when it is already this
// browser's name, and an invitation's `#token=`), enters rooms without
// reloading, and keeps the address shareable: it names the room only.

import { els, isTouch } from './dom.js';
import { connect, disconnect, presentNewToken } from './connection.js';
import { state } from './state.js';
import { rememberRoom, sameRoom } from './store.js';
import { nameForLink, saveName, validateName } from './identity.js';
import { closePicker } from './picker.js';
import { closeActions } from './actions.js';
import { closeDrawer } from './drawer.js';
import { restoreUploads, stashUploads } from './uploads.js';
import { composerError, loadComposer, restorePending, stashPending } from './composer.js';
import { resetTyping } from './typing.js';
import { resetPresence, setOnline } from './presence.js';
import { resetScroll } from './scroll.js';
import { resetHistory } from './history.js';
import { resetUnread } from './attention.js';
import { refreshActiveRooms, renderRecentRooms, roomHref, showRoomLock } from './rooms.js';
import { invitedRoom, savedInvite, takeInvite } from './token.js';
import { config } from './config.js';
import { toast } from './notices.js';

/** Enters `room` as `user`: resets the view and connects. No page reload. */
export function enterRoom(room, user, { push = true } = {}) {
  room = room.trim();
  user = user.trim();
  disconnect();
  closePicker({ refocus: false });
  closeActions();
  closeDrawer({ refocus: false });
  // Files waiting to be sent and messages not confirmed yet stay with their
  // room, for when it is entered again.
  stashUploads();
  stashPending();
  Object.assign(state, {
    room, roomTitle: room, user, claim: '', hasConnected: false, lastSeq: 0, attempts: 0,
    closeReason: '', serverRestarting: false, editing: null,
  });
  state.messages.clear();
  resetTyping();
  resetPresence();
  resetScroll();
  resetHistory();
  els.list.replaceChildren();
  restorePending();
  saveName(user);
  rememberRoom(room);
  if (push) history.pushState({ room }, '', roomHref(room));
  else history.replaceState({ room }, '', roomHref(room));
  els.roomTitle.textContent = room;
  showRoomLock(room);
  els.meName.textContent = user;
  resetUnread();
  renderRecentRooms();
  setOnline([], 0);
  els.joinView.hidden = true;
  els.chatView.hidden = false;
  composerError('');
  restoreUploads();
  loadComposer();
  connect();
  // Not on a touch screen: focusing the box there opens the keyboard over
  // the room just entered.
  if (!isTouch()) els.input.focus();
}

export function switchRoom(room) {
  const err = validateName(room, 'room', 64);
  if (err) { toast(err); return; }
  if (sameRoom(room, state.room)) { closeDrawer(); return; }
  enterRoom(room, state.user);
}

/**
 * The join form, with the name and room to start from and what to say.
 * `focus: 'room'` puts the cursor in the room field (the room is what has
 * to change); otherwise the name field when there is anything to fix.
 */
function showJoin({ name = '', room = '', note = '', error = '', focus = '' } = {}) {
  disconnect();
  closeDrawer({ refocus: false });
  els.chatView.hidden = true;
  els.joinView.hidden = false;
  els.joinName.value = name;
  if (room) els.joinRoom.value = room;
  els.joinNote.textContent = note;
  els.joinNote.hidden = !note;
  els.joinError.textContent = error;
  const nameFirst = focus !== 'room' && (!name || note || error);
  (nameFirst ? els.joinName : els.joinRoom).focus();
  state.roomTitle = '';
  document.title = 'roomcast';
  refreshActiveRooms();
}

/**
 * A connection was refused for a reason trying again cannot cure (the name
 * is someone else's in this room, the room is private, there is no valid
 * invitation): back to the join form, saying so, with the field to change
 * focused.
 */
export function refuseToJoin({ field, text }) {
  showJoin({ name: state.user, room: state.roomTitle || state.room, error: text, focus: field });
}

/** Shows what the address asks for. */
export function route() {
  // An invite link (`#token=`) names who its holder is; it is taken out of
  // the address before anything else reads it.
  const invite = takeInvite();
  const params = new URLSearchParams(location.search);
  let room = (params.get('room') || '').trim();
  if (invite && invite.invalid) {
    showJoin({ name: state.user || '', room, error: 'This invite link is damaged: its token cannot be read. Ask for a new link.' });
    return;
  }
  if (invite) {
    saveName(invite.sub);
    if (!room) room = invitedRoom(invite);
  }
  const decision = invite ? { join: invite.sub } : nameForLink(params.get('user'));
  if (room && decision.join) {
    const error = validateName(room, 'room', 64) || validateName(decision.join, 'name', 32);
    if (error) { showJoin({ name: decision.join, room, error }); return; }
    if (sameRoom(room, state.room) && decision.join === state.user && state.connState !== 'idle') {
      // Already here: a new invitation renews the connection's token, or
      // brings a stopped one (its invitation had expired) back.
      if (invite) presentNewToken();
      return;
    }
    enterRoom(room, decision.join, { push: false });
    return;
  }
  if (invite) {
    showJoin({ name: invite.sub, room, note: `You are invited as “${invite.sub}”. Pick the room to join.` });
    return;
  }
  const name = decision.ask || '';
  // On an invitation-only server, say so before the first attempt fails.
  const note = decision.note
    || (config.auth === 'token' && !savedInvite() ? 'This server is invitation-only: open the invite link you were given to join.' : '');
  showJoin({ name, room, note, error: name && decision.note ? validateName(name, 'name', 32) : '' });
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
  // An invite link opened in this tab on the address it already shows only
  // changes the fragment: no reload, no popstate. Other fragments (the skip
  // link) are not ours.
  window.addEventListener('hashchange', () => { if (location.hash.includes('token=')) route(); });
}
