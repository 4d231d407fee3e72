// Liveness: a connection that dies without a word (a relay that stops
// forwarding but never closes), the browser going offline, a full server,
// and people reconnecting without filling the log with leave/join lines.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, startRelay, openChat, sendMessage, messageWithText, waitConnected, unexpectedProblems, startSuite, stopSuite,
} from './helpers.js';

let server;
let browser;
const FAILED_WS = [/WebSocket connection to .* failed/, /Failed to load resource/];

before(async () => { ({ server, browser } = await startSuite()); });

after(() => stopSuite({ server, browser }));

const state = (page, s) => page.getByTestId('conn-status').and(page.locator(`[data-state="${s}"]`));

test('a silently dead connection is noticed within seconds; the message sent into it arrives exactly once', async () => {
  const relay = await startRelay(server.port);
  const bob = await openChat(browser, server.url, { room: 'dead-link', user: 'bob' });
  const alice = await openChat(browser, relay.url, { room: 'dead-link', user: 'alice' });
  await sendMessage(alice, 'before the silence');
  await messageWithText(bob, 'before the silence').waitFor();

  relay.stall(); // nothing gets through any more, and nothing is closed
  const box = alice.getByTestId('composer-input');
  await box.fill('into the void');
  await box.press('Enter');
  // No echo within the deadline: the page stops claiming "Connected".
  await state(alice, 'reconnecting').waitFor({ timeout: 20000 });
  await alice.getByTestId('conn-banner').getByText('The connection stopped responding', { exact: false }).waitFor();
  const mine = messageWithText(alice, 'into the void');
  assert.equal(await mine.getByTestId('message-status').textContent(), 'Waiting for the connection…');

  relay.resume();
  await waitConnected(alice, 30000);
  await messageWithText(bob, 'into the void').waitFor();
  await mine.and(alice.locator(':not(.msg--pending)')).waitFor();
  await sendMessage(bob, 'after the silence');
  await messageWithText(alice, 'after the silence').waitFor();
  for (const p of [alice, bob]) {
    assert.deepEqual(await p.getByTestId('message-text').allTextContents(),
      ['before the silence', 'into the void', 'after the silence'], 'each message once, in order');
  }
  assert.ok(relay.accepted >= 2, 'the page opened a new connection');
  assert.deepEqual(unexpectedProblems(alice, FAILED_WS), []);
  await alice.context().close();
  await bob.context().close();
  await relay.close();
});

test('an idle dead connection is found by the heartbeat', async () => {
  const relay = await startRelay(server.port);
  const alice = await openChat(browser, relay.url, { room: 'idle-link', user: 'alice' });
  relay.stall();
  // Nothing is sent by the person: the page's own ping goes unanswered.
  await state(alice, 'reconnecting').waitFor({ timeout: 40000 });
  relay.resume();
  await waitConnected(alice, 30000);
  await alice.context().close();
  await relay.close();
});

test('going offline closes the connection at once; what is typed offline is sent once on return; stale errors go', async () => {
  const bob = await openChat(browser, server.url, { room: 'offline', user: 'bob' });
  const alice = await openChat(browser, server.url, { room: 'offline', user: 'alice' });
  await sendMessage(bob, 'react to me');
  const target = messageWithText(alice, 'react to me');
  await target.and(alice.locator('[data-id]:not([data-id=""])')).waitFor();

  await alice.context().setOffline(true);
  await state(alice, 'offline').waitFor({ timeout: 10000 });
  await alice.getByTestId('conn-banner').getByText('You are offline', { exact: false }).waitFor();

  // Reacting offline says so...
  await target.hover();
  await target.getByTestId('add-reaction').click();
  await alice.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();
  await alice.getByTestId('toast').filter({ hasText: 'You are offline' }).waitFor();
  // ...and a message written offline waits in the log, saying when it goes.
  await alice.getByTestId('composer-input').fill('written offline');
  await alice.getByTestId('composer-input').press('Enter');
  const queued = messageWithText(alice, 'written offline');
  assert.equal(await queued.getByTestId('message-status').textContent(), 'Not sent yet: it goes once reconnected.');
  assert.equal(await alice.getByTestId('composer-input').inputValue(), '');

  await alice.context().setOffline(false);
  await waitConnected(alice, 30000);
  await messageWithText(bob, 'written offline').waitFor();
  await queued.and(alice.locator(':not(.msg--pending)')).waitFor();
  // The "offline" notice is gone once back.
  await alice.getByTestId('toast').filter({ hasText: 'You are offline' }).waitFor({ state: 'detached' });
  await alice.getByTestId('conn-banner').waitFor({ state: 'hidden' });
  await sendMessage(bob, 'welcome back');
  await messageWithText(alice, 'welcome back').waitFor();
  assert.deepEqual(await bob.getByTestId('message-text').allTextContents(), ['react to me', 'written offline', 'welcome back']);
  assert.deepEqual(await alice.getByTestId('message-text').allTextContents(), ['react to me', 'written offline', 'welcome back']);
  await alice.context().close();
  await bob.context().close();
});

