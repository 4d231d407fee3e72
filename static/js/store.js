// What this browser remembers (localStorage): recent rooms, a draft per
// room, and the reactions its people made (reactions.js). Every list is
// capped; private browsing (no storage) just forgets.

const KEY_ROOMS = 'roomcast.rooms';
const KEY_DRAFTS = 'roomcast.drafts';
const KEY_OWN = 'roomcast.reactions';
const MAX_ROOMS = 8;
/** Drafts kept; saving one more drops the oldest. */
const MAX_DRAFTS = 20;
/** Messages whose own reactions are kept; one more drops the least recently changed. */
const MAX_OWN = 500;

export function load(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}

export function save(key, value) {
  try {
    if (value === null || value === '') localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch { /* private mode or full: forget */ }
}

function loadJson(key, fallback) {
  try { return JSON.parse(load(key) || 'null') ?? fallback; } catch { return fallback; }
}

/** A room's key: rooms compare without case (the server treats `Lobby` and `lobby` as one room). */
export const roomKey = (room) => room.trim().toLowerCase();
export const sameRoom = (a, b) => roomKey(a) === roomKey(b);

export function recentRooms() {
  const v = loadJson(KEY_ROOMS, []);
  return Array.isArray(v) ? v.filter((r) => typeof r === 'string').slice(0, MAX_ROOMS) : [];
}

/** Puts `room` first, replacing any spelling of it that differs only in case. */
export function rememberRoom(room) {
  const rooms = [room, ...recentRooms().filter((r) => !sameRoom(r, room))].slice(0, MAX_ROOMS);
  save(KEY_ROOMS, JSON.stringify(rooms));
}

function drafts() {
  const v = loadJson(KEY_DRAFTS, {});
  return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
}

export function loadDraft(room) {
  const d = drafts()[roomKey(room)];
  return d && typeof d.text === 'string' ? d.text : '';
}

export function saveDraft(room, text) {
  const all = drafts();
  const key = roomKey(room);
  if (text) all[key] = { text, at: Date.now() };
  else delete all[key];
  const kept = Object.entries(all)
    .sort((a, b) => (b[1].at || 0) - (a[1].at || 0))
    .slice(0, MAX_DRAFTS);
  save(KEY_DRAFTS, kept.length ? JSON.stringify(Object.fromEntries(kept)) : null);
}

/** [`${user}\n${messageId}`, [emoji]] pairs, the most recently changed first. */
function ownList() {
  const v = loadJson(KEY_OWN, []);
  return Array.isArray(v) ? v.filter((e) => Array.isArray(e) && typeof e[0] === 'string' && Array.isArray(e[1])) : [];
}

/** The emoji `user` reacted with on message `id`, as this browser last saw. */
export function ownReactions(user, id) {
  const hit = ownList().find((e) => e[0] === `${user}\n${id}`);
  return new Set(hit ? hit[1].filter((x) => typeof x === 'string') : []);
}

/** Remembers `emoji` (a Set) as what `user` reacted with on message `id`. */
export function rememberOwnReactions(user, id, emoji) {
  const key = `${user}\n${id}`;
  const rest = ownList().filter((e) => e[0] !== key);
  const kept = (emoji.size ? [[key, [...emoji]], ...rest] : rest).slice(0, MAX_OWN);
  save(KEY_OWN, kept.length ? JSON.stringify(kept) : null);
}
