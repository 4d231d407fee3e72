// roomcast browser client.
//
// One module, no dependencies, no build step. It talks the protocol in
// PROTOCOL.md over one WebSocket per room and uploads files with POST /upload.
//
// Rules this file keeps, because the page runs under a strict CSP and shows
// untrusted text from other people:
//   * user data only ever reaches the DOM through textContent / attributes of
//     elements we create; never innerHTML;
//   * links are built as <a> elements only for http(s) URLs;
//   * no inline styles as attributes; looks come from classes in style.css.

'use strict';

// ---------------------------------------------------------------------------
// Configuration from the server (<meta name="roomcast-config">).

const DEFAULT_CONFIG = {
  ws_path: '/ws',
  upload_path: '/upload',
  max_message_chars: 4000,
  max_upload_bytes: 10 * 1024 * 1024,
  messages_per_second: 10,
  history: 50,
};

function readConfig() {
  const meta = document.querySelector('meta[name="roomcast-config"]');
  try {
    // The browser has already decoded the HTML-attribute escaping.
    return { ...DEFAULT_CONFIG, ...JSON.parse(meta ? meta.content : '{}') };
  } catch {
    // e.g. the template opened without the server filling in {{config}}.
    return { ...DEFAULT_CONFIG };
  }
}

const config = readConfig();

const REACTION_CHOICES = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀'];
const GROUP_WINDOW_MS = 5 * 60 * 1000; // consecutive messages within this join one group
const TYPING_SEND_EVERY_MS = 2000; // matches the server's per-user typing throttle
const TYPING_SHOW_MS = 4000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15000;
const STORAGE_USER = 'roomcast.user';
const STORAGE_ROOMS = 'roomcast.rooms';

// ---------------------------------------------------------------------------
// Small DOM helpers.

const $ = (id) => document.getElementById(id);

/** Creates an element with classes, attributes and text; never parses HTML. */
function h(tag, { cls, text, attrs, testid } = {}, children = []) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = text;
  if (testid) el.dataset.testid = testid;
  if (attrs) for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) if (c) el.append(c);
  return el;
}

function randomId() {
  // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit',
});
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

/** Time in the reader's locale; the date too when it is not today. */
function formatTime(date) {
  const today = new Date();
  return date.toDateString() === today.toDateString() ? timeFmt.format(date) : dateTimeFmt.format(date);
}

/** A stable colour class for a name, so people are recognisable at a glance. */
function hueClass(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hue-${hash % 12}`;
}

function initials(name) {
  const first = Array.from(name.trim())[0] || '?';
  return first.toUpperCase();
}

/** Same rules the server applies (PROTOCOL.md), checked before we try to connect. */
function validateName(value, what, max) {
  const v = value.trim();
  if (!v) return `Please enter a ${what}.`;
  if (Array.from(v).length > max) return `The ${what} can be at most ${max} characters.`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(v)) return `The ${what} cannot contain control characters.`;
  if (what === 'room' && v.includes('/')) return 'The room name cannot contain “/”.';
  return '';
}

// ---------------------------------------------------------------------------
// Safe text rendering with clickable links.

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;

/** Appends `text` to `parent` as text nodes, turning http(s) URLs into links. */
function appendLinkified(parent, text) {
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let url = match[0];
    // Trailing punctuation usually belongs to the sentence, not the URL.
    const trail = /[.,;:!?)\]}]+$/.exec(url);
    if (trail && !(trail[0].startsWith(')') && url.includes('('))) url = url.slice(0, -trail[0].length);
    const start = match.index;
    parent.append(document.createTextNode(text.slice(last, start)));
    let parsed = null;
    try { parsed = new URL(url); } catch { /* not a URL after all */ }
    if (parsed && (parsed.protocol === 'http:' || parsed.protocol === 'https:')) {
      parent.append(h('a', {
        text: url,
        attrs: { href: parsed.href, target: '_blank', rel: 'noopener noreferrer' },
      }));
    } else {
      parent.append(document.createTextNode(url));
    }
    last = start + url.length;
  }
  parent.append(document.createTextNode(text.slice(last)));
}

/** True when `url` points at this server (attachments must never load from elsewhere). */
function sameOriginUrl(url) {
  try {
    const u = new URL(url, location.href);
    return u.origin === location.origin && (u.protocol === 'http:' || u.protocol === 'https:') ? u : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// State.

const state = {
  room: '',
  user: '',
  ws: null,
  connState: 'idle', // idle | connecting | connected | reconnecting | offline
  hasConnected: false, // got a welcome on this room at least once
  lastSeq: 0, // highest seq seen in this room
  attempts: 0, // failed attempts since the last welcome
  retryTimer: 0,
  retryAt: 0,
  countdownTimer: 0,
  closeReason: '', // why the last connection closed, in words
  serverRestarting: false, // closed with 1001 and not welcomed since
  messages: new Map(), // message_id -> { data, el }
  pending: new Map(), // client_id -> { content, attachment, el, sent: bool }
  online: [],
  onlineCount: 0,
  typing: new Map(), // user -> timeout id
  lastTypingSent: 0,
  unread: 0,
  upload: null, // { xhr, file, result, done }
  editing: null, // message_id being edited inline
};

// ---------------------------------------------------------------------------
// Elements.

const els = {
  joinView: $('join-view'), joinForm: $('join-form'), joinName: $('join-name'),
  joinRoom: $('join-room'), joinError: $('join-error'),
  chatView: $('chat-view'), roomTitle: $('room-title'), onlineSummary: $('online-summary'),
  connStatus: $('conn-status'), connLabel: $('conn-label'),
  banner: $('conn-banner'), bannerText: $('conn-banner-text'), retryNow: $('retry-now'),
  sidebar: $('sidebar'), sidebarToggle: $('sidebar-toggle'), meName: $('me-name'),
  changeName: $('change-name'), roomList: $('room-list'), roomForm: $('room-form'),
  roomInput: $('room-input'), onlineList: $('online-list'), onlineCountSide: $('online-count-side'),
  chat: $('chat'), list: $('messages'), newPill: $('new-pill'), dropOverlay: $('drop-overlay'),
  typing: $('typing'), composer: $('composer'), input: $('composer-input'),
  sendBtn: $('send-btn'), attachInput: $('attach-input'), composerError: $('composer-error'),
  charCount: $('char-count'),
  uploadBox: $('upload-box'), uploadName: $('upload-name'), uploadProgress: $('upload-progress'),
  uploadCancel: $('upload-cancel'),
  picker: $('picker'), toasts: $('toasts'), announcer: $('announcer'),
};

// ---------------------------------------------------------------------------
// Notices: transient toasts, and system lines inside the message log.

function toast(text, { kind = 'error', timeout = 8000 } = {}) {
  // The same notice again (e.g. one per refused request) is not news.
  for (const t of els.toasts.children) if (t.dataset.text === text) return t;
  const close = h('button', { cls: 'toast-close', attrs: { type: 'button', 'aria-label': 'Dismiss' }, text: '✕' });
  const el = h('div', { cls: `toast toast-${kind}`, testid: 'toast', attrs: { role: kind === 'error' ? 'alert' : 'status' } },
    [h('span', { text }), close]);
  el.dataset.text = text;
  const remove = () => el.remove();
  close.addEventListener('click', remove);
  els.toasts.append(el);
  while (els.toasts.children.length > 4) els.toasts.firstElementChild.remove();
  if (timeout) setTimeout(remove, timeout);
  return el;
}

/** A line in the log such as "alice joined"; `action` adds a button. */
function systemNotice(text, { kind = 'info', action } = {}) {
  const stick = isNearBottom();
  const li = h('li', { cls: `notice notice-${kind}`, testid: 'notice' }, [h('span', { text })]);
  if (action) {
    const b = h('button', { cls: 'btn-link', text: action.label, attrs: { type: 'button' } });
    b.addEventListener('click', action.run);
    li.append(' ', b);
  }
  insertBeforePending(li);
  if (stick) scrollToBottom();
  return li;
}

const ERROR_TEXT = {
  bad_json: 'The server could not read a request from this page.',
  unknown_type: 'The server does not support that action.',
  invalid_field: 'That request was not valid.',
  too_long: `Messages can be at most ${config.max_message_chars} characters.`,
  unknown_message: 'That message is no longer available (it may be too old or deleted).',
  forbidden: 'You can only change your own messages.',
  rate_limited: 'You are sending too fast. Wait a moment and try again.',
  too_many_reactions: 'That message has as many reactions as it can hold.',
  bad_attachment: 'The attachment could not be found on the server. Try uploading it again.',
  unsupported: 'The server does not accept that kind of data.',
  unavailable: 'The chat is briefly unavailable while the server reconnects. Try again in a moment.',
};

// ---------------------------------------------------------------------------
// Connection.

function wsUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let url = `${proto}//${location.host}${config.ws_path}/${encodeURIComponent(state.room)}/${encodeURIComponent(state.user)}`;
  if (state.lastSeq > 0) url += `?after=${state.lastSeq}`;
  return url;
}

