// Resilience: a dropped connection resumes with ?after=<seq> (no duplicates,
// no gaps), a server restart is survived: history is durable, so the
// conversation simply carries on; messages not yet confirmed stay with
// their room across room switches, and a refusal lands on the message it
// answers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, openChat, joinAs, sendMessage, messageWithText, waitConnected, startSuite, stopSuite,
  unexpectedProblems, setTabHidden, gatedSocket,
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
  // A test-controlled proxy between Alice's page and the server cuts her
  // connection while the server keeps running.
  const link = await gatedSocket(alice);
  await joinAs(alice, server.url, 'resume', 'alice');

  await sendMessage(bob, 'before the drop');
  await messageWithText(alice, 'before the drop').waitFor();

  await link.drop();
  await alice.getByTestId('conn-status').and(alice.locator('[data-state="reconnecting"]')).waitFor();
  await alice.getByTestId('conn-banner').getByText('fell behind', { exact: false }).waitFor();

  // What Alice sends while away waits in the log, saying so.
  await alice.getByTestId('composer-input').fill('typed while away');
  await alice.getByTestId('composer-input').press('Enter');
  const waiting = messageWithText(alice, 'typed while away');
  assert.equal(await waiting.getByTestId('message-status').textContent(), 'Not sent yet: it goes once reconnected.');

  for (const t of ['missed 1', 'missed 2', 'missed 3']) await sendMessage(bob, t);
  link.open();
  await link.reconnected();
  assert.match(link.urls.at(-1), /[?&]after=\d+(&|$)/, 'resumed with ?after=');

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

test('messages not yet confirmed stay with their room across room switches, and are posted once back in it', async () => {
  const bob = await openChat(browser, server.url, { room: 'kept', user: 'bob' });
  const alice = await openChat(browser, server.url, { room: 'kept', user: 'alice' });
  await sendMessage(alice, 'hello');
  const inRoom = (name) => alice.getByTestId('room-title').getByText(name, { exact: true }).waitFor();
  const backToKept = async () => {
    await alice.getByTestId('room-list').getByRole('link', { name: '# kept', exact: true }).click();
    await inRoom('kept');
  };
  const statuses = () => alice.getByTestId('message').evaluateAll((els) => els.map((el) => [
    el.querySelector('[data-testid=message-text]').textContent, el.querySelector('[data-testid=message-status]').textContent]));
  const unloadAsks = () => alice.evaluate(() => {
    const e = new Event('beforeunload', { cancelable: true });
    window.dispatchEvent(e);
    return e.defaultPrevented;
  });

  // Sent, and the room left in the same moment: the server posts it, and
  // its echo never reaches this room session.
  await alice.evaluate(() => {
    document.querySelector('[data-testid=composer-input]').value = 'sent, then left';
    document.querySelector('[data-testid=composer]').requestSubmit();
    document.querySelector('[data-testid=room-input]').value = 'kept-away';
    document.querySelector('[data-testid=room-form]').requestSubmit();
  });
  await inRoom('kept-away');
  await waitConnected(alice);
  await messageWithText(bob, 'sent, then left').waitFor();

  // Offline: back in the room it waits, and two more are written.
  await alice.context().setOffline(true);
  await alice.getByTestId('conn-status').and(alice.locator('[data-state="offline"]')).waitFor();
  await backToKept();
  for (const t of ['queued 1', 'queued 2']) {
    await alice.getByTestId('composer-input').fill(t);
    await alice.getByTestId('composer-input').press('Enter');
  }
  // Away with "Go to room" and back with the room list, still offline: all kept, in order.
  await alice.getByTestId('room-input').fill('kept-away');
  await alice.getByTestId('room-input').press('Enter');
  await inRoom('kept-away');
  assert.equal(await alice.getByTestId('message').count(), 0, 'they do not follow into another room');
  await backToKept();
  assert.deepEqual(await statuses(), [
    ['sent, then left', 'Waiting for the connection…'],
    ['queued 1', 'Not sent yet: it goes once reconnected.'],
    ['queued 2', 'Not sent yet: it goes once reconnected.'],
  ]);
  assert.equal(await unloadAsks(), true, 'leaving the page with them asks first');

  // Back online: the one the server took is found in the history, the
  // others go; each is posted once and shown once, in order.
  await alice.context().setOffline(false);
  await waitConnected(alice, 30000);
  await messageWithText(bob, 'queued 2').waitFor();
  await alice.waitForFunction(() => document.querySelectorAll('.msg--pending').length === 0);
  for (const p of [alice, bob]) {
    assert.deepEqual(await p.getByTestId('message-text').allTextContents(), ['hello', 'sent, then left', 'queued 1', 'queued 2']);
  }
  assert.equal(await unloadAsks(), false, 'nothing left to lose');
  assert.deepEqual(unexpectedProblems(alice, [/WebSocket connection to .* failed/, /Failed to load resource/]), []);
  await alice.context().close();
  await bob.context().close();
});

