// Messages on screen: building an element from a message, keeping it up to
// date (edits, reactions, deletes), grouping by author, and where new ones
// go. history.js adds older messages with buildMessage + regroup.

import { GROUP_WINDOW_MS, LONG_MESSAGE_CHARS, LONG_MESSAGE_LINES } from './config.js';
import { els, h } from './dom.js';
import { formatBytes, formatTime, fullFmt, hueClass, initials } from './format.js';
import { renderText, isLong } from './richtext.js';
import { state } from './state.js';
import {
  arrived as scrollArrived, followingBottom, isNearBottom, markNew, scrollToBottom,
} from './scroll.js';
import { arrived as attentionArrived, arrivedWhileDisconnected as attentionMissed } from './attention.js';
import { clearTyping } from './typing.js';
import { renderReactions } from './reactions.js';

export const isOwn = (m) => m.user === state.user;

let textIds = 0;

function messageTime(m) {
  const d = new Date(m.timestamp);
  return Number.isNaN(d.getTime()) ? new Date() : d;
}

/** Builds the element for a message (confirmed or pending). */
export function buildMessage(m, { pending = false } = {}) {
  const li = h('li', { cls: 'msg', testid: 'message', attrs: { tabindex: '-1' } });
  li.dataset.author = m.user;
  if (m.message_id) li.dataset.id = m.message_id;
  // Scrollback (history.js) reads where a page ends from the seq.
  if (typeof m.seq === 'number') li.dataset.seq = String(m.seq);
  if (isOwn(m)) li.classList.add('msg--own');
  if (pending) li.classList.add('msg--pending');

  const avatar = h('span', { cls: `avatar ${hueClass(m.user)}`, text: initials(m.user), attrs: { 'aria-hidden': 'true' } });
  const head = h('div', { cls: 'msg-head' }, [
    h('span', { cls: 'msg-author', text: m.user, testid: 'message-author', attrs: { dir: 'auto' } }),
    h('time', { cls: 'msg-time' }),
    h('span', { cls: 'msg-edited', text: '(edited)', testid: 'message-edited' }),
    h('span', { cls: 'msg-status', testid: 'message-status' }),
  ]);
  const main = h('div', { cls: 'msg-main' }, [head,
    h('div', { cls: 'msg-text', testid: 'message-text', attrs: { dir: 'auto' } }),
    h('div', { cls: 'msg-attachment' }),
    h('div', { cls: 'msg-reactions', attrs: { role: 'group', 'aria-label': 'Reactions' } })]);
  const act = (text, action, testid, extra = {}) => h('button', {
    cls: `act${action === 'delete' ? ' act-danger' : ''}`, text, testid, attrs: { type: 'button', 'data-action': action, ...extra },
  });
  const actions = h('div', { cls: 'msg-actions', attrs: { role: 'group', 'aria-label': 'Message actions' } }, [
    act('☺+', 'react', 'add-reaction', { 'aria-label': 'Add reaction', title: 'Add reaction', 'aria-haspopup': 'dialog' }),
    isOwn(m) ? act('Edit', 'edit', 'edit-message') : null,
    isOwn(m) ? act('Delete', 'delete', 'delete-message') : null,
  ]);
  li.append(avatar, main, actions);
  setTime(li, m);
  fillMessage(li, m);
  return li;
}

function setTime(li, m) {
  const date = messageTime(m);
  const time = li.querySelector('time');
  time.textContent = formatTime(date);
  time.dateTime = date.toISOString();
  time.title = fullFmt.format(date);
}

/** Writes a message's content, attachment, reactions and edit mark into its element. */
export function fillMessage(li, m) {
  const body = li.querySelector('.msg-text');
  body.replaceChildren();
  const content = m.content || '';
  const info = renderText(body, content, state.user);
  body.hidden = !content;
  body.classList.toggle('msg-text--emoji', info.emojiCount > 0);
  li.classList.toggle('msg--mention', info.mentionsMe && !isOwn(m));
  // A long message unfolded by the reader stays so through an update (an
  // edit, a preview, a resync): its button is kept, focus and all.
  const more = li.querySelector('.show-more');
  const long = isLong(content, LONG_MESSAGE_CHARS, LONG_MESSAGE_LINES);
  const open = long && more?.getAttribute('aria-expanded') === 'true';
  body.classList.toggle('msg-text--folded', long && !open);
  if (!long) more?.remove();
  else if (!more) {
    body.id ||= `msg-text-${++textIds}`;
    body.after(h('button', {
      cls: 'btn-link show-more', text: 'Show more', testid: 'show-more',
      attrs: { type: 'button', 'data-action': 'show-more', 'aria-expanded': 'false', 'aria-controls': body.id },
    }));
  }
  li.classList.toggle('msg--edited', Boolean(m.edited_at));
  // Built again only when what it shows changed (a preview became ready):
  // an image or a video playing is not reloaded by an edit or a reaction.
  const box = li.querySelector('.msg-attachment');
  const att = attachmentKey(m.attachment);
  if (shownAttachment.get(box) !== att) {
    shownAttachment.set(box, att);
    renderAttachment(box, m.attachment);
  }
  renderReactions(li, m);
  return info;
}

