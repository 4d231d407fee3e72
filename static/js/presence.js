// Who is here: the online list, and the join/leave lines in the log.
//
// Reconnects are not news. A leave followed by a join of the same name
// within PRESENCE_MERGE_MS turns the "left" line into "reconnected"; after
// our own connection dropped, the joins of people who were here before are
// not shown at all (after a server restart everyone "joins" again).

import { PRESENCE_MERGE_MS } from './config.js';
import { els, h } from './dom.js';
import { hueClass, initials } from './format.js';
import { setNoticeTime, systemNotice } from './notices.js';
import { state } from './state.js';
import { clearTyping } from './typing.js';

const recentLeaves = new Map(); // name -> { li, at }; pruned to the merge window
let hereBeforeDrop = new Set(); // names online when our connection dropped
let droppedAt = 0;
let rejoinedAt = 0;

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
  if (!Array.isArray(names) && state.online.length === 0) {
    items.push(h('li', { cls: 'person muted', text: 'Too many people to list.' }));
  }
  els.onlineList.replaceChildren(...items);
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
  hereBeforeDrop = new Set();
  droppedAt = 0;
  rejoinedAt = 0;
}

export function onPresenceChange(ev) {
  setOnline(Array.isArray(ev.online) ? ev.online : null, ev.online_count);
  const name = ev.user;
  if (typeof name !== 'string' || name === state.user) return; // our own join is not news
  const now = Date.now();
  for (const [n, v] of recentLeaves) if (now - v.at > PRESENCE_MERGE_MS) recentLeaves.delete(n);

  if (ev.type === 'leave') {
    clearTyping(name);
    const li = systemNotice(`${name} left`, { kind: 'presence', time: new Date(now) });
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
  systemNotice(`${name} joined`, { kind: 'presence', time: new Date(now) });
}
