// The WebSocket to the current room: connecting, resuming with ?after=,
// backoff, and knowing the link is alive.
//
// Liveness: the server pings every 25 s, but a browser never tells the page
// about those, so a silently dead link (laptop sleep, NAT timeout, network
// change) would look healthy for minutes. The client therefore pings when
// it has heard nothing for HEARTBEAT_IDLE_MS, and any request that gets no
// frame back within ANSWER_DEADLINE_MS (a ping's pong, a message's echo)
// ends the connection and starts a new one. The browser's `offline` event
// ends it at once; coming back to the tab probes it at once.
//
// Who we are travels on the URL: the claim (open mode) and the invitation's
// token (token mode); the server ignores the one it does not use. Some
// refusals cannot be cured by trying again (the name is someone else's, the
// invitation expired): then the connection stops and says what to do.

import {
  config, BACKOFF_BASE_MS, BACKOFF_MAX_MS, HEARTBEAT_IDLE_MS, ANSWER_DEADLINE_MS, CONNECT_DEADLINE_MS, STABLE_MS,
  WELCOME_DEADLINE_MS,
} from './config.js';
import { els } from './dom.js';
import { state } from './state.js';
import { dropClaim, savedClaim } from './identity.js';
import {
  dropToken, inviteFor, onTokenStored, tokenFor, usable,
} from './token.js';
import { expiredText, explainRefusal, preflight } from './refusal.js';
import { spend } from './pace.js';

let handlers = { event() {}, dropped() {}, refused() {} };
/**
 * `event(ev)` gets every server event; `dropped()` runs when a connection
 * ends; `refused({ field, text })` when trying again cannot help and the join
 * form should say why (`field`: 'name' or 'room' when that has to change).
 */
export function onConnection(h) { handlers = h; }

let retryTimer = 0;
let countdownTimer = 0;
let connectTimer = 0;
let heartbeatTimer = 0;
let retryAt = 0;
let retryDelay = 0; // the last reconnect delay scheduled (ms), for the debug hook
let stableTimer = 0;
let lastHeard = 0;
let awaitingSince = 0; // when the oldest unanswered request was sent; 0 if none
let presented = null; // the invitation this connection uses (token mode): `{ token, exp }`, or null

/**
 * The room's WebSocket path and query. A room session sticks to the claim
 * it started with (`state.claim`), so a reconnect is the same identity
 * even if another tab stored a different claim meanwhile.
 */
function wsPath() {
  const q = new URLSearchParams();
  // A reconnect resumes, even from nothing seen (a room that was empty):
  // without `after` the server would send only its last 50, with no gap
  // for what came before them.
  if (state.hasConnected || state.lastSeq > 0) q.set('after', String(state.lastSeq));
  if (!state.claim) state.claim = savedClaim();
  if (state.claim) q.set('claim', state.claim);
  const inv = inviteFor(state.user, state.room);
  presented = inv && { token: inv.token, exp: inv.exp };
  if (inv) q.set('token', inv.token);
  const query = q.toString();
  return `${config.ws_path}/${encodeURIComponent(state.room)}/${encodeURIComponent(state.user)}${query ? `?${query}` : ''}`;
}

function wsUrl(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}

function clearTimers() {
  clearTimeout(retryTimer);
  clearTimeout(stableTimer);
  clearInterval(countdownTimer);
  clearTimeout(connectTimer);
  clearInterval(heartbeatTimer);
}

