// Who is here in a crowded room: past 100 names the server's `join` and
// `leave` carry a count but no list (protocol.md), and the page keeps the
// list itself from each event's name. And a room with many arrivals and
// few messages does not pile up join/leave lines for ever.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openChat, openCrowd, startSuite, stopSuite } from './helpers.js';

let server;
let browser;
const pages = [];

before(async () => { ({ server, browser } = await startSuite()); });

after(async () => {
  await stopSuite({ server, browser });
  for (const p of pages) assert.deepEqual(p.problems, [], 'no page errors, console errors or CSP violations');
});

const names = (n, prefix) => Array.from({ length: n }, (_, i) => `${prefix}${String(i + 1).padStart(3, '0')}`);

/** Waits until `page` says `n` online, then returns the names its list shows. */
async function listed(page, n) {
  await page.getByTestId('online-count').getByText(`${n} online`, { exact: true }).waitFor();
  return page.getByTestId('online-list').locator('.person-name').allTextContents();
}

test('past 100 names the online list still follows who comes and goes', async () => {
  const alice = await openChat(browser, server.url, { room: 'crowded', user: 'alice' });
  pages.push(alice);
  // 102 names in all: the last joins came with a count only.
  const crowd = await openCrowd(browser, server.url, 'crowded', names(101, 'p'));
  const everyone = ['alice', ...names(101, 'p')].sort((a, b) => a.localeCompare(b));
  assert.deepEqual(await listed(alice, 102), everyone);

  // p001 leaves (101 names: no list in the event): off the list.
  await crowd.leave('p001');
  assert.deepEqual(await listed(alice, 101), everyone.filter((n) => n !== 'p001'));

  // zed arrives (102 again): on it.
  const late = await openCrowd(browser, server.url, 'crowded', ['zed']);
  assert.deepEqual(await listed(alice, 102), [...everyone.filter((n) => n !== 'p001'), 'zed']);
  await late.close();
  await crowd.close();
  await listed(alice, 1);
});

test('join and leave lines stay bounded in a room of many arrivals and no messages', async () => {
  const alice = await openChat(browser, server.url, { room: 'revolving-door', user: 'alice' });
  pages.push(alice);
  // 60 people come and go: 120 lines' worth.
  const crowd = await openCrowd(browser, server.url, 'revolving-door', names(60, 'v'));
  await listed(alice, 61);
  await crowd.close();
  await listed(alice, 1);
  const lines = await alice.locator('#messages > .notice-presence .notice-text').allTextContents();
  assert.equal(lines.length, 100, 'the newest 100 lines are kept');
  assert.equal(lines.filter((t) => t.endsWith(' left')).length, 60, 'every leave is among them');
  assert.equal(lines.filter((t) => t.endsWith(' joined')).length, 40, 'the oldest joins went');
});
