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

import {
  config, BACKOFF_BASE_MS, BACKOFF_MAX_MS, HEARTBEAT_IDLE_MS, ANSWER_DEADLINE_MS, CONNECT_DEADLINE_MS,
} from './config.js';
import { els } from './dom.js';
import { state } from './state.js';

let handlers = { event() {}, dropped() {} };
/** `event(ev)` gets every server event; `dropped()` runs when a connection ends. */
export function onConnection(h) { handlers = h; }

let retryTimer = 0;
let countdownTimer = 0;
let connectTimer = 0;
let heartbeatTimer = 0;
let retryAt = 0;
let lastHeard = 0;
let awaitingSince = 0; // when the oldest unanswered request was sent; 0 if none
let turnedAway = 0; // handshakes refused in a row while /health said the server is fine

function wsUrl() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let url = `${proto}//${location.host}${config.ws_path}/${encodeURIComponent(state.room)}/${encodeURIComponent(state.user)}`;
  if (state.lastSeq > 0) url += `?after=${state.lastSeq}`;
  return url;
}

function clearTimers() {
  clearTimeout(retryTimer);
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
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch (err) {
    // Only a malformed URL throws here; treat it like a failed attempt.
    state.closeReason = `Could not open a connection (${err.message}).`;
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  let opened = false;
  connectTimer = setTimeout(() => {
    if (state.ws === ws) lost(ws, 'The server did not answer in time.');
  }, CONNECT_DEADLINE_MS);
  ws.addEventListener('open', () => { opened = true; });
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
    // After a shutdown (1001) the retries fail (1006) until the server is
    // back; it is still restarting, so keep saying that.
    if (ev.code === 1001) state.serverRestarting = true;
    const refused = !opened && ev.code === 1006 && !state.serverRestarting;
    lost(ws, state.serverRestarting && ev.code === 1006 ? describeClose(1001) : describeClose(ev.code, ev.reason), ev.code);
    if (refused) explainRefusal(state.closeReason);
  });
  // 'error' is always followed by 'close'; nothing to do here.
}

/** Called by the `welcome` handler: the room is ours, start watching the link. */
export function welcomed() {
  clearTimeout(connectTimer);
  state.attempts = 0;
  turnedAway = 0;
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
  if (obj.type !== 'typing' && !awaitingSince) awaitingSince = Date.now();
  return true;
}

/** Lets go of a socket: its events are ignored from now on. */
export function detach(ws) {
  if (state.ws === ws) state.ws = null;
  // A dead link never completes the closing handshake; nobody waits for it.
  try { ws.close(1000); } catch { /* already closed */ }
}

/** Stops everything (leaving the room, or the join screen). */
export function disconnect() {
  clearTimers();
  if (state.ws) detach(state.ws);
  setConnState('idle');
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
 * A handshake that failed before the socket opened. The browser never says
 * why (a 503 at the connection limit looks like any failure), so ask
 * /health: a server that is up but refuses twice in a row is turning
 * connections away, which at a healthy server means it is full.
 */
async function explainRefusal(said) {
  let reason;
  try {
    const res = await fetch('/health', { cache: 'no-store' });
    if (res.ok) {
      turnedAway += 1;
      if (turnedAway >= 2) reason = 'The server is up but is not taking new connections right now; it is probably full.';
    } else if (res.status === 503) {
      reason = 'The server is briefly unavailable.';
    }
  } catch {
    reason = navigator.onLine ? 'The server cannot be reached.' : 'You are offline.';
  }
  // Only if nothing newer happened meanwhile.
  if (reason && state.closeReason === said && state.connState !== 'connected') {
    state.closeReason = reason;
    updateCountdown();
  }
}

/** Close codes the server uses (docs/protocol-notes.md), in words a user can act on. */
export function describeClose(code, reason) {
  switch (code) {
    case 1000: return 'The connection was closed.';
    case 1001: return 'The server is restarting.';
    case 1008: return 'You were disconnected for sending too many messages too quickly.';
    case 1009: return 'The last message was too large for the server.';
    case 1011: return 'The server hit an error.';
    case 1013: return 'The connection fell behind (slow network) or the server is busy.';
    default:
      if (!navigator.onLine) return 'You are offline.';
      return reason ? `Connection lost (${reason}).` : 'Connection lost.';
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
  retryAt = Date.now() + delay;
  setConnState(navigator.onLine ? 'reconnecting' : 'offline');
  updateCountdown();
  countdownTimer = setInterval(updateCountdown, 1000);
  retryTimer = setTimeout(connect, delay);
}

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
    reconnecting: 'Reconnecting…', offline: 'Offline',
  }[s];
  const troubled = s === 'reconnecting' || s === 'offline';
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
    if (state.connState === 'idle') return;
    if (state.ws) lost(state.ws, 'You are offline.');
    else setConnState('offline');
  });
  // Back from sleep or another tab: find out now, not at the next heartbeat.
  document.addEventListener('visibilitychange', () => { if (!document.hidden) probe(); });
  window.addEventListener('pageshow', () => probe());
}
