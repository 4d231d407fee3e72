// DOM helpers and the page's fixed elements.
//
// User data only ever reaches the DOM through textContent and attributes of
// elements created here; nothing parses HTML. Looks come from classes in
// style.css (the CSP forbids inline styles in markup).

export const $ = (id) => document.getElementById(id);

/** Creates an element with classes, attributes and text; never parses HTML. */
export function h(tag, { cls, text, attrs, testid } = {}, children = []) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = text;
  if (testid) el.dataset.testid = testid;
  if (attrs) for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

/** Screens without hover (phones, tablets): actions open on tap. */
export const touchScreen = matchMedia('(hover: none)');
export const isTouch = () => touchScreen.matches;
/**
 * Whether Enter sends (a message, an edit). Not on touch screens: there, as
 * in common mobile chat apps, Enter types a new line (a phone's keyboard has
 * no Shift+Enter) and the Send or Save button sends.
 */
export const enterSends = () => !isTouch();
/**
 * True while a key press belongs to an input method's composition (the Enter
 * that confirms a candidate, too). Safari reports that Enter with
 * `isComposing` false but `keyCode` 229.
 */
export const imeKey = (e) => e.isComposing || e.keyCode === 229;
/** True when the sidebar is a drawer (the phone layout in style.css). */
export const isNarrow = () => matchMedia('(max-width: 720px)').matches;

export const els = {
  joinView: $('join-view'), joinForm: $('join-form'), joinName: $('join-name'),
  joinRoom: $('join-room'), joinError: $('join-error'), joinNote: $('join-note'),
  joinActiveRooms: $('join-active-rooms'), joinRoomsSection: $('join-rooms'),
  chatView: $('chat-view'), topbar: $('topbar'), roomTitle: $('room-title'), roomLock: $('room-lock'),
  onlineSummary: $('online-summary'), inviteBtn: $('invite-btn'),
  connStatus: $('conn-status'), connLabel: $('conn-label'),
  banner: $('conn-banner'), bannerText: $('conn-banner-text'), retryNow: $('retry-now'),
  sidebar: $('sidebar'), sidebarToggle: $('sidebar-toggle'), drawerClose: $('drawer-close'),
  backdrop: $('drawer-backdrop'), meName: $('me-name'), changeName: $('change-name'),
  notifyBtn: $('notify-btn'), roomList: $('room-list'), roomForm: $('room-form'),
  roomInput: $('room-input'), activeRooms: $('active-rooms'),
  onlineList: $('online-list'), onlineCountSide: $('online-count-side'),
  chat: $('chat'), list: $('messages'), newPill: $('new-pill'), dropOverlay: $('drop-overlay'),
  typing: $('typing'), composer: $('composer'), input: $('composer-input'),
  sendBtn: $('send-btn'), composerKeys: $('composer-keys'), attachInput: $('attach-input'), composerError: $('composer-error'),
  charCount: $('char-count'), uploadBox: $('upload-box'),
  picker: $('picker'), toasts: $('toasts'), announcer: $('announcer'),
};