export function connect() {
  clearTimers();
  if (state.ws) detach(state.ws);
  if (!navigator.onLine) {
    // No network at all: wait for `online` (with a slow retry in case it never comes).
    state.closeReason = 'You are offline.';
    scheduleReconnect();
    return;
  }
  setConnState(state.hasConnected ? 'reconnecting' : 'connecting');
  const path = wsPath();
  let ws;
  try {
    ws = new WebSocket(wsUrl(path));
  } catch (err) {
    // Only a malformed URL throws here; treat it like a failed attempt.
    state.closeReason = `Could not open a connection (${err.message}).`;
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  let opened = false;
  // Two deadlines: the handshake, then the welcome. The welcome's starts at
  // `open` and is generous: it may be a megabyte on a slow phone link.
  connectTimer = setTimeout(() => {
    if (state.ws === ws) lost(ws, 'The server did not answer in time.');
  }, CONNECT_DEADLINE_MS);
  ws.addEventListener('open', () => {
    opened = true;
    if (state.ws !== ws) return;
    clearTimeout(connectTimer);
    connectTimer = setTimeout(() => {
      if (state.ws === ws) lost(ws, 'The server did not send the room in time.');
    }, WELCOME_DEADLINE_MS);
  });
  ws.addEventListener('message', (ev) => {
    if (state.ws !== ws) return;
    lastHeard = Date.now();
    awaitingSince = 0;
    let event;
    try { event = JSON.parse(ev.data); } catch { return; }
    handlers.event(event);
  });
  ws.addEventListener('close', (ev) => {
    if (state.ws !== ws) return; // a socket we already let go of
    if (ev.code === 4001 && newerInvite()) {
      // Expired, but a newer invitation for this room was kept meanwhile
      // (opened in a tab that could not tell this one): go on with it.
      state.attempts = 0;
      lost(ws, 'Your invitation expired; connecting with the newer one.');
      return;
    }
    if (ev.code === 4001 || ev.code === 4009) {
      // Trying again cannot help: the invitation expired, or the name went
      // to someone else while we connected.
      detach(ws);
      handlers.dropped();
      if (ev.code === 4009) refuse('name', describeClose(4009));
      else stop(describeClose(4001));
      return;
    }
    // After a shutdown (1001) the retries fail (1006) until the server is
    // back; it is still restarting, so keep saying that.
    if (ev.code === 1001) state.serverRestarting = true;
    const refused = !opened && ev.code === 1006 && !state.serverRestarting;
    lost(ws, state.serverRestarting && ev.code === 1006 ? describeClose(1001) : describeClose(ev.code, ev.reason), ev.code);
    if (refused) askWhy(path, state.closeReason);
  });
  // 'error' is always followed by 'close'; nothing to do here.
}

/**
 * Called by the `welcome` handler: the room is ours, start watching the link.
 * The backoff starts over only once the connection has stayed up for
 * STABLE_MS: a server that welcomes and then closes (busy, 1013; failing,
 * 1011) is tried again later and later, not every half second.
 */
export function welcomed(claim) {
  clearTimeout(connectTimer);
  clearTimeout(stableTimer);
  const { ws } = state;
  stableTimer = setTimeout(() => { if (state.ws === ws) state.attempts = 0; }, STABLE_MS);
  if (claim) state.claim = claim;
  setConnState('connected');
  lastHeard = Date.now();
  awaitingSince = 0;
  clearInterval(heartbeatTimer);
  heartbeatTimer = setInterval(beat, 1000);
}

function beat() {
  if (state.connState !== 'connected' || !state.ws) return;
  const now = Date.now();
  if (awaitingSince && now - awaitingSince > ANSWER_DEADLINE_MS) {
    lost(state.ws, 'The connection stopped responding.');
  } else if (!awaitingSince && now - lastHeard > HEARTBEAT_IDLE_MS) {
    probe();
  }
}

/** Asks the server for a pong: the link is known alive or dead within the deadline. */
export function probe() {
  if (state.connState === 'connected' && !awaitingSince) send({ type: 'ping' });
}

/**
 * Sends a request if connected; false if not. Every request but `typing`
 * gets an answer (echo, update, pong or error), which the heartbeat waits for.
 */
export function send(obj) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || state.connState !== 'connected') return false;
  state.ws.send(JSON.stringify(obj));
  spend();
  if (obj.type !== 'typing' && !awaitingSince) awaitingSince = Date.now();
  return true;
}

/** Lets go of a socket: its events are ignored from now on. */
export function detach(ws) {
  if (state.ws === ws) state.ws = null;
  // A dead link never completes the closing handshake; nobody waits for it.
  try { ws.close(1000); } catch { /* already closed */ }
}

/**
 * Stops everything (leaving the room, or the join screen). A socket let go
 * of here is a dropped connection to those waiting on it: what it was
 * asked will not be answered (a reactions check, a whole list).
 */
export function disconnect() {
  clearTimers();
  const had = state.ws;
  if (had) detach(had);
  awaitingSince = 0;
  setConnState('idle');
  if (had) handlers.dropped();
}

/** The connection ended (closed, dead, or offline): say why and try again. */
function lost(ws, reason, code) {
  detach(ws);
  clearInterval(heartbeatTimer);
  awaitingSince = 0;
  state.closeReason = reason;
  handlers.dropped();
  scheduleReconnect(code);
}

/**
 * A handshake that failed before the socket opened: ask the server why (the
 * preflight, refusal.js), then stop, fix what can be fixed, or keep trying
 * with a better reason on the banner. The retry is already scheduled; a
 * refusal that cannot be cured cancels it.
 */
async function askWhy(path, said) {
  const session = { room: state.room, user: state.user };
  const answer = await preflight(path);
  // Only if nothing newer happened meanwhile.
  const current = state.room === session.room && state.user === session.user
    && state.closeReason === said && (state.connState === 'reconnecting' || state.connState === 'connecting');
  if (!current) return;
  const what = explainRefusal(answer, session);
  if (what.dropClaim) {
    // The stored claim is not one the server would have made: go without,
    // and the next welcome hands out a new one.
    dropClaim(state.claim);
    state.claim = '';
    state.attempts = 0;
    connect();
    return;
  }
  if (what.dropToken) dropToken(tokenFor(session.user, session.room));
  // An invitation problem in a room we were chatting in keeps the
  // conversation on screen; before that, the join form is the place to say it.
  if (what.stop === 'token' && state.hasConnected) stop(what.text);
  else if (what.stop) refuse(what.stop, what.text);
  else if (what.text) {
    state.closeReason = what.text;
    updateCountdown();
  }
}

