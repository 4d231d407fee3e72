// roomcast browser client: the entry point. It wires the modules in js/
// together and shows the screen the address asks for.
//
// No framework, no build step, no CDN, nothing inline: the page runs under
// a strict CSP and shows untrusted text from other people, so user data
// reaches the DOM only as text and attributes (js/dom.js says how).
//
// js/ — one idea per module:
//   config       server settings and client timings
//   dom          element helpers and the page's fixed elements
//   format       sizes, times, avatar colours
//   store        what the browser remembers: recent rooms, drafts, own reactions
//   identity     who this browser is (name, claim); plain links never decide it
//   token        invitations: #token= links, kept and presented (token mode)
//   refusal      why a connection was refused (the preflight), in words
//   state        the current room session
//   connection   the WebSocket: backoff, resume, heartbeat, offline
//   events       server events applied to the page
//   messages     message elements, grouping, updates
//   richtext     text to DOM: code, links, mentions, emoji-only
//   composer     sending, pending and offline messages, drafts
//   uploads      attachments: progress, previews, one sentence per refusal
//   edit         editing a message in place
//   actions      react / edit / delete / unfold; tap and long-press on touch
//   reactions    a message's reactions: whole or sampled, and which are ours
//   picker       the reaction picker (+ emoji-data, the searchable set)
//   scroll       following the newest message, the pill, the "New" line
//   history      scrollback: older pages, and gaps a reconnect left
//   pages        reading one page of a room's history, with a deadline
//   resync       after a resume: edits, reactions, deletes missed on screen
//   attention    title count, announcements, mention notifications
//   presence     who is online, join/leave lines without reconnect churn
//   typing       the typing indicator
//   rooms        recent rooms, active public rooms, the invite link
//   drawer       the phone sidebar drawer
//   listnav      the message list as one Tab stop with arrow keys
//   navigation   join form vs room, the address, switching rooms
//   notices      toasts and system lines

import { initActions } from './js/actions.js';
import { initAttention } from './js/attention.js';
import { autoGrow, initComposer, updateSendState } from './js/composer.js';
import { initConnection, onConnection, scheduledDelay } from './js/connection.js';
import { initDrawer } from './js/drawer.js';
import { editLast } from './js/edit.js';
import { handleEvent } from './js/events.js';
import { initHistory } from './js/history.js';
import { initListNav } from './js/listnav.js';
import { initNavigation, refuseToJoin, route } from './js/navigation.js';
import { initPicker } from './js/picker.js';
import { connectionDropped as presenceDropped } from './js/presence.js';
import { connectionDropped as composerDropped } from './js/composer.js';
import { wholeDropped } from './js/reactions.js';
import { resyncDropped } from './js/resync.js';
import { initRooms } from './js/rooms.js';
import { initScroll } from './js/scroll.js';
import { initUploads } from './js/uploads.js';
import { state } from './js/state.js';

onConnection({
  event: handleEvent,
  dropped() { presenceDropped(); composerDropped(); resyncDropped(); wholeDropped(); },
  refused: refuseToJoin,
});
initConnection();
initScroll();
initHistory();
initComposer({ editLast });
initUploads();
initActions();
initPicker();
initListNav();
initDrawer();
initRooms();
initAttention();
initNavigation();

// Debug/test hook: read-only view of connection facts (no message data).
Object.defineProperty(window, 'roomcast', {
  value: Object.freeze({
    get state() { return state.connState; },
    get lastSeq() { return state.lastSeq; },
    /** The delay (ms) of the last reconnect scheduled. */
    get retryDelay() { return scheduledDelay(); },
  }),
});

updateSendState();
autoGrow();
route();