/** What an attachment element shows, by box: drawn again only when this changes. */
const shownAttachment = new WeakMap();
const attachmentKey = (a) => JSON.stringify(a && a.url
  ? [a.url, a.name ?? null, a.size ?? null, a.content_type ?? null, a.preview ?? null]
  : null);

/** True when `url` points at this server (attachments never load from elsewhere). */
function sameOriginUrl(url) {
  try {
    const u = new URL(url, location.href);
    return u.origin === location.origin && (u.protocol === 'http:' || u.protocol === 'https:') ? u : null;
  } catch {
    return null;
  }
}

/** The attachment's preview `{url, width, height}`, if it has a usable one. */
function previewOf(att) {
  const p = att.preview;
  if (!p || typeof p.url !== 'string') return null;
  const url = sameOriginUrl(p.url);
  const ok = (n) => Number.isInteger(n) && n > 0 && n <= 4096;
  return url && ok(p.width) && ok(p.height) ? { url, width: p.width, height: p.height } : null;
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
    h('span', { cls: 'file-name', text: name, attrs: { dir: 'auto' } }),
    typeof att.size === 'number' ? h('span', { cls: 'file-size', text: formatBytes(att.size) }) : null]);
  if (type.startsWith('image/')) {
    // The frame has its size before the image loads, so nothing below moves.
    // A server-made preview (at most 320 px) is shown when there is one;
    // the frame links to the original either way.
    const small = previewOf(att);
    const attrs = { src: (small ? small.url : url).href, alt: name, loading: 'lazy' };
    if (small) Object.assign(attrs, { width: String(small.width), height: String(small.height) });
    const img = h('img', { cls: 'att-image', testid: 'attachment-image', attrs });
    img.addEventListener('load', () => { if (box.isConnected && followingBottom()) scrollToBottom(); });
    box.append(h('a', { cls: 'att-frame', attrs: { href: url.href, target: '_blank', rel: 'noopener noreferrer' } }, [img]));
  } else if (type.startsWith('video/')) {
    box.append(h('video', { cls: 'att-media', testid: 'attachment-video', attrs: { src: url.href, controls: '', preload: 'metadata', 'aria-label': name } }), caption);
  } else if (type.startsWith('audio/')) {
    box.append(h('audio', { cls: 'att-audio', testid: 'attachment-audio', attrs: { src: url.href, controls: '', preload: 'metadata', 'aria-label': name } }), caption);
  } else {
    box.append(caption);
  }
}

/** Puts `el` before the first pending message, so pending ones stay last. */
export function insertBeforePending(el) {
  // Pending messages are always last: without one there, no walk of the
  // list (a welcome of thousands would walk it for each).
  const last = els.list.lastElementChild;
  const pending = last?.classList.contains('msg--pending') ? els.list.querySelector(':scope > .msg--pending') : null;
  els.list.insertBefore(el, pending);
  regroup(el);
  if (el.nextElementSibling) regroup(el.nextElementSibling);
}

/** When a message element says it was posted (ms); NaN for a tombstone, which has no time. */
const postedAt = (el) => Date.parse(el.querySelector('time.msg-time')?.dateTime ?? '');

/**
 * Marks `el` as a continuation when it follows the same author closely. A
 * tombstone (a deleted message) is never one and never starts a group: it
 * has no head and no time.
 */
export function regroup(el) {
  if (!el.classList.contains('msg')) return;
  const prev = el.previousElementSibling;
  let cont = false;
  // A message still waiting shows its own head: its status is there.
  if (!el.classList.contains('msg--pending') && prev && prev.classList.contains('msg')
      && prev.dataset.author === el.dataset.author) {
    cont = postedAt(el) - postedAt(prev) < GROUP_WINDOW_MS; // false when either has no time
  }
  el.classList.toggle('msg--cont', cont);
}

/**
 * A message from the server: history (`live` false) or just posted.
 * Returns the element it added, if it added one.
 */