function connect() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
  if (state.ws) detachSocket(state.ws, 1000);
  setConnState(state.hasConnected ? 'reconnecting' : 'connecting');
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch (err) {
    // Only a malformed URL throws here; treat it like a failed attempt.
    state.closeReason = `Could not open a connection (${err.message}).`;
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  ws.addEventListener('message', (ev) => {
    if (state.ws !== ws) return;
    let event;
    try { event = JSON.parse(ev.data); } catch { return; }
    handleEvent(event);
  });
  ws.addEventListener('close', (ev) => {
    if (state.ws !== ws) return; // a socket we already let go of (room switch)
    state.ws = null;
    // After a shutdown (1001) the retries fail (1006) until the server is
    // back; it is still restarting, so keep saying that.
    if (ev.code === 1001) state.serverRestarting = true;
    state.closeReason = state.serverRestarting && ev.code === 1006
      ? describeClose(1001) : describeClose(ev.code, ev.reason);
    markInFlightUnsent();
    scheduleReconnect(ev.code);
  });
  // 'error' is always followed by 'close'; nothing to do here.
}

/** Stops listening to a socket and closes it, e.g. when switching rooms. */
function detachSocket(ws, code) {
  if (state.ws === ws) state.ws = null;
  try { ws.close(code); } catch { /* already closed */ }
}

/** Close codes the server uses (docs/protocol-notes.md), in words a user can act on. */
function describeClose(code, reason) {
  switch (code) {
    case 1000: return 'The connection was closed.';
    case 1001: return 'The server is restarting.';
    case 1008: return 'You were disconnected for sending too many messages too quickly.';
    case 1009: return 'The last message was too large for the server.';
    case 1011: return 'The server hit an error.';
    case 1013: return 'The connection fell behind (slow network) or the server is busy.';
    default:
      if (!navigator.onLine) return 'You are offline.';
      return reason ? `Connection lost (${reason}).` : 'Connection lost.';
  }
}

function scheduleReconnect(code) {
  state.attempts += 1;
  // Exponential backoff with jitter, so a restarted server is not hit by every
  // client at the same instant. Being told we flooded earns a longer pause.
  const base = code === 1008 ? 5000 : BACKOFF_BASE_MS;
  const cap = Math.min(BACKOFF_MAX_MS, base * 2 ** Math.min(state.attempts - 1, 10));
  const delay = Math.round(cap / 2 + Math.random() * (cap / 2));
  state.retryAt = Date.now() + delay;
  setConnState(navigator.onLine ? 'reconnecting' : 'offline');
  updateCountdown();
  state.countdownTimer = setInterval(updateCountdown, 1000);
  state.retryTimer = setTimeout(connect, delay);
}

function updateCountdown() {
  const secs = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
  const next = navigator.onLine
    ? (secs > 0 ? `Reconnecting in ${secs} s…` : 'Reconnecting…')
    : 'Waiting for the network…';
  els.bannerText.textContent = `${state.closeReason} ${next}`.trim();
}