test('a refusal lands on the message it answers when "Send again" re-sent an older one after it', async () => {
  const alice = await openChat(browser, server.url, { user: undefined });
  // A proxy that refuses the first send of "older" (so it offers "Send
  // again") and every send of "newer", as the server would: in request order.
  let olderRefused = false;
  await alice.routeWebSocket(/\/ws\//, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((m) => {
      const req = JSON.parse(m);
      const refuse = req.type === 'message' && (req.content === 'newer' || (req.content === 'older' && !olderRefused));
      if (!refuse) { upstream.send(m); return; }
      if (req.content === 'older') olderRefused = true;
      ws.send(JSON.stringify({ type: 'error', code: req.content === 'older' ? 'unavailable' : 'rate_limited', message: 'test', ref: 'message' }));
    });
  });
  await joinAs(alice, server.url, 'refusals', 'alice');
  await alice.getByTestId('composer-input').fill('older');
  await alice.getByTestId('composer-input').press('Enter');
  const older = messageWithText(alice, 'older');
  await older.and(alice.locator('.msg--failed')).waitFor();

  // "newer" goes, then "older" again, in one go: the refusal that comes
  // first answers "newer".
  await alice.evaluate(() => {
    document.querySelector('[data-testid=composer-input]').value = 'newer';
    document.querySelector('[data-testid=composer]').requestSubmit();
    document.querySelector('[data-testid=retry-message]').click();
  });
  await older.and(alice.locator(':not(.msg--pending)')).waitFor();
  const newer = messageWithText(alice, 'newer');
  assert.equal(await newer.evaluate((el) => el.classList.contains('msg--failed')), true, 'the refusal is on "newer"');
  assert.equal(await newer.getByTestId('message-status').textContent(), 'You are sending too fast. Wait a moment and try again.');
  assert.equal(await older.getByTestId('message-status').textContent(), '');
  assert.deepEqual(await alice.getByTestId('message-text').allTextContents(), ['newer', 'older']);
  assert.deepEqual(unexpectedProblems(alice), []);
  await alice.context().close();
});

/**
 * A reader in `room` behind a proxy the test can cut, with `cut()` (the
 * link drops and reconnecting waits) and `restore()` (it goes through).
 */
async function cuttableChat(room, user, viewport) {
  const page = await openChat(browser, server.url, { user: undefined, viewport });
  let current = null;
  let gate = Promise.resolve();
  let open = () => {};
  await page.routeWebSocket(/\/ws\//, async (ws) => {
    await gate;
    ws.connectToServer();
    current = ws;
  });
  await joinAs(page, server.url, room, user);
  return {
    page,
    async cut() {
      gate = new Promise((r) => { open = r; });
      await current.close({ code: 1013, reason: 'test' });
      await page.getByTestId('conn-status').and(page.locator('[data-state="reconnecting"]')).waitFor();
    },
    async restore() {
      open();
      await waitConnected(page);
    },
  };
}

