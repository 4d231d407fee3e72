// Resilience: a dropped connection resumes with ?after=<seq> (no duplicates,
// no gaps), and a server restart is survived: history is durable, so the
// conversation simply carries on.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, openChat, joinAs, sendMessage, messageWithText, waitConnected, startSuite, stopSuite,
  unexpectedProblems,
} from './helpers.js';

let server;
let browser;
const retired = []; // servers replaced by a restart: their directories go at the end

before(async () => { ({ server, browser } = await startSuite()); });

after(async () => {
  await stopSuite({ server, browser });
  for (const s of retired) await s.cleanup();
});

/** How many messages with exactly this text the page shows. */
async function count(page, text) {
  return messageWithText(page, text).count();
}

test('a dropped connection resumes after the last seen message, without duplicates', async () => {
  const bob = await openChat(browser, server.url, { room: 'resume', user: 'bob' });
  const alice = await openChat(browser, server.url, { user: undefined });
  // Put a test-controlled proxy between Alice's page and the server, so the
  // test can cut her connection while the server keeps running.
  const urls = [];
  let current = null;
  let gate = Promise.resolve();
  await alice.routeWebSocket(/\/ws\//, async (ws) => {
    urls.push(ws.url());
    await gate;
    ws.connectToServer();
    current = ws;
  });
  await joinAs(alice, server.url, 'resume', 'alice');

  await sendMessage(bob, 'before the drop');
  await messageWithText(alice, 'before the drop').waitFor();

  let open;
  gate = new Promise((r) => { open = r; });
  await current.close({ code: 1013, reason: 'test' });
  await alice.getByTestId('conn-status').and(alice.locator('[data-state="reconnecting"]')).waitFor();
  await alice.getByTestId('conn-banner').getByText('fell behind', { exact: false }).waitFor();

  // What Alice sends while away waits in the log, saying so.
  await alice.getByTestId('composer-input').fill('typed while away');
  await alice.getByTestId('composer-input').press('Enter');
  const waiting = messageWithText(alice, 'typed while away');
  assert.equal(await waiting.getByTestId('message-status').textContent(), 'Not sent yet: it goes once reconnected.');

  for (const t of ['missed 1', 'missed 2', 'missed 3']) await sendMessage(bob, t);
  open();
  await waitConnected(alice);
  assert.ok(urls.length >= 2);
  assert.match(urls.at(-1), /[?&]after=\d+(&|$)/, 'resumed with ?after=');

  for (const t of ['missed 1', 'missed 2', 'missed 3']) await messageWithText(alice, t).waitFor();
  // Sent by itself once back, exactly once.
  await messageWithText(bob, 'typed while away').waitFor();
  await messageWithText(alice, 'typed while away').and(alice.locator(':not(.msg--pending)')).waitFor();

  const texts = await alice.getByTestId('message-text').allTextContents();
  assert.deepEqual(texts, ['before the drop', 'missed 1', 'missed 2', 'missed 3', 'typed while away']);
  assert.equal(await alice.getByText('Some messages were missed', { exact: false }).count(), 0);
  await alice.context().close();
  await bob.context().close();
});