function setConnState(s) {
  state.connState = s;
  els.connStatus.dataset.state = s;
  els.connLabel.textContent = {
    idle: 'Not connected', connecting: 'Connecting…', connected: 'Connected',
    reconnecting: 'Reconnecting…', offline: 'Offline',
  }[s];
  const troubled = s === 'reconnecting' || s === 'offline';
  els.banner.hidden = !troubled;
  if (!troubled) clearInterval(state.countdownTimer);
  document.body.classList.toggle('is-offline', troubled);
}

function send(obj) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || state.connState !== 'connected') return false;
  state.ws.send(JSON.stringify(obj));
  return true;
}

els.retryNow.addEventListener('click', () => { state.attempts = 0; connect(); });
window.addEventListener('online', () => {
  if (state.connState === 'reconnecting' || state.connState === 'offline') { state.attempts = 0; connect(); }
});
window.addEventListener('offline', () => {
  if (state.connState === 'reconnecting') setConnState('offline');
});

// ---------------------------------------------------------------------------
// Server events.

function handleEvent(ev) {
  switch (ev.type) {
    case 'welcome': onWelcome(ev); break;
    case 'message': addMessage(ev, { live: true }); break;
    case 'message_updated': updateMessage(ev); break;
    case 'message_deleted': deleteMessage(ev); break;
    case 'reaction_update': updateReactions(ev.message_id, ev.reactions); break;
    case 'join':
    case 'leave': onPresenceChange(ev); break;
    case 'presence': setOnline(ev.online, ev.online_count); break;
    case 'typing': showTyping(ev.user); break;
    case 'error': onServerError(ev); break;
    case 'pong': break;
    default: break; // newer servers may send more; ignore what we do not know
  }
}

function onWelcome(ev) {
  const resuming = state.hasConnected;
  const after = state.lastSeq;
  state.attempts = 0;
  setConnState('connected');
  setOnline(ev.online, ev.online_count);

  const history = Array.isArray(ev.history) ? ev.history : [];
  // The room's newest seq on the server. `last_seq` is roomcast's addition; fall
  // back to what the history tells us.
  const serverLast = typeof ev.last_seq === 'number'
    ? ev.last_seq
    : (history.length ? history[history.length - 1].seq : null);

  if (resuming && after > 0 && serverLast !== null && serverLast < after) {
    // The server no longer knows the messages we have (it restarted, or the
    // room was emptied and dropped). Keep what is on screen for reading, but
    // count seq from the server's numbering again, and do not offer actions
    // on messages the server has forgotten.
    state.lastSeq = serverLast;
    for (const { el } of state.messages.values()) el.classList.add('msg--archived');
    state.messages.clear();
    systemNotice('The server was restarted. Messages above are no longer stored on the server.', { kind: 'warn' });
  }

  if (ev.gap) {
    systemNotice('Some messages were missed while you were disconnected.', {
      kind: 'warn',
      action: { label: 'Reload the conversation', run: reloadRoom },
    });
  }

  confirmPendingFromHistory(history);
  const stick = isNearBottom();
  for (const m of history) addMessage(m, { live: false });
  if (!resuming || stick) scrollToBottom(!resuming);

  if (resuming) {
    if (state.closeReason) toast('Reconnected.', { kind: 'ok', timeout: 3000 });
  } else if (history.length === 0) {
    systemNotice(`This is the start of #${state.room}. Say hello!`);
  }
  state.hasConnected = true;
  state.closeReason = '';
  state.serverRestarting = false;
  resendUnsent();
  updateSendState();
}

function onPresenceChange(ev) {
  if (Array.isArray(ev.online)) setOnline(ev.online, ev.online_count);
  else setOnline(null, ev.online_count);
  if (ev.user === state.user) return; // our own join after (re)connecting is not news
  systemNotice(`${ev.user} ${ev.type === 'join' ? 'joined' : 'left'}`, { kind: 'presence' });
  if (ev.type === 'leave') clearTyping(ev.user);
}

function setOnline(names, count) {
  if (Array.isArray(names)) state.online = [...names].sort((a, b) => a.localeCompare(b));
  state.onlineCount = typeof count === 'number' ? count : state.online.length;
  els.onlineSummary.textContent = `${state.onlineCount} online`;
  els.onlineCountSide.textContent = String(state.onlineCount);
  const items = state.online.map((name) => h('li', { cls: 'person' }, [
    h('span', { cls: `avatar avatar-small ${hueClass(name)}`, text: initials(name), attrs: { 'aria-hidden': 'true' } }),
    h('span', { cls: 'person-name', text: name }),
    name === state.user ? h('span', { cls: 'you-tag', text: '(you)' }) : null,
  ]));
  if (!Array.isArray(names) && state.online.length === 0) {
    items.push(h('li', { cls: 'person muted', text: 'Too many people to list.' }));
  }
  els.onlineList.replaceChildren(...items);
}

function onServerError(ev) {
  const text = ERROR_TEXT[ev.code] || ev.message || 'The server refused that request.';
  // Rate-limit errors carry no `ref`; a refused message is the likeliest case
  // and an echo arriving later would un-fail it anyway (matched by client_id).
  if (ev.ref === 'message' || (!ev.ref && ev.code === 'rate_limited')) {
    // Requests are answered in order, so the oldest message still waiting for
    // its echo is the one that was refused.
    const first = [...state.pending.values()].find((p) => p.sent && !p.failed);
    if (first) markFailed(first, text);
  }
  toast(text);
}

// ---------------------------------------------------------------------------
// Messages.

function isOwn(m) { return m.user === state.user; }

function messageTime(m) {
  const d = new Date(m.timestamp);
  return Number.isNaN(d.getTime()) ? new Date() : d;
}