test('messages missed while disconnected are new: the "New" line above the first, the pill counting them, one announcement', async () => {
  const { page: reader, cut, restore } = await cuttableChat('missed', 'reader', { width: 800, height: 500 });
  const writer = await openChat(browser, server.url, { room: 'missed', user: 'writer' });
  for (let i = 1; i <= 12; i++) await sendMessage(writer, `read ${i}`);
  await messageWithText(reader, 'read 12').waitFor();
  const missed = Array.from({ length: 20 }, (_, i) => `missed ${i + 1}`);

  // Following along at the bottom when the link drops.
  await cut();
  for (const t of missed) await sendMessage(writer, t);
  await restore();
  await messageWithText(reader, 'missed 20').waitFor({ state: 'attached' });

  const divider = reader.getByTestId('new-divider');
  assert.equal(await divider.count(), 1);
  assert.equal(await divider.evaluate((el) => el.nextElementSibling.querySelector('.msg-text').textContent), 'missed 1');
  await reader.getByTestId('new-pill').getByText('20 new messages ↓').waitFor();
  // One summary for screen readers, not the last of twenty.
  assert.equal(await reader.getByTestId('announcer').textContent(), '20 new messages');
  // The view shows where the missed messages begin, not where they end.
  const inView = (text) => messageWithText(reader, text).evaluate((li) => {
    const list = li.closest('#messages').getBoundingClientRect();
    const r = li.getBoundingClientRect();
    return r.bottom > list.top && r.top < list.bottom;
  });
  assert.equal(await inView('missed 1'), true, '"missed 1" in view');
  assert.equal(await inView('missed 20'), false, 'not jumped to the newest');

  // Read to the end: the pill goes, the line stays until the reader writes.
  await reader.getByTestId('new-pill').click();
  await reader.getByTestId('new-pill').waitFor({ state: 'hidden' });
  assert.equal(await divider.count(), 1);
  await sendMessage(reader, 'back');
  assert.equal(await divider.count(), 0);
  assert.deepEqual(unexpectedProblems(reader), []);
  for (const p of [reader, writer]) await p.context().close();
});

test('a reader scrolled up in a hidden tab stays in place after a resume; the title counts what was missed', async () => {
  const { page: reader, cut, restore } = await cuttableChat('missed-away', 'reader', { width: 800, height: 500 });
  const writer = await openChat(browser, server.url, { room: 'missed-away', user: 'writer' });
  for (let i = 1; i <= 12; i++) await sendMessage(writer, `read ${i}`);
  await messageWithText(reader, 'read 12').waitFor();
  const list = reader.getByTestId('messages');
  const where = await list.evaluate((l) => { l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); return l.scrollTop; });

  await setTabHidden(reader, true);
  await cut();
  for (const t of ['away 1', 'away 2', 'away 3']) await sendMessage(writer, t);
  await restore();
  await messageWithText(reader, 'away 3').waitFor({ state: 'attached' });

  assert.equal(await reader.title(), '(3) #missed-away · roomcast');
  await reader.getByTestId('new-pill').getByText('3 new messages ↓').waitFor({ state: 'attached' });
  assert.equal(await reader.getByTestId('new-divider').evaluate((el) => el.nextElementSibling.querySelector('.msg-text').textContent), 'away 1');
  assert.equal(await list.evaluate((l) => l.scrollTop), where, 'the view did not move');
  await setTabHidden(reader, false);
  assert.equal(await reader.title(), '#missed-away · roomcast');
  assert.deepEqual(unexpectedProblems(reader), []);
  for (const p of [reader, writer]) await p.context().close();
});

test('edits, deletes and reactions made while a page was offline are shown once it is back', async () => {
  const alice = await openChat(browser, server.url, { room: 'away', user: 'alice' });
  const bob = await openChat(browser, server.url, { room: 'away', user: 'bob' });
  for (const t of ['to edit', 'to delete', 'to react to', 'unchanged']) await sendMessage(alice, t);
  await messageWithText(bob, 'unchanged').waitFor();

  await bob.context().setOffline(true);
  await bob.getByTestId('conn-status').and(bob.locator('[data-state="offline"]')).waitFor();

  // Alice changes three of them while Bob's page is away.
  const toEdit = messageWithText(alice, 'to edit');
  await toEdit.hover();
  await toEdit.getByTestId('edit-message').click();
  await alice.getByTestId('edit-input').fill('edited while away');
  await alice.getByTestId('edit-input').press('Enter');
  await messageWithText(alice, 'edited while away').getByTestId('message-edited').waitFor();
  alice.once('dialog', (d) => d.accept());
  const doomed = messageWithText(alice, 'to delete');
  await doomed.hover();
  await doomed.getByTestId('delete-message').click();
  await doomed.waitFor({ state: 'detached' });
  const liked = messageWithText(alice, 'to react to');
  await liked.hover();
  await liked.getByTestId('add-reaction').click();
  await alice.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();
  await liked.getByTestId('reaction-count').getByText('1', { exact: true }).waitFor();

  await bob.context().setOffline(false);
  await waitConnected(bob);
  await messageWithText(bob, 'edited while away').getByTestId('message-edited').waitFor();
  await bob.getByTestId('message-deleted').getByText('alice deleted a message').waitFor();
  const thumb = messageWithText(bob, 'to react to').getByTestId('reaction').filter({ hasText: '👍' });
  await thumb.getByTestId('reaction-count').getByText('1', { exact: true }).waitFor();
  assert.deepEqual(await bob.getByTestId('message-text').allTextContents(), ['edited while away', 'to react to', 'unchanged']);
  assert.deepEqual(unexpectedProblems(bob, [/WebSocket connection to .* failed/]), []);
  await alice.context().close();
  await bob.context().close();
});

