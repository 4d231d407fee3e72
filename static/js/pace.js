// The server's rate limit, kept on this side too (protocol.md "Limits"):
// `messages_per_second` requests a second with a burst of twice that, for
// every request a connection sends (typing and pings too). connection.js
// spends a token per request; the composer sends what it queued only as
// tokens allow, so a queue emptied at once after a reconnect is not
// refused (and, past the burst, closed with 1008).
//
// The bucket outlives a connection, as the server's per-identity one does:
// reconnecting does not refill it. A rate of 0 means no limit.

import { config } from './config.js';

const rate = Math.max(0, Number(config.messages_per_second) || 0);
const burst = 2 * rate;
let tokens = burst;
let at = Date.now();

function refill() {
  const now = Date.now();
  tokens = Math.min(burst, tokens + ((now - at) / 1000) * rate);
  at = now;
}

/** A request went out. */
export function spend() {
  if (!rate) return;
  refill();
  tokens -= 1;
}

/**
 * Milliseconds until a request may go with `spare` tokens left over for
 * what the person does meanwhile (a reaction, a ping); 0: now.
 */
export function waitFor(spare = 0) {
  if (!rate) return 0;
  refill();
  const missing = 1 + spare - tokens;
  return missing <= 0 ? 0 : Math.ceil((missing / rate) * 1000);
}