/** Builds the element for a message (confirmed or pending). */
function buildMessage(m, { pending = false } = {}) {
  const date = messageTime(m);
  const li = h('li', { cls: 'msg', testid: 'message' });
  li.dataset.author = m.user;
  if (m.message_id) li.dataset.id = m.message_id;
  if (isOwn(m)) li.classList.add('msg--own');
  if (pending) li.classList.add('msg--pending');

  const avatar = h('span', { cls: `avatar ${hueClass(m.user)}`, text: initials(m.user), attrs: { 'aria-hidden': 'true' } });
  const time = h('time', { cls: 'msg-time', text: formatTime(date), attrs: { datetime: date.toISOString(), title: fullFmt.format(date) } });
  const head = h('div', { cls: 'msg-head' }, [
    h('span', { cls: `msg-author ${hueClass(m.user)}`, text: m.user, testid: 'message-author' }),
    time,
    h('span', { cls: 'msg-edited', text: '(edited)', testid: 'message-edited' }),
    h('span', { cls: 'msg-status', testid: 'message-status' }),
  ]);
  const body = h('div', { cls: 'msg-text', testid: 'message-text' });
  const main = h('div', { cls: 'msg-main' }, [head, body,
    h('div', { cls: 'msg-attachment' }),
    h('div', { cls: 'msg-reactions', attrs: { role: 'group', 'aria-label': 'Reactions' } })]);

  const actions = h('div', { cls: 'msg-actions', attrs: { role: 'group', 'aria-label': 'Message actions' } }, [
    h('button', { cls: 'act', text: '☺+', testid: 'add-reaction', attrs: { type: 'button', 'data-action': 'react', 'aria-label': 'Add reaction', title: 'Add reaction', 'aria-haspopup': 'dialog' } }),
    isOwn(m) ? h('button', { cls: 'act', text: 'Edit', testid: 'edit-message', attrs: { type: 'button', 'data-action': 'edit' } }) : null,
    isOwn(m) ? h('button', { cls: 'act act-danger', text: 'Delete', testid: 'delete-message', attrs: { type: 'button', 'data-action': 'delete' } }) : null,
  ]);
  li.append(avatar, main, actions);
  fillMessage(li, m);
  return li;
}

/** Writes a message's content, attachment, reactions and edit mark into its element. */
function fillMessage(li, m) {
  const body = li.querySelector('.msg-text');
  body.replaceChildren();
  appendLinkified(body, m.content || '');
  body.hidden = !m.content;
  li.classList.toggle('msg--edited', Boolean(m.edited_at));
  renderAttachment(li.querySelector('.msg-attachment'), m.attachment);
  renderReactions(li, m.reactions || {});
}

function renderAttachment(box, att) {
  box.replaceChildren();
  if (!att || !att.url) { box.hidden = true; return; }
  const url = sameOriginUrl(att.url);
  const name = att.name || 'attachment';
  box.hidden = false;
  if (!url) { box.append(h('span', { cls: 'muted', text: `${name} (unavailable)` })); return; }
  const type = String(att.content_type || '');
  const caption = h('a', {
    cls: 'file-link', testid: 'attachment-link',
    attrs: { href: url.href, target: '_blank', rel: 'noopener noreferrer', download: name },
  }, [h('span', { cls: 'file-icon', text: '📄', attrs: { 'aria-hidden': 'true' } }),
    h('span', { cls: 'file-name', text: name }),
    typeof att.size === 'number' ? h('span', { cls: 'file-size', text: formatBytes(att.size) }) : null]);
  if (type.startsWith('image/')) {
    const img = h('img', { cls: 'att-media', testid: 'attachment-image', attrs: { src: url.href, alt: name, loading: 'lazy' } });
    // Keep the log pinned to the bottom when an image finishes loading.
    img.addEventListener('load', () => { if (box.closest('.messages') && wasAtBottom) scrollToBottom(); });
    box.append(h('a', { cls: 'att-image-link', attrs: { href: url.href, target: '_blank', rel: 'noopener noreferrer' } }, [img]));
  } else if (type.startsWith('video/')) {
    box.append(h('video', { cls: 'att-media', testid: 'attachment-video', attrs: { src: url.href, controls: '', preload: 'metadata', 'aria-label': name } }), caption);
  } else if (type.startsWith('audio/')) {
    box.append(h('audio', { cls: 'att-audio', testid: 'attachment-audio', attrs: { src: url.href, controls: '', preload: 'metadata', 'aria-label': name } }), caption);
  } else {
    box.append(caption);
  }
}

function renderReactions(li, reactions) {
  const box = li.querySelector('.msg-reactions');
  const buttons = [];
  for (const [emoji, users] of Object.entries(reactions)) {
    if (!Array.isArray(users) || users.length === 0) continue;
    const mine = users.includes(state.user);
    const who = users.join(', ');
    const b = h('button', {
      cls: 'reaction', testid: 'reaction',
      attrs: {
        type: 'button', 'data-action': 'toggle-reaction', 'data-emoji': emoji,
        'aria-pressed': String(mine), 'data-users': who, title: who,
        'aria-label': `${emoji} ${users.length}: ${who}. ${mine ? 'Remove your reaction' : 'React with ' + emoji}`,
      },
    }, [h('span', { cls: 'reaction-emoji', text: emoji }), h('span', { cls: 'reaction-count', testid: 'reaction-count', text: String(users.length) })]);
    buttons.push(b);
  }
  box.replaceChildren(...buttons);
  box.hidden = buttons.length === 0;
}

/** Puts `el` before the first pending message, so pending ones stay last. */
function insertBeforePending(el) {
  const firstPending = els.list.querySelector(':scope > .msg--pending');
  els.list.insertBefore(el, firstPending);
  regroup(el);
  if (el.nextElementSibling) regroup(el.nextElementSibling);
}

/** Marks `el` as a continuation when it follows the same author closely. */
function regroup(el) {
  if (!el.classList.contains('msg')) return;
  const prev = el.previousElementSibling;
  let cont = false;
  if (prev && prev.classList.contains('msg') && !prev.classList.contains('msg--deleted')
      && prev.dataset.author === el.dataset.author) {
    const a = Date.parse(prev.querySelector('time').getAttribute('datetime'));
    const b = Date.parse(el.querySelector('time').getAttribute('datetime'));
    cont = b - a < GROUP_WINDOW_MS;
  }
  el.classList.toggle('msg--cont', cont);
}

