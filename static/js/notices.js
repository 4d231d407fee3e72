// Notices: toasts (transient, never over the composer) and system lines in
// the message log ("bob left", "the server was restarted").

import { config } from './config.js';
import { els, h } from './dom.js';
import { formatTime, fullFmt } from './format.js';
import { insertBeforePending } from './messages.js';
import { isNearBottom, scrollToBottom } from './scroll.js';

/**
 * Shows `text` for `timeout` ms. `tag` groups toasts that stop being true
 * together (e.g. 'offline', cleared on reconnect).
 */
export function toast(text, { kind = 'error', timeout = 6000, tag = '' } = {}) {
  // The same notice again (e.g. one per refused request) is not news.
  for (const t of els.toasts.children) if (t.dataset.text === text) return t;
  const close = h('button', { cls: 'toast-close', text: '✕', attrs: { type: 'button', 'aria-label': 'Dismiss' } });
  const el = h('div', {
    cls: `toast toast-${kind}`, testid: 'toast', attrs: { role: kind === 'error' ? 'alert' : 'status' },
  }, [h('span', { text }), close]);
  el.dataset.text = text;
  el.dataset.tag = tag;
  close.addEventListener('click', () => el.remove());
  els.toasts.append(el);
  while (els.toasts.children.length > 3) els.toasts.firstElementChild.remove();
  if (timeout) setTimeout(() => el.remove(), timeout);
  return el;
}

export function clearToasts(tag) {
  for (const t of [...els.toasts.children]) if (t.dataset.tag === tag) t.remove();
}

/** A line in the log; `time` adds when it happened, `action` a button. */
export function systemNotice(text, { kind = 'info', action, time } = {}) {
  const stick = isNearBottom();
  const li = h('li', { cls: `notice notice-${kind}`, testid: 'notice' }, [h('span', { cls: 'notice-text', text })]);
  if (time) setNoticeTime(li, time);
  if (action) {
    const b = h('button', { cls: 'btn-link', text: action.label, attrs: { type: 'button' } });
    b.addEventListener('click', action.run);
    li.append(' ', b);
  }
  insertBeforePending(li);
  if (stick) scrollToBottom();
  return li;
}

/** Sets (or moves) the time shown on a notice. */
export function setNoticeTime(li, date) {
  let t = li.querySelector('time');
  if (!t) {
    t = h('time', { cls: 'notice-time' });
    li.querySelector('.notice-text').after(' · ', t);
  }
  t.textContent = formatTime(date);
  t.dateTime = date.toISOString();
  t.title = fullFmt.format(date);
}

/** Error codes of PROTOCOL.md in words a user can act on. */
export const ERROR_TEXT = {
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

/** Says an action could not happen because the connection is down. */
export function offlineToast(what) {
  toast(`You are offline; ${what}. Try again once reconnected.`, { tag: 'offline' });
}