test('live edits and reactions are not recorded for a resync when none runs (the record does not grow all session)', async () => {
  const alice = await openChat(browser, server.url, { room: 'no-record', user: 'alice' });
  const bob = await openChat(browser, server.url, { room: 'no-record', user: 'bob' });
  for (const t of ['first', 'second']) await sendMessage(alice, t);
  const first = messageWithText(alice, 'first');
  await first.hover();
  await first.getByTestId('edit-message').click();
  await alice.getByTestId('edit-input').fill('first, edited');
  await alice.getByTestId('edit-input').press('Enter');
  const second = messageWithText(alice, 'second');
  await second.hover();
  await second.getByTestId('add-reaction').click();
  await alice.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();
  await messageWithText(bob, 'first, edited').getByTestId('message-edited').waitFor();
  await messageWithText(bob, 'second').getByTestId('reaction-count').getByText('1', { exact: true }).waitFor();
  // What resync.js holds (the module the page runs: the same URL is the same instance).
  const held = (page) => page.evaluate(async () => (await import('/static/js/resync.js')).touchedCount());
  assert.equal(await held(bob), 0);
  assert.equal(await held(alice), 0);
  await alice.context().close();
  await bob.context().close();
});

test('more messages queued offline than the rate limit\'s burst all arrive in order after a reconnect, none refused', async () => {
  // The server's default limit: 10 a second, a burst of 20. Thirty queued
  // messages sent at once would see ten refused.
  const ann = await openChat(browser, server.url, { room: 'queued', user: 'ann' });
  const ben = await openChat(browser, server.url, { room: 'queued', user: 'ben' });
  await ann.context().setOffline(true);
  await ann.getByTestId('conn-status').and(ann.locator('[data-state="offline"]')).waitFor();
  const queued = Array.from({ length: 30 }, (_, i) => `queued ${i + 1}`);
  const box = ann.getByTestId('composer-input');
  for (const t of queued) {
    await box.fill(t);
    await box.press('Enter');
  }
  assert.equal(await ann.locator('.msg--pending').count(), 30);

  await ann.context().setOffline(false);
  await waitConnected(ann);
  await ann.waitForFunction(() => document.querySelectorAll('.msg--pending').length === 0);
  assert.equal(await ann.locator('.msg--failed').count(), 0, 'none refused');
  await messageWithText(ben, 'queued 30').waitFor();
  assert.deepEqual(await ben.getByTestId('message-text').allTextContents(), queued);
  assert.deepEqual(await ann.getByTestId('message-text').allTextContents(), queued);
  assert.equal(await ann.locator('.toast-error').count(), 0, 'no refusal said');
  assert.deepEqual(unexpectedProblems(ann, [/WebSocket connection to .* failed/]), []);
  for (const p of [ann, ben]) await p.context().close();
});

test('a server that welcomes and then closes at once is tried again later and later', async () => {
  // The real server welcomes every connection; the test closes each one
  // after the first (1013, "busy") as soon as its welcome is through, and
  // reads the delay the page scheduled before each retry.
  const page = await openChat(browser, server.url, { user: undefined });
  const delays = [];
  let first = null;
  let enough;
  const threeRetries = new Promise((resolve) => { enough = resolve; });
  await page.routeWebSocket(/\/ws\//, async (ws) => {
    // This connection is a retry that waited the delay scheduled last.
    if (first) delays.push(await page.evaluate(() => window.roomcast.retryDelay));
    if (delays.length === 3) enough();
    const upstream = ws.connectToServer();
    const flapping = Boolean(first);
    first ??= ws;
    upstream.onMessage((frame) => {
      ws.send(frame);
      if (flapping && delays.length < 3 && JSON.parse(frame).type === 'welcome') ws.close({ code: 1013, reason: 'busy' });
    });
  });
  await joinAs(page, server.url, 'flapping', 'fay');
  await first.close({ code: 1013, reason: 'busy' });
  await threeRetries;
  await waitConnected(page);
  // Exponential from 0.5 s with jitter: retry n waits between half and all
  // of 0.5 s × 2^(n-1), whatever the jitter drew; never reset by a welcome.
  delays.forEach((d, i) => {
    const cap = 500 * 2 ** i;
    assert.ok(d >= cap / 2 && d <= cap, `retry ${i + 1} waited ${d} ms (expected ${cap / 2}-${cap}): ${delays}`);
  });
  assert.deepEqual(unexpectedProblems(page), []);
  await page.context().close();
});