function addMessage(m, { live }) {
  if (!m || typeof m.message_id !== 'string') return;
  if (typeof m.seq === 'number' && m.seq > state.lastSeq) state.lastSeq = m.seq;
  if (state.messages.has(m.message_id)) return; // already shown (resume overlap)

  // Our own message coming back: confirm the pending copy in place.
  const pending = m.client_id && state.pending.get(m.client_id);
  if (pending && isOwn(m)) {
    confirmPending(pending, m);
    return;
  }

  const stick = isNearBottom();
  const li = buildMessage(m);
  state.messages.set(m.message_id, { data: m, el: li });
  insertBeforePending(li);

  if (live && !isOwn(m)) {
    announce(`${m.user}: ${m.content || (m.attachment ? `sent ${m.attachment.name || 'a file'}` : '')}`);
    if (document.hidden) { state.unread += 1; updateTitle(); }
    clearTyping(m.user);
  }
  if (stick || isOwn(m)) scrollToBottom();
  else if (live) showNewPill();
}

function confirmPending(p, m) {
  state.pending.delete(p.clientId);
  const li = p.el;
  li.classList.remove('msg--pending', 'msg--failed');
  li.dataset.id = m.message_id;
  const date = messageTime(m);
  const time = li.querySelector('time');
  time.textContent = formatTime(date);
  time.setAttribute('datetime', date.toISOString());
  time.title = fullFmt.format(date);
  li.querySelector('.msg-status').textContent = '';
  li.querySelector('.msg-failed-actions')?.remove();
  fillMessage(li, m);
  state.messages.set(m.message_id, { data: m, el: li });
  // Others' messages may have been inserted before this one meanwhile; keep it
  // where it is (it stays after them, which matches the server's order).
  regroup(li);
  if (li.nextElementSibling) regroup(li.nextElementSibling);
}

/**
 * History replayed after a reconnect carries no client_id, so a message we sent
 * just before the connection dropped is recognised by author and content.
 */
function confirmPendingFromHistory(history) {
  for (const p of [...state.pending.values()]) {
    if (!p.sent) continue;
    const hit = history.find((m) => isOwn(m) && !state.messages.has(m.message_id)
      && (m.content || '') === p.content
      && ((m.attachment && m.attachment.url) || '') === ((p.attachment && p.attachment.url) || ''));
    if (hit) confirmPending(p, hit);
  }
}

function updateMessage(m) {
  const entry = state.messages.get(m.message_id);
  if (!entry) return;
  entry.data = { ...entry.data, ...m };
  fillMessage(entry.el, entry.data);
  if (state.editing === m.message_id) entry.el.querySelector('.msg-text').hidden = true;
}

function deleteMessage(ev) {
  const entry = state.messages.get(ev.message_id);
  if (!entry) return;
  state.messages.delete(ev.message_id);
  if (state.editing === ev.message_id) state.editing = null;
  const li = entry.el;
  // A tombstone keeps the conversation readable ("what was that a reply to?").
  li.className = 'msg msg--deleted';
  li.replaceChildren(h('span', { cls: 'msg-tombstone', text: `${entry.data.user} deleted a message`, testid: 'message-deleted' }));
  delete li.dataset.id;
  if (li.nextElementSibling) regroup(li.nextElementSibling);
}

function updateReactions(id, reactions) {
  const entry = state.messages.get(id);
  if (!entry || !reactions) return;
  entry.data.reactions = reactions;
  renderReactions(entry.el, reactions);
}

function announce(text) {
  // Replace rather than append so the live region never grows without bound.
  els.announcer.textContent = text;
}

function updateTitle() {
  document.title = `${state.unread ? `(${state.unread}) ` : ''}#${state.room} · roomcast`;
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) { state.unread = 0; updateTitle(); }
});

// ---------------------------------------------------------------------------
// Scrolling: follow new messages only when the reader is already at the bottom.

let wasAtBottom = true;

function isNearBottom() {
  const l = els.list;
  return l.scrollHeight - l.scrollTop - l.clientHeight < 60;
}

function scrollToBottom(instant = true) {
  els.list.scrollTop = els.list.scrollHeight;
  wasAtBottom = true;
  els.newPill.hidden = true;
  void instant;
}

function showNewPill() {
  els.newPill.hidden = false;
}

els.list.addEventListener('scroll', () => {
  wasAtBottom = isNearBottom();
  if (wasAtBottom) els.newPill.hidden = true;
}, { passive: true });
els.newPill.addEventListener('click', () => { scrollToBottom(); els.input.focus(); });

// ---------------------------------------------------------------------------
// Typing indicator.

function showTyping(user) {
  if (!user || user === state.user) return;
  clearTimeout(state.typing.get(user));
  state.typing.set(user, setTimeout(() => clearTyping(user), TYPING_SHOW_MS));
  renderTyping();
}

function clearTyping(user) {
  if (!state.typing.has(user)) return;
  clearTimeout(state.typing.get(user));
  state.typing.delete(user);
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()];
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  els.typing.textContent = text;
}

// ---------------------------------------------------------------------------
// Composer: sending, pending messages, offline behaviour.

function composerError(text) {
  els.composerError.textContent = text;
}

function updateSendState() {
  const len = Array.from(els.input.value).length;
  const max = config.max_message_chars;
  els.charCount.textContent = len > max * 0.8 ? `${len} / ${max}` : '';
  els.charCount.classList.toggle('over', len > max);
  const uploading = state.upload && !state.upload.result;
  els.sendBtn.setAttribute('aria-disabled', String(uploading || len > max));
}

function autoGrow() {
  els.input.style.height = 'auto';
  els.input.style.height = `${Math.min(els.input.scrollHeight, 200)}px`;
}

