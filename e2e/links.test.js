// Links and rooms: invite links name the room only, an address never makes
// this browser someone else, room names compare without case, and the
// active public rooms are listed for newcomers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openChat, joinAs, waitConnected, startSuite, stopSuite } from './helpers.js';

let server;
let browser;

before(async () => { ({ server, browser } = await startSuite()); });

after(() => stopSuite({ server, browser }));

test('the invite link names the room only, and the button copies it', async () => {
  const page = await openChat(browser, server.url, {
    room: 'Design Team', user: 'Alice', context: { permissions: ['clipboard-read', 'clipboard-write'] },
  });
  assert.equal(page.url(), `${server.url}/?room=Design+Team`, 'the address bar can be shared as is');
  await page.getByTestId('invite-link').click();
  await page.getByTestId('toast').filter({ hasText: 'Invite link copied' }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  assert.equal(copied, `${server.url}/?room=Design+Team`);
  assert.ok(!copied.includes('user'), 'no name in the link');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('an address with someone else’s name asks instead of joining as them', async () => {
  const alice = await openChat(browser, server.url, { room: 'Launch Team', user: 'Alice' });
  // A colleague opens an old-style link that carries Alice's name.
  const page = await openChat(browser, server.url);
  await page.goto(`${server.url}/?room=Launch+Team&user=Alice`);
  await page.getByTestId('join-form').waitFor();
  await page.getByTestId('join-note').getByText('This link suggests the name “Alice”', { exact: false }).waitFor();
  assert.equal(await page.evaluate(() => window.roomcast.state), 'idle', 'nothing joined');
  assert.equal(await page.getByTestId('join-name').inputValue(), 'Alice', 'the suggestion is shown, not used');
  assert.equal(await alice.getByTestId('online-count').textContent(), '1 online');

  // The colleague says who they are.
  await page.getByTestId('join-name').fill('Carol');
  await page.getByTestId('join-submit').click();
  await waitConnected(page);
  assert.equal(await page.getByTestId('me-name').textContent(), 'Carol');
  assert.equal(page.url(), `${server.url}/?room=Launch+Team`);

  // This browser is Carol now: Alice's link still asks, and says why.
  await page.goto(`${server.url}/?room=Launch+Team&user=Alice`);
  await page.getByTestId('join-note').getByText('this browser chats as “Carol”', { exact: false }).waitFor();
  assert.equal(await page.getByTestId('join-name').inputValue(), 'Carol');
  // A link with this browser's own name goes straight in, and loses the name.
  await page.goto(`${server.url}/?room=Launch+Team&user=Carol`);
  await waitConnected(page);
  assert.equal(page.url(), `${server.url}/?room=Launch+Team`);
  assert.deepEqual(page.problems, []);
  await page.context().close();
  await alice.context().close();
});

test('a name too long from the link stays in the field, with the reason', async () => {
  const long = 'abcdefghijklmnopqrstuvwxyz0123456'; // 33 characters
  const page = await openChat(browser, server.url);
  await page.goto(`${server.url}/?room=lobby&user=${long}`);
  await page.getByTestId('join-error').getByText('at most 32 characters; this one has 33', { exact: false }).waitFor();
  assert.equal(await page.getByTestId('join-name').inputValue(), long);
  // Fixing it in place is enough.
  await page.getByTestId('join-name').press('End');
  await page.getByTestId('join-name').press('Backspace');
  await page.getByTestId('join-submit').click();
  await waitConnected(page);
  assert.equal(await page.getByTestId('me-name').textContent(), long.slice(0, 32));
  await page.context().close();
});

test('room names compare without case, and the room is shown as the server names it', async () => {
  const page = await openChat(browser, server.url);
  // Stand in for a server that treats `lobby-case` as its room `Lobby-Case`.
  let sockets = 0;
  await page.routeWebSocket(/\/ws\//, (ws) => {
    const ours = /\/ws\/lobby-case\//i.test(ws.url());
    if (ours) sockets += 1;
    const upstream = ws.connectToServer();
    upstream.onMessage((m) => {
      let ev = null;
      try { ev = JSON.parse(m); } catch { /* not JSON: pass it on */ }
      if (ours && ev && ev.type === 'welcome') ev.room = 'Lobby-Case';
      ws.send(ev ? JSON.stringify(ev) : m);
    });
  });
  await joinAs(page, server.url, 'lobby-case', 'dora');
  await page.getByTestId('room-title').getByText('Lobby-Case', { exact: true }).waitFor();
  assert.equal(await page.title(), '#Lobby-Case · roomcast');
  assert.equal(page.url(), `${server.url}/?room=Lobby-Case`);

  // Another spelling of the same room is the same room: no reconnect.
  await page.getByTestId('room-input').fill('LOBBY-CASE');
  await page.getByTestId('room-input').press('Enter');
  assert.equal(await page.evaluate(() => window.roomcast.state), 'connected');
  assert.equal(sockets, 1);
  // Recent rooms list each room once, whatever the spelling used.
  await page.getByTestId('room-input').fill('elsewhere');
  await page.getByTestId('room-input').press('Enter');
  await page.getByTestId('room-title').getByText('elsewhere', { exact: true }).waitFor();
  await waitConnected(page);
  await page.getByTestId('room-input').fill('lobby-CASE');
  await page.getByTestId('room-input').press('Enter');
  await page.getByTestId('room-title').getByText('Lobby-Case', { exact: true }).waitFor();
  const rooms = await page.getByTestId('room-list').getByRole('link').allTextContents();
  assert.equal(rooms.filter((r) => /lobby-case/i.test(r)).length, 1, `one entry: ${JSON.stringify(rooms)}`);
  await page.context().close();
});

// Private rooms never listed: invite.test.js (open mode refuses them outright).
test('newcomers see the active public rooms with their online counts', async () => {
  const held = [];
  for (const [room, user] of [['busy-room', 'a'], ['busy-room', 'b'], ['quiet-room', 'c']]) {
    held.push(await openChat(browser, server.url, { room, user }));
  }
  const page = await openChat(browser, server.url);
  const chips = page.getByTestId('join-active-rooms').getByRole('button');
  await chips.first().waitFor();
  const texts = await chips.allTextContents();
  assert.equal(texts[0], 'busy-room2 online', 'busiest first');
  assert.ok(texts.includes('quiet-room1 online'));
  // A tap fills in the room.
  await chips.filter({ hasText: 'quiet-room' }).click();
  assert.equal(await page.getByTestId('join-room').inputValue(), 'quiet-room');
  await page.getByTestId('join-name').fill('newcomer');
  await page.getByTestId('join-submit').click();
  await waitConnected(page);
  // In the room, the sidebar lists them too.
  const side = page.getByTestId('active-rooms');
  await side.getByRole('link', { name: /busy-room/ }).waitFor();
  await side.getByRole('link', { name: '# quiet-room 2 online' }).waitFor(); // counting the newcomer
  for (const p of [page, ...held]) await p.context().close();
});