test('a reaction whose answer was lost in a drop shows once the page is back', async () => {
  const alice = await openChat(browser, server.url, { room: 'lost-answer', user: 'alice' });
  const bob = await openChat(browser, server.url, { user: undefined });
  // Bob's socket behind a proxy that can stop passing the server's frames
  // to his page (the answers are lost on the way), then drop the link.
  let deaf = false;
  let current = null;
  await bob.routeWebSocket(/\/ws\//, (ws) => {
    const upstream = ws.connectToServer();
    current = ws;
    upstream.onMessage((frame) => { if (!deaf || current !== ws) ws.send(frame); });
  });
  await joinAs(bob, server.url, 'lost-answer', 'bob');
  await sendMessage(alice, 'like me');
  const liked = messageWithText(bob, 'like me');
  await liked.waitFor();

  deaf = true;
  await liked.hover();
  await liked.getByTestId('add-reaction').click();
  await bob.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();
  // The server took it (Alice sees it); Bob's page never heard back.
  await messageWithText(alice, 'like me').getByTestId('reaction-count').getByText('1', { exact: true }).waitFor();
  assert.equal(await liked.getByTestId('reaction').count(), 0);
  const deafSocket = current;
  deaf = false;
  await deafSocket.close({ code: 1013, reason: 'test' });
  await waitConnected(bob);

  const thumb = liked.getByTestId('reaction').filter({ hasText: '👍' });
  await thumb.and(bob.locator('[aria-pressed="true"]')).waitFor();
  assert.equal(await thumb.getByTestId('reaction-count').textContent(), '1');
  assert.deepEqual(unexpectedProblems(bob), []);
  for (const p of [alice, bob]) await p.context().close();
});

test('after a resume, a message a page leaves out is shown deleted only once the room confirms it', async () => {
  // A store behind the room (a database other instances have not written
  // to yet) is played by leaving one message out of Bob's pages: the room
  // still has it, so it stays; the one really deleted goes.
  const alice = await openChat(browser, server.url, { room: 'behind', user: 'alice' });
  const bob = await openChat(browser, server.url, { room: 'behind', user: 'bob' });
  for (const t of ['first', 'deleted', 'not stored yet', 'last']) await sendMessage(alice, t);
  await messageWithText(bob, 'last').waitFor();
  await bob.route(/\/api\/rooms\/[^/]+\/messages/, async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    body.messages = body.messages.filter((m) => m.content !== 'not stored yet');
    await route.fulfill({ response, json: body });
  });

  await bob.context().setOffline(true);
  await bob.getByTestId('conn-status').and(bob.locator('[data-state="offline"]')).waitFor();
  alice.once('dialog', (d) => d.accept());
  const doomed = messageWithText(alice, 'deleted');
  await doomed.hover();
  await doomed.getByTestId('delete-message').click();
  await doomed.waitFor({ state: 'detached' });
  await bob.context().setOffline(false);
  await waitConnected(bob);

  // Checked newest first: once the older one is gone, the newer one was checked.
  await bob.getByTestId('message-deleted').getByText('alice deleted a message').waitFor();
  assert.deepEqual(await bob.getByTestId('message-text').allTextContents(), ['first', 'not stored yet', 'last']);
  assert.equal(await bob.getByTestId('toast').filter({ hasText: 'no longer available' }).count(), 0, 'the checks are not errors');
  assert.deepEqual(unexpectedProblems(bob, [/WebSocket connection to .* failed/]), []);
  for (const p of [alice, bob]) await p.context().close();
});