function submitComposer() {
  composerError('');
  const content = els.input.value;
  const att = state.upload;
  if (att && !att.result) { composerError('Wait for the upload to finish, or remove it.'); return; }
  if (!content.trim() && !att) return;
  if (Array.from(content).length > config.max_message_chars) {
    composerError(`Messages can be at most ${config.max_message_chars} characters; this one has ${Array.from(content).length}.`);
    return;
  }
  if (state.connState !== 'connected') {
    // Keep the text where it is; nothing is lost while we reconnect.
    composerError('You are offline. Your message stays here and can be sent once reconnected.');
    return;
  }
  const clientId = randomId();
  const msg = { type: 'message', content: content.trim() ? content : '', client_id: clientId };
  if (att) msg.attachment = { url: att.result.url };

  const p = {
    clientId, content: msg.content, attachment: att ? att.result : null, sent: false, failed: false, el: null,
  };
  p.el = buildMessage({
    message_id: '', user: state.user, content: msg.content, timestamp: new Date().toISOString(),
    reactions: {}, attachment: p.attachment,
  }, { pending: true });
  p.el.dataset.clientId = clientId;
  p.el.querySelector('.msg-status').textContent = 'Sending…';
  state.pending.set(clientId, p);
  els.list.append(p.el);
  regroup(p.el);
  p.sent = send(msg);
  scrollToBottom();

  els.input.value = '';
  clearUpload();
  autoGrow();
  updateSendState();
  // `lastTypingSent` is deliberately not reset here: a typing request before
  // every message would spend two of the server's rate budget (10/s, burst 20)
  // per message, and a quick writer would see messages refused as too fast.
}

/** The connection dropped: messages without an echo may or may not have arrived. */
function markInFlightUnsent() {
  for (const p of state.pending.values()) {
    if (p.sent && !p.failed) p.el.querySelector('.msg-status').textContent = 'Waiting for connection…';
  }
}

/** After a reconnect: anything still unconfirmed did not reach the server. */
function resendUnsent() {
  for (const p of state.pending.values()) {
    if (!p.failed) markFailed(p, 'Not sent: the connection was lost.');
  }
}

function markFailed(p, reason) {
  p.failed = true;
  p.el.classList.add('msg--failed');
  p.el.querySelector('.msg-status').textContent = reason;
  if (p.el.querySelector('.msg-failed-actions')) return;
  const retry = h('button', { cls: 'btn-link', text: 'Retry', testid: 'retry-message', attrs: { type: 'button' } });
  const discard = h('button', { cls: 'btn-link', text: 'Discard', attrs: { type: 'button' } });
  retry.addEventListener('click', () => {
    const msg = { type: 'message', content: p.content, client_id: p.clientId };
    if (p.attachment) msg.attachment = { url: p.attachment.url };
    if (!send(msg)) { toast('Still offline; try again once connected.'); return; }
    p.sent = true; p.failed = false;
    p.el.classList.remove('msg--failed');
    p.el.querySelector('.msg-status').textContent = 'Sending…';
    p.el.querySelector('.msg-failed-actions')?.remove();
    // Move it to the end: it will now be ordered after everything received.
    els.list.append(p.el);
    regroup(p.el);
  });
  discard.addEventListener('click', () => {
    state.pending.delete(p.clientId);
    const next = p.el.nextElementSibling;
    p.el.remove();
    if (next) regroup(next);
  });
  p.el.querySelector('.msg-main').append(h('div', { cls: 'msg-failed-actions' }, [retry, ' · ', discard]));
}

els.composer.addEventListener('submit', (e) => { e.preventDefault(); submitComposer(); });
els.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    submitComposer();
  } else if (e.key === 'ArrowUp' && !els.input.value) {
    // Edit the last message of ours, like most chat apps.
    const own = [...els.list.querySelectorAll('.msg--own[data-id]:not(.msg--archived)')].pop();
    if (own) { e.preventDefault(); startEdit(own.dataset.id); }
  } else if (e.key === 'Escape') {
    composerError('');
  }
});
els.input.addEventListener('input', () => {
  autoGrow();
  updateSendState();
  if (els.composerError.textContent && state.connState === 'connected') composerError('');
  const now = Date.now();
  if (els.input.value && now - state.lastTypingSent > TYPING_SEND_EVERY_MS) {
    if (send({ type: 'typing' })) state.lastTypingSent = now;
  }
});

// ---------------------------------------------------------------------------
// Edit, delete and reactions (delegated from the message list).

els.list.addEventListener('click', (e) => {
  const btn = e.target.closest('button[data-action]');
  if (!btn) return;
  const li = btn.closest('.msg');
  const id = li && li.dataset.id;
  if (!id || li.classList.contains('msg--archived')) return;
  switch (btn.dataset.action) {
    case 'toggle-reaction':
      send({ type: 'reaction', message_id: id, emoji: btn.dataset.emoji, action: 'toggle' }) || toast('You are offline.');
      break;
    case 'react': openPicker(li, btn); break;
    case 'edit': startEdit(id); break;
    case 'delete':
      // The native dialog is keyboard- and screen-reader-friendly for free.
      if (window.confirm('Delete this message for everyone?')) {
        send({ type: 'delete', message_id: id }) || toast('You are offline; the message was not deleted.');
      }
      break;
    default: break;
  }
});

function startEdit(id) {
  const entry = state.messages.get(id);
  if (!entry || !isOwn(entry.data)) return;
  if (state.editing) cancelEdit();
  state.editing = id;
  const li = entry.el;
  const body = li.querySelector('.msg-text');
  const area = h('textarea', { cls: 'edit-input', testid: 'edit-input', attrs: { 'aria-label': 'Edit message', rows: '2' } });
  area.value = entry.data.content || '';
  const save = h('button', { cls: 'btn btn-small btn-primary', text: 'Save', testid: 'edit-save', attrs: { type: 'button' } });
  const cancel = h('button', { cls: 'btn btn-small', text: 'Cancel', attrs: { type: 'button' } });
  const form = h('div', { cls: 'edit-box' }, [area, h('div', { cls: 'edit-buttons' }, [
    h('span', { cls: 'muted', text: 'Enter to save · Esc to cancel' }), cancel, save])]);
  body.hidden = true;
  body.after(form);
  const commit = () => {
    const content = area.value;
    if (!content.trim() && !entry.data.attachment) { toast('A message cannot be empty; use Delete instead.'); return; }
    if (Array.from(content).length > config.max_message_chars) { toast(ERROR_TEXT.too_long); return; }
    if (content !== entry.data.content && !send({ type: 'edit', message_id: id, content })) {
      toast('You are offline; the edit was not saved.');
      return;
    }
    cancelEdit();
  };
  save.addEventListener('click', commit);
  cancel.addEventListener('click', cancelEdit);
  area.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); commit(); }
    if (e.key === 'Escape') { e.preventDefault(); cancelEdit(); }
  });
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

