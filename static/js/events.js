// What the server says (PROTOCOL.md "Server → client events"), applied to
// the page. `welcome` is the one with decisions: resume or start over, what
// to resend, what to clear, what is news.

import { els } from './dom.js';
import { welcomed } from './connection.js';
import { state } from './state.js';
import { rememberRoom } from './store.js';
import { keepClaim } from './identity.js';
import {
  addMessage, archiveAll, arrivedWhileDisconnected, confirmPendingFromHistory, deleteMessage, updateMessage,
} from './messages.js';
import { applyReactionUpdate, applyWholeReactions, wholeRefused } from './reactions.js';
import {
  connectionBack as composerBack, markFailed, markGone, updateSendState,
} from './composer.js';
import { connectionBack as presenceBack, onPresenceChange, setOnline } from './presence.js';
import { showTyping } from './typing.js';
import { editApplied, editRefused, forgetWaitingEdits } from './edit.js';
import { ERROR_TEXT, clearToasts, systemNotice, toast } from './notices.js';
import { followingBottom, isNearBottom, missedArrived, scrollToBottom } from './scroll.js';
import { updateTitle } from './attention.js';
import { refreshActiveRooms, renderRecentRooms, roomHref, showRoomLock } from './rooms.js';
import { heardWhileLoading, historyWelcome } from './history.js';
import { checkAnswered, resyncAfterResume, touchedLive } from './resync.js';

export function handleEvent(ev) {
  switch (ev.type) {
    case 'welcome': onWelcome(ev); break;
    case 'message': addMessage(ev, { live: true }); break;
    case 'message_updated': heard(ev); updateMessage(ev); editApplied(ev); break;
    case 'message_deleted': heard(ev); deleteMessage(ev); break;
    case 'reaction_update': heard(ev); applyReactionUpdate(ev); break;
    case 'reactions': checkAnswered(ev); applyWholeReactions(ev); break;
    case 'join':
    case 'leave': onPresenceChange(ev); break;
    case 'presence': setOnline(ev.online, ev.online_count); break;
    case 'typing': showTyping(ev.user); break;
    case 'error': onServerError(ev); break;
    case 'auth_ok': toast('Your invitation was renewed.', { kind: 'ok', timeout: 3000 }); break;
    default: break; // pong, and whatever newer servers add
  }
}

/** A live change to a message: a page on its way (history, resync) must not undo it. */
function heard(ev) {
  touchedLive(ev.message_id);
  heardWhileLoading(ev);
}

/** The server's spelling of the room (it may treat `lobby` and `Lobby` as one). */
function adoptRoomName(name) {
  if (typeof name !== 'string' || !name || name === state.roomTitle) return;
  state.roomTitle = name;
  els.roomTitle.textContent = name;
  showRoomLock(name);
  rememberRoom(name);
  renderRecentRooms();
  updateTitle();
  history.replaceState(history.state, '', roomHref(name));
}

function onWelcome(ev) {
  const resuming = state.hasConnected;
  const after = state.lastSeq;
  // Open mode: a connection that came without a claim is given one; keep it
  // for every later connection, in every tab and room.
  if (typeof ev.claim === 'string' && ev.claim) keepClaim(ev.claim);
  welcomed(ev.claim);
  forgetWaitingEdits();
  adoptRoomName(ev.room);
  setOnline(ev.online, ev.online_count);

  const history = Array.isArray(ev.history) ? ev.history : [];
  // The room's newest seq on the server. `last_seq` is roomcast's addition; fall
  // back to what the history tells us.
  const serverLast = typeof ev.last_seq === 'number'
    ? ev.last_seq
    : (history.length ? history[history.length - 1].seq : null);

  const reset = resuming && after > 0 && serverLast !== null && serverLast < after;
  if (reset) {
    // The server no longer knows the messages we have (it restarted, or the
    // room was emptied and dropped): keep them for reading, count seq from
    // the server's numbering again, offer no actions on forgotten messages.
    state.lastSeq = serverLast;
    archiveAll();
    systemNotice('The server was restarted. Messages above are no longer stored on the server.', { kind: 'warn' });
  }

  confirmPendingFromHistory(history);
  // Following along when the link dropped (a banner may have shrunk the list since).
  const stick = isNearBottom() || (resuming && followingBottom());
  // A resume brings what was posted while the connection was down (past
  // the seq this page had seen): news, like live messages.
  const missed = [];
  for (const m of history) {
    const li = addMessage(m, { live: false });
    if (li && resuming && !reset && typeof m.seq === 'number' && m.seq > after) missed.push({ m, li });
  }
  const news = arrivedWhileDisconnected(missed);
  // Older pages, and the hole a gap leaves, are fetched by scrollback.
  historyWelcome({ resuming, after, reset, gap: Boolean(ev.gap), history, serverLast });
  if (news.length) missedArrived(news, stick);
  else if (!resuming || stick) scrollToBottom();

  if (resuming) {
    if (state.closeReason) toast('Reconnected.', { kind: 'ok', timeout: 3000 });
  } else if (history.length === 0) {
    systemNotice(`This is the start of #${state.roomTitle}. Say hello!`);
  }
  // The welcome brought the room up to its newest seq (older messages, and
  // a gap's hole, come by scrollback): a resume asks for what follows it,
  // even where nothing was shown (every message deleted, or a room that
  // numbers on after leaving the server's memory, which a resume from 0
  // would be told is a gap).
  if (serverLast !== null && serverLast > state.lastSeq) state.lastSeq = serverLast;
  state.hasConnected = true;
  state.closeReason = '';
  state.serverRestarting = false;
  clearToasts('offline');
  // Does the history hold every message since we last saw the room? Then a
  // message of ours that is not in it certainly did not arrive.
  const fromStart = history.length === 0 || history[0].seq <= 1;
  const covered = !ev.gap && !reset && (after > 0 || fromStart);
  presenceBack();
  composerBack({ covered, serverLast });
  updateSendState();
  if (!resuming) refreshActiveRooms({ force: true }); // our own arrival changed the counts
  // What changed meanwhile in the messages we already had (resync.js).
  if (resuming && !reset && after > 0) resyncAfterResume(after);
}

function onServerError(ev) {
  if (ev.ref === 'auth') {
    // A new invitation for this connection was refused; the current one stays.
    toast('The new invitation was not accepted for this room (it may be for another room, expired or damaged); the current one stays in use until it expires.');
    return;
  }
  // A check of a message a resume's page left out (resync.js) is no news,
  // nor is a whole list asked for when someone looked (reactions.js).
  if (ev.ref === 'reactions' && (checkAnswered(ev) || wholeRefused(ev))) return;
  const text = ERROR_TEXT[ev.code] || ev.message || 'The server refused that request.';
  // Every refusal of a request names its type in `ref`, the rate limit's
  // too; an echo arriving later would un-fail a message anyway (matched by
  // client_id).
  if (ev.ref === 'message') {
    // The rate limit's refusal names the post (it is sent at once, ahead of
    // answers still on their way from the backbone); others come in order,
    // so the oldest message still waiting for its echo is the one refused.
    const named = typeof ev.client_id === 'string' ? state.pending.get(ev.client_id) : undefined;
    const first = named || [...state.pending.values()].find((p) => p.sent && !p.failed);
    if (first && ev.code === 'unknown_message') markGone(first);
    else if (first && !first.failed) markFailed(first, text);
  }
  // A refused edit goes back in its box, with the reason there.
  if (ev.ref === 'edit' && editRefused(text, typeof ev.message_id === 'string' ? ev.message_id : null)) return;
  toast(text);
}
