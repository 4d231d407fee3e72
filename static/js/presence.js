// Who is here: the online list, and the join/leave lines in the log.
//
// Reconnects are not news. A leave followed by a join of the same name
// within PRESENCE_MERGE_MS turns the "left" line into "reconnected"; after
// our own connection dropped, the joins of people who were here before are
// not shown at all (after a server restart everyone "joins" again).
//
// The list: `welcome` and the answer to `presence` bring every name; a
// `join` or `leave` brings them only in a room of up to 100 names
// (protocol.md), so past that each event's `user` is added or taken off
// here. Should the list then disagree with the event's `online_count`
// (something was missed), a `presence` request fetches it whole, at most
// once per PRESENCE_REFRESH_MS.
//
// Bounds: a room with many arrivals and few messages would pile up lines
// (the list's trimming counts messages only): past MAX_PRESENCE_LINES the
// oldest presence line leaves as a new one comes.

import { MAX_PRESENCE_LINES, PRESENCE_MERGE_MS, PRESENCE_REFRESH_MS } from './config.js';
import { send } from './connection.js';
import { els, h } from './dom.js';
import { hueClass, initials } from './format.js';
import { regroup } from './messages.js';
import { setNoticeTime, systemNotice } from './notices.js';
import { state } from './state.js';
import { clearTyping } from './typing.js';

const recentLeaves = new Map(); // name -> { li, at }; pruned to the merge window
let hereBeforeDrop = new Set(); // names online when our connection dropped
let droppedAt = 0;
let rejoinedAt = 0;
let lines = []; // presence lines in the log, oldest first
let askedAt = 0; // when the whole list was last asked for

export function setOnline(names, count) {
  if (Array.isArray(names)) state.online = [...names].sort((a, b) => a.localeCompare(b));
  state.onlineCount = typeof count === 'number' ? count : state.online.length;
  els.onlineSummary.textContent = `${state.onlineCount} online`;
  els.onlineCountSide.textContent = String(state.onlineCount);
  const items = state.online.map((name) => h('li', { cls: 'person' }, [
    h('span', { cls: `avatar avatar-small ${hueClass(name)}`, text: initials(name), attrs: { 'aria-hidden': 'true' } }),
    h('span', { cls: 'person-name', text: name, attrs: { dir: 'auto' } }),
    name === state.user ? h('span', { cls: 'you-tag', text: '(you)' }) : null,
  ]));
  if (state.online.length === 0 && state.onlineCount > 0) {
    items.push(h('li', { cls: 'person muted', text: 'Too many people to list.' }));
  }
  els.onlineList.replaceChildren(...items);
}

/** `names` (sorted) with `ev.user` added (a join) or taken off (a leave). */
function changed(names, ev) {
  if (typeof ev.user !== 'string') return names;
  const rest = names.filter((n) => n !== ev.user);
  return ev.type === 'join' ? [...rest, ev.user] : rest;
}

/** The list disagrees with the count: fetch it whole, not often (its answer is a `presence`). */
function refreshIfOff() {
  const now = Date.now();
  if (state.online.length === state.onlineCount || now - askedAt < PRESENCE_REFRESH_MS) return;
  if (send({ type: 'presence' })) askedAt = now;
}

/** A join or leave line; the oldest leaves once there are too many. */
function presenceLine(text, now) {
  const li = systemNotice(text, { kind: 'presence', time: new Date(now) });
  lines = lines.filter((l) => l.isConnected);
  lines.push(li);
  while (lines.length > MAX_PRESENCE_LINES) {
    const old = lines.shift();
    const next = old.nextElementSibling;
    old.remove();
    if (next) regroup(next);
  }
  return li;
}

/** Our connection dropped: remember who was here. */
export function connectionDropped() {
  if (droppedAt) return;
  droppedAt = Date.now();
  hereBeforeDrop = new Set(state.online);
}

/** We are back (a `welcome`): their joins in the next moments are reconnects. */
export function connectionBack() {
  if (droppedAt) rejoinedAt = Date.now();
  droppedAt = 0;
}

export function resetPresence() {
  recentLeaves.clear();
  lines = [];
  askedAt = 0;
  hereBeforeDrop = new Set();
  droppedAt = 0;
  rejoinedAt = 0;
}

export function onPresenceChange(ev) {
  setOnline(Array.isArray(ev.online) ? ev.online : changed(state.online, ev), ev.online_count);
  refreshIfOff();
  const name = ev.user;
  if (typeof name !== 'string' || name === state.user) return; // our own join is not news
  const now = Date.now();
  for (const [n, v] of recentLeaves) if (now - v.at > PRESENCE_MERGE_MS) recentLeaves.delete(n);

  if (ev.type === 'leave') {
    clearTyping(name);
    const li = presenceLine(`${name} left`, now);
    recentLeaves.set(name, { li, at: now });
    return;
  }
  const left = recentLeaves.get(name);
  if (left) {
    recentLeaves.delete(name);
    if (left.li.isConnected) {
      left.li.querySelector('.notice-text').textContent = `${name} reconnected`;
      setNoticeTime(left.li, new Date(now));
      return;
    }
  }
  if (hereBeforeDrop.has(name) && now - rejoinedAt < PRESENCE_MERGE_MS) {
    hereBeforeDrop.delete(name);
    return;
  }
  presenceLine(`${name} joined`, now);
}