/** Back to the join form, saying why (`field`: 'name' or 'room' when that is what has to change). */
function refuse(field, text) {
  disconnect();
  handlers.refused({ field, text });
}

/**
 * Trying again cannot help (an expired invitation): keep the conversation
 * on screen, say what to do, and make no more attempts. `Retry now` stays,
 * for after a new invite link was opened in another tab.
 */
function stop(text) {
  clearTimers();
  if (state.ws) detach(state.ws);
  clearInterval(heartbeatTimer);
  awaitingSince = 0;
  state.closeReason = text;
  setConnState('stopped');
  els.bannerText.textContent = text;
}

/** Close codes the server uses (docs/protocol.md), in words a user can act on. */
export function describeClose(code, reason) {
  switch (code) {
    case 1000: return 'The connection was closed.';
    case 1001: return 'The server is restarting.';
    case 1008: return 'You were disconnected for sending too many messages too quickly.';
    case 1009: return 'The last message was too large for the server.';
    case 1011: return 'The server hit an error.';
    case 1013: return 'The connection fell behind (slow network) or the server is busy.';
    case 4001: return expiredText();
    case 4009: return `${state.user ? `“${state.user}”` : 'This name'} was taken by someone else in this room just as you joined; pick another name.`;
    default:
      if (!navigator.onLine) return 'You are offline.';
      return reason ? `Connection lost (${reason}).` : 'Connection lost.';
  }
}

/**
 * A kept invitation for this name that opens this room, has not expired
 * and is not the one this connection presented; null if none.
 */
function newerInvite() {
  const inv = inviteFor(state.user, state.room);
  return inv && usable(inv) && inv.token !== presented?.token ? inv : null;
}

/**
 * A new invitation was kept (an invite link opened in this tab, or in
 * another one) that opens the room we are in: a live connection renews
 * its token in place (`auth`) when the new one lasts longer; a stopped one
 * (its invitation expired) or one waiting to reconnect tries again now.
 */
export function presentNewToken() {
  const inv = newerInvite();
  if (!inv) return;
  if (state.connState === 'connected') {
    if (presented && inv.exp <= presented.exp) return;
    if (send({ type: 'auth', token: inv.token })) presented = { token: inv.token, exp: inv.exp };
  } else if (state.connState === 'stopped' || state.connState === 'reconnecting' || state.connState === 'offline') {
    state.attempts = 0;
    connect();
  }
}

function scheduleReconnect(code) {
  clearTimers();
  state.attempts += 1;
  // Exponential backoff with jitter, so a restarted server is not hit by every
  // client at the same instant. Being told we flooded earns a longer pause.
  const base = code === 1008 ? 5000 : BACKOFF_BASE_MS;
  const cap = Math.min(BACKOFF_MAX_MS, base * 2 ** Math.min(state.attempts - 1, 10));
  const delay = Math.round(cap / 2 + Math.random() * (cap / 2));
  retryDelay = delay;
  retryAt = Date.now() + delay;
  setConnState(navigator.onLine ? 'reconnecting' : 'offline');
  updateCountdown();
  countdownTimer = setInterval(updateCountdown, 1000);
  retryTimer = setTimeout(connect, delay);
}

/** The delay of the last reconnect scheduled (ms). */
export const scheduledDelay = () => retryDelay;

function updateCountdown() {
  const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
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
    reconnecting: 'Reconnecting…', offline: 'Offline', stopped: 'Disconnected',
  }[s];
  const troubled = s === 'reconnecting' || s === 'offline' || s === 'stopped';
  els.banner.hidden = !troubled;
  if (!troubled) clearInterval(countdownTimer);
  document.body.classList.toggle('is-offline', troubled);
}

export function initConnection() {
  els.retryNow.addEventListener('click', () => { state.attempts = 0; connect(); });
  window.addEventListener('online', () => {
    if (state.connState === 'reconnecting' || state.connState === 'offline') { state.attempts = 0; connect(); }
    else probe();
  });
  window.addEventListener('offline', () => {
    if (state.connState === 'idle' || state.connState === 'stopped') return;
    if (state.ws) lost(state.ws, 'You are offline.');
    else setConnState('offline');
  });
  // A new invite link opened in another tab is this tab's too: it renews
  // this connection's invitation, or brings back one stopped on its expiry.
  onTokenStored(presentNewToken);
  // Back from sleep or another tab: find out now, not at the next heartbeat.
  document.addEventListener('visibilitychange', () => { if (!document.hidden) probe(); });
  window.addEventListener('pageshow', () => probe());
}