test('a server restart: reconnecting state, then connected, history kept, messages exactly once', async () => {
  const alice = await openChat(browser, server.url, { room: 'restart', user: 'alice' });
  const bob = await openChat(browser, server.url, { room: 'restart', user: 'bob' });
  await sendMessage(alice, 'old 1');
  await sendMessage(bob, 'old 2');
  await messageWithText(alice, 'old 2').waitFor();

  const { port } = server;
  const { code } = await server.stop();
  assert.equal(code, 0, 'SIGTERM exits 0');
  for (const p of [alice, bob]) {
    await p.getByTestId('conn-status').and(p.locator('[data-state="reconnecting"], [data-state="offline"]')).waitFor();
    await p.getByTestId('conn-banner').getByText('The server is restarting', { exact: false }).waitFor();
  }

  // The same data directory: the restarted server has the room's history.
  retired.push(server);
  server = await startServer({ port, uploadsDir: server.uploadsDir, dataDir: server.dataDir });
  await waitConnected(alice, 30000);
  await waitConnected(bob, 30000);
  await alice.getByTestId('conn-banner').waitFor({ state: 'hidden' });

  // Nothing was forgotten and nothing missed: the resume continues where it was.
  for (const p of [alice, bob]) {
    assert.equal(await p.getByText('The server was restarted', { exact: false }).count(), 0);
    assert.equal(await p.getByText('Some messages were missed', { exact: false }).count(), 0);
    assert.equal(await p.locator('.msg--archived').count(), 0, 'old messages keep their actions');
    assert.deepEqual(await p.getByTestId('message-text').allTextContents(), ['old 1', 'old 2']);
  }

  await sendMessage(alice, 'after restart 1');
  await sendMessage(bob, 'after restart 2');
  await messageWithText(alice, 'after restart 2').waitFor();
  await messageWithText(bob, 'after restart 1').waitFor();
  // A further message proves the seq bookkeeping after the reset works too.
  await sendMessage(alice, 'after restart 3');
  await messageWithText(bob, 'after restart 3').waitFor();
  for (const p of [alice, bob]) {
    const texts = await p.getByTestId('message-text').allTextContents();
    assert.deepEqual(texts, ['old 1', 'old 2', 'after restart 1', 'after restart 2', 'after restart 3']);
    assert.equal(await count(p, 'after restart 1'), 1);
  }
  // Everyone "joins" a restarted server again; that is not news.
  const lines = await alice.getByTestId('notice').allTextContents();
  assert.equal(lines.filter((t) => t.startsWith('bob joined')).length, 1, `only the first "bob joined": ${JSON.stringify(lines)}`);
  // Browsers log the refused WebSocket attempts while the server was down; nothing else.
  for (const p of [alice, bob]) {
    assert.deepEqual(p.problems.filter((m) => !/WebSocket connection to .* failed/.test(m)), []);
  }
});

test('a message whose echo was lost and that was deleted meanwhile can be posted anew', async () => {
  const bob = await openChat(browser, server.url, { room: 'gone', user: 'bob' });
  const alice = await openChat(browser, server.url, { user: undefined });
  // A proxy that loses the echo of one message: the server posts it, and the
  // author deletes it at once (as another tab of theirs could) before this
  // page ever saw it; then the link drops.
  let lost = false;
  let current = null;
  await alice.routeWebSocket(/\/ws\//, async (ws) => {
    const upstream = ws.connectToServer();
    current = ws;
    upstream.onMessage((m) => {
      const ev = JSON.parse(m);
      if (!lost && ev.type === 'message' && ev.content === 'posted then deleted') {
        lost = true;
        upstream.send(JSON.stringify({ type: 'delete', message_id: ev.message_id }));
        return;
      }
      if (ev.type === 'message_deleted' && current === ws) {
        ws.close({ code: 1013, reason: 'test' });
        return;
      }
      ws.send(m);
    });
    ws.onMessage((m) => upstream.send(m));
  });
  await joinAs(alice, server.url, 'gone', 'alice');

  await alice.getByTestId('composer-input').fill('posted then deleted');
  await alice.getByTestId('composer-input').press('Enter');
  // Back with a history that holds everything since: the page sends it again
  // by itself, under the same client_id, and the server says it is gone.
  const failed = messageWithText(alice, 'posted then deleted').and(alice.locator('.msg--failed'));
  await failed.waitFor();
  assert.match(await failed.getByTestId('message-status').textContent(), /Send again to post it anew/);
  assert.ok(lost);
  await bob.getByTestId('message-deleted').waitFor();

  // The person chooses to post it again: that is a new message, and it goes.
  await failed.getByTestId('retry-message').click();
  await messageWithText(alice, 'posted then deleted').and(alice.locator(':not(.msg--pending)')).waitFor();
  await messageWithText(bob, 'posted then deleted').waitFor();
  for (const p of [alice, bob]) assert.equal(await count(p, 'posted then deleted'), 1);
  assert.deepEqual(unexpectedProblems(alice), []);
  await alice.context().close();
  await bob.context().close();
});