function cancelEdit() {
  const id = state.editing;
  state.editing = null;
  const entry = id && state.messages.get(id);
  if (!entry) return;
  entry.el.querySelector('.edit-box')?.remove();
  entry.el.querySelector('.msg-text').hidden = !entry.data.content;
  els.input.focus();
}

// The picker is one element, moved into the message it is opened for.
let pickerOpener = null;

function openPicker(li, opener) {
  if (!els.picker.hidden && pickerOpener === opener) { closePicker(); return; }
  pickerOpener = opener;
  els.picker.replaceChildren(...REACTION_CHOICES.map((emoji) => h('button', {
    cls: 'picker-emoji', text: emoji, testid: 'picker-emoji',
    attrs: { type: 'button', 'data-emoji': emoji, 'aria-label': `React with ${emoji}` },
  })));
  li.append(els.picker);
  els.picker.hidden = false;
  els.picker.firstElementChild.focus();
}

function closePicker({ refocus = true } = {}) {
  if (els.picker.hidden) return;
  els.picker.hidden = true;
  document.body.append(els.picker);
  if (refocus && pickerOpener && pickerOpener.isConnected) pickerOpener.focus();
  pickerOpener = null;
}

els.picker.addEventListener('click', (e) => {
  e.stopPropagation();
  const b = e.target.closest('button[data-emoji]');
  const li = els.picker.closest('.msg');
  if (!b || !li || !li.dataset.id) return;
  send({ type: 'reaction', message_id: li.dataset.id, emoji: b.dataset.emoji, action: 'toggle' }) || toast('You are offline.');
  closePicker();
});
els.picker.addEventListener('keydown', (e) => {
  const buttons = [...els.picker.querySelectorAll('button')];
  const i = buttons.indexOf(document.activeElement);
  if (e.key === 'Escape') { e.preventDefault(); closePicker(); }
  else if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { e.preventDefault(); buttons[(i + 1) % buttons.length].focus(); }
  else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { e.preventDefault(); buttons[(i - 1 + buttons.length) % buttons.length].focus(); }
});
document.addEventListener('click', (e) => {
  if (!els.picker.hidden && !els.picker.contains(e.target) && e.target !== pickerOpener) closePicker({ refocus: false });
});
els.picker.addEventListener('focusout', (e) => {
  if (!els.picker.hidden && e.relatedTarget && !els.picker.contains(e.relatedTarget)) closePicker({ refocus: false });
});

// ---------------------------------------------------------------------------
// Uploads: button, drag-and-drop, paste. XMLHttpRequest for progress events.

function startUpload(file) {
  composerError('');
  if (!file) return;
  if (file.size > config.max_upload_bytes) {
    composerError(`“${file.name}” is ${formatBytes(file.size)}; the limit is ${formatBytes(config.max_upload_bytes)}.`);
    return;
  }
  clearUpload();
  const xhr = new XMLHttpRequest();
  const up = { xhr, file, result: null };
  state.upload = up;
  els.uploadBox.hidden = false;
  els.uploadBox.classList.remove('done');
  els.uploadName.textContent = `${file.name || 'pasted file'} (${formatBytes(file.size)})`;
  els.uploadProgress.hidden = false;
  els.uploadProgress.value = 0;
  updateSendState();

  xhr.upload.addEventListener('progress', (e) => {
    if (e.lengthComputable) els.uploadProgress.value = Math.round((e.loaded / e.total) * 100);
  });
  xhr.addEventListener('load', () => {
    if (state.upload !== up) return;
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status === 200 && body && typeof body.url === 'string') {
      up.result = body;
      els.uploadProgress.value = 100;
      els.uploadProgress.hidden = true;
      els.uploadBox.classList.add('done');
      els.uploadName.textContent = `${body.name || file.name} (${formatBytes(body.size ?? file.size)}) ready to send`;
      updateSendState();
      els.input.focus();
      return;
    }
    const serverMsg = body && body.message ? ` ${body.message}` : '';
    let text;
    if (xhr.status === 413) text = `“${file.name}” is too large (limit ${formatBytes(config.max_upload_bytes)}).`;
    else if (xhr.status === 415) text = `Files of this type can’t be shared here (images, video, audio, PDF and text are fine).`;
    else if (xhr.status === 429) text = 'Too many uploads right now. Try again in a moment.';
    else text = `Upload failed (${xhr.status || 'network error'}).`;
    failUpload(up, `${text}${serverMsg && !text.includes(serverMsg.trim()) ? serverMsg : ''}`);
  });
  xhr.addEventListener('error', () => failUpload(up, 'Upload failed: the server could not be reached.'));
  const form = new FormData();
  form.append('file', file, file.name || 'pasted');
  xhr.open('POST', config.upload_path);
  xhr.send(form);
}

function failUpload(up, text) {
  if (state.upload !== up) return;
  clearUpload();
  composerError(text);
}

function clearUpload() {
  const up = state.upload;
  state.upload = null;
  if (up && !up.result) up.xhr.abort();
  els.uploadBox.hidden = true;
  els.attachInput.value = '';
  updateSendState();
}

els.attachInput.addEventListener('change', () => startUpload(els.attachInput.files[0]));
els.uploadCancel.addEventListener('click', () => { clearUpload(); els.input.focus(); });

els.input.addEventListener('paste', (e) => {
  const file = [...(e.clipboardData?.files || [])][0];
  if (file) { e.preventDefault(); startUpload(file); }
});