export function addMessage(m, { live }) {
  if (!m || typeof m.message_id !== 'string') return;
  if (typeof m.seq === 'number' && m.seq > state.lastSeq) state.lastSeq = m.seq;
  const known = state.messages.get(m.message_id);
  // Our own message coming back: confirm the pending copy in place.
  const pending = m.client_id && isOwn(m) ? state.pending.get(m.client_id) : undefined;
  if (known && pending && pending.el !== known.el) {
    // Shown already (a scrollback page brought it before its echo came,
    // or the answer to "Send again" is a post the page has): the copy
    // still waiting is that message, confirmed.
    dropPending(pending);
  }
  if (known) {
    // Ours, confirmed from this history before it was added: it goes in
    // its place among the history, not where it waited.
    if (known.fromHistory) {
      delete known.fromHistory;
      const next = known.el.nextElementSibling;
      insertBeforePending(known.el);
      if (next) regroup(next);
    }
    return; // already shown (resume overlap)
  }

  if (pending) {
    confirmPending(pending, m);
    return;
  }
  const stick = isNearBottom();
  const li = buildMessage(m);
  state.messages.set(m.message_id, { data: m, el: li });
  insertBeforePending(li);
  if (!live) return li;
  if (isOwn(m)) { scrollToBottom(); return li; } // sent from another tab of ours
  clearTyping(m.user);
  attentionArrived(m, li.classList.contains('msg--mention'));
  scrollArrived(li, stick);
  regroup(li); // a "New" line may now stand above it
  return li;
}

/**
 * Messages a resume brought that were posted while the connection was down
 * (`[{ m, li }]` from addMessage, oldest first): others' ones are news like
 * live ones, the "New" line above the first, counted in the title, told to
 * screen readers, but as one batch. Returns their elements, for the view
 * (scroll.js missedArrived) once the welcome has laid out the page.
 */
export function arrivedWhileDisconnected(added) {
  const news = added.filter(({ m }) => !isOwn(m));
  if (!news.length) return [];
  for (const { m } of news) clearTyping(m.user);
  markNew(news[0].li);
  regroup(news[0].li);
  attentionMissed(news.map(({ m, li }) => ({ m, mentionsMe: li.classList.contains('msg--mention') })));
  return news.map(({ li }) => li);
}

/** A message waiting for its echo turned out to be one shown already: its copy goes. */
function dropPending(p) {
  state.pending.delete(p.clientId);
  const next = p.el.nextElementSibling;
  p.el.remove();
  if (next) regroup(next);
}

export function confirmPending(p, m) {
  state.pending.delete(p.clientId);
  const li = p.el;
  li.classList.remove('msg--pending', 'msg--failed');
  li.dataset.id = m.message_id;
  if (typeof m.seq === 'number') li.dataset.seq = String(m.seq);
  delete li.dataset.clientId;
  setTime(li, m);
  li.querySelector('.msg-status').textContent = '';
  li.querySelector('.msg-failed-actions')?.remove();
  fillMessage(li, m);
  state.messages.set(m.message_id, { data: m, el: li });
  // Others' messages may have been inserted before this one meanwhile; keep it
  // where it is (after them, which matches the server's order).
  regroup(li);
  if (li.nextElementSibling) regroup(li.nextElementSibling);
}

/**
 * History replayed after a reconnect carries no client_id, so a message we sent
 * just before the connection dropped is recognised by author and content,
 * among those posted after it went out (`p.since`: a message brought back
 * from an earlier visit to the room meets older ones of ours too).
 */
export function confirmPendingFromHistory(history) {
  for (const p of [...state.pending.values()]) {
    if (!p.sent) continue;
    const hit = history.find((m) => isOwn(m) && !state.messages.has(m.message_id)
      && !(typeof m.seq === 'number' && m.seq <= p.since)
      && (m.content || '') === p.content
      && ((m.attachment && m.attachment.url) || '') === ((p.attachment && p.attachment.url) || ''));
    if (hit) {
      confirmPending(p, hit);
      state.messages.get(hit.message_id).fromHistory = true; // placed by addMessage
    }
  }
}

export function updateMessage(m) {
  const entry = state.messages.get(m.message_id);
  if (!entry) return;
  entry.data = { ...entry.data, ...m };
  // Whole reactions come without counts: drop the ones a sample had.
  if (!m.reaction_counts) delete entry.data.reaction_counts;
  fillMessage(entry.el, entry.data);
  if (state.editing === m.message_id) entry.el.querySelector('.msg-text').hidden = true;
}

export function deleteMessage(ev) {
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

/**
 * Messages the server no longer knows (it restarted): readable, but no
 * actions. Tombstones too (they keep their seq, not their entry): history.js
 * must never read an old seq as one of the new numbering.
 */
export function archiveAll() {
  for (const { el } of state.messages.values()) el.classList.add('msg--archived');
  for (const el of els.list.querySelectorAll(':scope > li.msg[data-seq]')) el.classList.add('msg--archived');
  state.messages.clear();
}

