// Who is typing, shown under the messages for a few seconds per signal.

import { TYPING_SHOW_MS } from './config.js';
import { els } from './dom.js';
import { state } from './state.js';

const typing = new Map(); // user -> timeout id; at most one entry per online name

export function showTyping(user) {
  if (!user || user === state.user) return;
  clearTimeout(typing.get(user));
  typing.set(user, setTimeout(() => clearTyping(user), TYPING_SHOW_MS));
  render();
}

export function clearTyping(user) {
  if (!typing.has(user)) return;
  clearTimeout(typing.get(user));
  typing.delete(user);
  render();
}

export function resetTyping() {
  for (const t of typing.values()) clearTimeout(t);
  typing.clear();
  render();
}

function render() {
  const names = [...typing.keys()];
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  els.typing.textContent = text;
}