// Drag-and-drop anywhere on the chat column. dragenter/leave fire for every
// child, so count them to know when the pointer really left.
let dragDepth = 0;
const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
els.chat.addEventListener('dragenter', (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth += 1;
  els.dropOverlay.hidden = false;
});
els.chat.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
els.chat.addEventListener('dragleave', () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) els.dropOverlay.hidden = true;
});
els.chat.addEventListener('drop', (e) => {
  if (!hasFiles(e)) return;
  e.preventDefault();
  dragDepth = 0;
  els.dropOverlay.hidden = true;
  startUpload(e.dataTransfer.files[0]);
});

// ---------------------------------------------------------------------------
// Rooms, names and the join screen.

function recentRooms() {
  try {
    const v = JSON.parse(localStorage.getItem(STORAGE_ROOMS) || '[]');
    return Array.isArray(v) ? v.filter((r) => typeof r === 'string').slice(0, 8) : [];
  } catch { return []; }
}

function rememberRoom(room) {
  const rooms = [room, ...recentRooms().filter((r) => r !== room)].slice(0, 8);
  try { localStorage.setItem(STORAGE_ROOMS, JSON.stringify(rooms)); } catch { /* private mode */ }
}

function renderRoomList() {
  els.roomList.replaceChildren(...recentRooms().map((room) => {
    const current = room === state.room;
    const a = h('a', {
      cls: `room-link${current ? ' current' : ''}`, text: `# ${room}`,
      attrs: { href: roomHref(room, state.user) },
    });
    if (current) a.setAttribute('aria-current', 'page');
    a.addEventListener('click', (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return; // let new-tab clicks through
      e.preventDefault();
      switchRoom(room);
    });
    return h('li', {}, [a]);
  }));
}

function roomHref(room, user) {
  const params = new URLSearchParams({ room, user });
  return `${location.pathname}?${params}`;
}

/** Enters `room` as `user`: resets the view and connects. No page reload. */
function enterRoom(room, user, { push = true } = {}) {
  room = room.trim();
  user = user.trim();
  if (state.ws) detachSocket(state.ws, 1000);
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
  closePicker({ refocus: false });
  clearUpload();
  Object.assign(state, {
    room, user, hasConnected: false, lastSeq: 0, attempts: 0, closeReason: '', serverRestarting: false, unread: 0, editing: null,
  });
  state.messages.clear();
  state.pending.clear();
  for (const t of state.typing.values()) clearTimeout(t);
  state.typing.clear();
  renderTyping();
  els.list.replaceChildren();
  els.newPill.hidden = true;
  try { localStorage.setItem(STORAGE_USER, user); } catch { /* private mode */ }
  rememberRoom(room);
  if (push) history.pushState({ room, user }, '', roomHref(room, user));
  els.roomTitle.textContent = room;
  els.meName.textContent = user;
  updateTitle();
  renderRoomList();
  setOnline([], 0);
  els.joinView.hidden = true;
  els.chatView.hidden = false;
  document.body.classList.remove('sidebar-open');
  els.sidebarToggle.setAttribute('aria-expanded', 'false');
  composerError('');
  connect();
  els.input.focus();
}

function switchRoom(room) {
  const err = validateName(room, 'room', 64);
  if (err) { toast(err); return; }
  if (room.trim() === state.room) return;
  enterRoom(room, state.user);
}

function showJoin(message = '') {
  if (state.ws) detachSocket(state.ws, 1000);
  clearTimeout(state.retryTimer);
  setConnState('idle');
  els.chatView.hidden = true;
  els.joinView.hidden = false;
  els.joinError.textContent = message;
  let saved = '';
  try { saved = localStorage.getItem(STORAGE_USER) || ''; } catch { /* private mode */ }
  if (!els.joinName.value) els.joinName.value = state.user || saved;
  if (state.room) els.joinRoom.value = state.room;
  (els.joinName.value ? els.joinRoom : els.joinName).focus();
  document.title = 'roomcast';
}

els.joinForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const err = validateName(els.joinName.value, 'name', 32) || validateName(els.joinRoom.value, 'room', 64);
  if (err) { els.joinError.textContent = err; return; }
  els.joinError.textContent = '';
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
  const room = state.room;
  state.user = '';
  els.joinName.value = '';
  state.room = room;
  showJoin();
});

function toggleSidebar(open = !document.body.classList.contains('sidebar-open')) {
  document.body.classList.toggle('sidebar-open', open);
  els.sidebarToggle.setAttribute('aria-expanded', String(open));
}
els.sidebarToggle.addEventListener('click', () => toggleSidebar());
els.onlineSummary.addEventListener('click', () => toggleSidebar());
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && document.body.classList.contains('sidebar-open')) toggleSidebar(false);
});

function reloadRoom() {
  enterRoom(state.room, state.user, { push: false });
}

window.addEventListener('popstate', () => route({ push: false }));

/** Reads ?room=&user= (falling back to the remembered name) and shows the right screen. */
function route({ push }) {
  const params = new URLSearchParams(location.search);
  const room = params.get('room') || '';
  let user = params.get('user') || '';
  if (!user) { try { user = localStorage.getItem(STORAGE_USER) || ''; } catch { /* private mode */ } }
  const err = room && user ? validateName(user, 'name', 32) || validateName(room, 'room', 64) : '';
  if (room && user && !err) {
    if (room.trim() === state.room && user.trim() === state.user && state.ws) return;
    // Put the remembered name into the address so the link can be shared as is.
    enterRoom(room, user, { push: false });
    if (!params.get('user') || push) history.replaceState({ room, user }, '', roomHref(room.trim(), user.trim()));
  } else {
    state.room = room.trim();
    showJoin(err);
  }
}

// Debug/test hook: read-only view of connection facts (no message data).
Object.defineProperty(window, 'roomcast', {
  value: Object.freeze({
    get state() { return state.connState; },
    get lastSeq() { return state.lastSeq; },
  }),
});

updateSendState();
route({ push: false });
