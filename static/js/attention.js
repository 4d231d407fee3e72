// What draws the reader back: the unread count in the tab title, the
// screen-reader announcement of each new message (one for all those a
// reconnect brought), and a desktop notification when someone @mentions
// the reader (only after the reader turned them on with a click: browsers
// ask for permission on a user action).

import { els } from './dom.js';
import { state } from './state.js';

let unread = 0;

export function updateTitle() {
  document.title = state.roomTitle ? `${unread ? `(${unread}) ` : ''}#${state.roomTitle} · roomcast` : 'roomcast';
}

export function resetUnread() {
  unread = 0;
  updateTitle();
}

const away = () => document.hidden || !document.hasFocus();

const said = (m) => m.content || (m.attachment ? `sent ${m.attachment.name || 'a file'}` : '');

/** Someone else's message arrived live. */
export function arrived(m, mentionsMe) {
  const what = said(m);
  // Replace rather than append, so the live region never grows.
  els.announcer.textContent = `${m.user}${mentionsMe ? ' mentioned you' : ''}: ${what}`;
  if (document.hidden) { unread += 1; updateTitle(); }
  if (mentionsMe && away()) notify(m, what);
}

/**
 * Others' messages a resume brought, posted while the connection was down
 * (`[{ m, mentionsMe }]`, oldest first): counted like live ones, but told
 * in one announcement ("12 new messages") and at most one notification
 * (the newest mention), not one per message.
 */
export function arrivedWhileDisconnected(news) {
  if (news.length === 1) { arrived(news[0].m, news[0].mentionsMe); return; }
  if (!news.length) return;
  const mentions = news.filter((n) => n.mentionsMe);
  const k = mentions.length;
  els.announcer.textContent = `${news.length} new messages${k ? `, ${k === 1 ? 'one mentions' : `${k} mention`} you` : ''}`;
  if (document.hidden) { unread += news.length; updateTitle(); }
  const last = mentions.at(-1);
  if (last && away()) notify(last.m, said(last.m));
}

const supported = () => 'Notification' in window;

function notify(m, what) {
  if (!supported() || Notification.permission !== 'granted') return;
  try {
    const n = new Notification(`${m.user} mentioned you in #${state.roomTitle}`, {
      body: what.slice(0, 200), tag: `roomcast-${m.message_id}`,
    });
    n.addEventListener('click', () => { window.focus(); n.close(); });
  } catch { /* some browsers only allow notifications from a service worker */ }
}

function renderNotifyButton() {
  const b = els.notifyBtn;
  if (!supported() || Notification.permission === 'denied') { b.hidden = true; return; }
  b.hidden = false;
  const on = Notification.permission === 'granted';
  b.textContent = on ? 'Mention alerts are on' : 'Alert me when mentioned';
  b.setAttribute('aria-pressed', String(on));
  b.disabled = on;
}

export function initAttention() {
  renderNotifyButton();
  els.notifyBtn.addEventListener('click', async () => {
    try { await Notification.requestPermission(); } catch { /* the old callback form: ignore */ }
    renderNotifyButton();
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) resetUnread(); });
}
