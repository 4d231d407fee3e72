// The server's settings for this page (<meta name="roomcast-config">) and
// the client's own timings, in one place.

const DEFAULTS = {
  ws_path: '/ws',
  upload_path: '/upload',
  max_message_chars: 4000,
  max_upload_bytes: 10 * 1024 * 1024,
  messages_per_second: 10,
  history: 50,
  auth: 'open', // 'token': joining needs an invite link
  media: 'local', // 's3': files go straight to storage through presign_path
  presign_path: '/api/uploads',
};

function read() {
  const meta = document.querySelector('meta[name="roomcast-config"]');
  try {
    // The browser has already decoded the HTML-attribute escaping.
    return { ...DEFAULTS, ...JSON.parse(meta ? meta.content : '{}') };
  } catch {
    // e.g. the template opened without the server filling in {{config}}.
    return { ...DEFAULTS };
  }
}

export const config = read();

/** Consecutive messages of one author within this window form one group. */
export const GROUP_WINDOW_MS = 5 * 60 * 1000;
/** Matches the server's per-user typing throttle. */
export const TYPING_SEND_EVERY_MS = 2000;
export const TYPING_SHOW_MS = 4000;

/** Reconnect backoff: exponential from BASE to MAX, with jitter. */
export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 15000;
/** A welcomed connection that stays up this long starts the backoff over. */
export const STABLE_MS = 10000;
/** Liveness: ping when nothing was heard for this long... */
export const HEARTBEAT_IDLE_MS = 10000;
/** ...and a request (ping, message, edit...) unanswered this long means the link is dead. */
export const ANSWER_DEADLINE_MS = 5000;
/** An attempt whose socket has not opened after this long is abandoned and retried... */
export const CONNECT_DEADLINE_MS = 15000;
/** ...and so is one with no whole `welcome` this long after it opened (up to 1 MiB, on a slow link). */
export const WELCOME_DEADLINE_MS = 90000;

/**
 * Timings a test may shorten through the page's config (the <meta> the
 * server fills in; the server never sends these, a test rewrites it): a
 * positive number there wins over the default.
 */
const timing = (name, ms) => (Number.isFinite(config[name]) && config[name] > 0 ? config[name] : ms);
/** A history page with no whole answer after this long is given up (and offered again). */
export const HISTORY_DEADLINE_MS = timing('history_deadline_ms', 20000);
/** An upload that moves no byte and gets no answer for this long is cut off (and offered again). */
export const UPLOAD_STALL_MS = timing('upload_stall_ms', 30000);

/** A leave followed by a join of the same name within this window is one "reconnected". */
export const PRESENCE_MERGE_MS = 60000;
/** Join and leave lines kept in the log; past it the oldest leaves. */
export const MAX_PRESENCE_LINES = 100;
/** The online list is fetched whole (it disagreed with a count) at most this often. */
export const PRESENCE_REFRESH_MS = 10000;
/** Messages longer than this (characters or lines) are shown folded, with "Show more". */
export const LONG_MESSAGE_CHARS = 700;
export const LONG_MESSAGE_LINES = 12;
/** Attachments waiting to be sent at once; more are refused by name. */
export const MAX_FILES = 10;
/** Active rooms shown in the sidebar (the server lists up to 50). */
export const ACTIVE_ROOMS_SHOWN = 8;