test('a reconnect is one "reconnected" line with its time, not a leave and a join', async () => {
  const alice = await openChat(browser, server.url, { room: 'churn', user: 'alice' });
  const bob = await openChat(browser, server.url, { room: 'churn', user: 'bob' });
  const notices = alice.getByTestId('notice');
  await notices.filter({ hasText: 'bob joined' }).waitFor();

  await bob.context().setOffline(true);
  const left = notices.filter({ hasText: 'bob left' });
  await left.waitFor();
  assert.ok(!Number.isNaN(Date.parse(await left.locator('time').getAttribute('datetime'))), 'presence lines carry a time');
  await bob.context().setOffline(false);
  await waitConnected(bob, 30000);
  await notices.filter({ hasText: 'bob reconnected' }).waitFor();
  await sendMessage(bob, 'back');
  await messageWithText(alice, 'back').waitFor();
  const lines = (await notices.allTextContents()).filter((t) => t.includes('bob'));
  assert.equal(lines.length, 2, `one join and one reconnect: ${JSON.stringify(lines)}`);
  assert.match(lines[1], /^bob reconnected · /);
  await alice.context().close();
  await bob.context().close();
});

test('a full server (503 before the upgrade) is explained in words', async () => {
  const full = await startServer({ extraArgs: ['--max-connections', '1'] });
  try {
    const first = await openChat(browser, full.url, { room: 'full', user: 'first' });
    const second = await openChat(browser, full.url, { room: 'full' });
    await second.getByTestId('join-name').fill('second');
    await second.getByTestId('join-submit').click();
    await second.getByTestId('conn-banner').getByText('probably full', { exact: false }).waitFor({ timeout: 20000 });
    // Room again: the next attempt (at most 15 s away) gets in.
    await first.context().close();
    await waitConnected(second, 45000);
    assert.deepEqual(unexpectedProblems(second, FAILED_WS), []);
    await second.context().close();
  } finally {
    await full.cleanup();
  }
});

test('a welcome slow to arrive after the socket opened is waited for, past the handshake deadline', async () => {
  // The page's clock is the test's: the welcome is held while 20 s pass
  // for the page (past the 15 s a handshake may take), then let through.
  const page = await openChat(browser, server.url, { user: undefined });
  await page.clock.install();
  let connections = 0;
  let opened;
  const open = new Promise((resolve) => { opened = resolve; });
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await page.routeWebSocket(/\/ws\//, (ws) => {
    connections += 1;
    const upstream = ws.connectToServer();
    upstream.onMessage(async (frame) => {
      if (JSON.parse(frame).type === 'welcome') { opened(); await held; }
      ws.send(frame);
    });
  });
  await page.getByTestId('join-name').fill('slowpoke');
  await page.getByTestId('join-room').fill('slow-link');
  await page.getByTestId('join-submit').click();
  await open;
  await page.clock.runFor(20000);
  release();
  await waitConnected(page);
  assert.equal(connections, 1, 'the first connection was kept');
  assert.deepEqual(unexpectedProblems(page), []);
  await page.context().close();
});
