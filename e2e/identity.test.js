// Identity in open mode: the claim a browser keeps and presents, a name held
// by someone else, a private room on a server without invitations.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openChat, sendMessage, messageWithText, waitConnected, unexpectedProblems, startSuite, stopSuite,
} from './helpers.js';

// What a refused handshake leaves in the console: the failed WebSocket and
// the preflight's status.
const REFUSAL_NOISE = [/WebSocket connection to .* failed/, /status of (400|403|409)/];
let server;
let browser;

before(async () => { ({ server, browser } = await startSuite()); });

after(() => stopSuite({ server, browser }));

const storedClaim = (page) => page.evaluate(() => localStorage.getItem('roomcast.claim'));

test('two browsers cannot take one name in a room; a reload gets its own name back', async () => {
  const ann = await openChat(browser, server.url, { room: 'names', user: 'ann' });
  const claim = await storedClaim(ann);
  assert.match(claim ?? '', /^[A-Za-z0-9_-]{43}$/, 'the welcome’s claim is kept');

  // Another browser (another identity) asks for the same name: it is told
  // so on the join form, with the name ready to change, and stops trying.
  const other = await openChat(browser, server.url, { room: 'names' });
  await other.getByTestId('join-name').fill('ann');
  await other.getByTestId('join-submit').click();
  await other.getByTestId('join-error')
    .getByText('“ann” is being used in this room by someone else; pick another name.', { exact: true }).waitFor();
  assert.equal(await other.getByTestId('join-form').isVisible(), true);
  assert.equal(await other.getByTestId('join-name').evaluate((el) => el === document.activeElement), true, 'the name field is focused');
  assert.equal(await other.evaluate(() => window.roomcast.state), 'idle', 'no more attempts');

  // The first one keeps chatting; the second joins under another name.
  await other.getByTestId('join-name').fill('ann2');
  await other.getByTestId('join-submit').click();
  await waitConnected(other);
  await sendMessage(ann, 'still mine');
  await messageWithText(other, 'still mine').waitFor();

  // A reload is the same browser: its claim brings the held name back at once.
  await ann.reload();
  await waitConnected(ann);
  assert.equal(await ann.getByTestId('me-name').textContent(), 'ann');
  assert.equal(await storedClaim(ann), claim, 'the same claim, presented again');
  await sendMessage(ann, 'back after a reload');
  await messageWithText(other, 'back after a reload').waitFor();

  assert.deepEqual(unexpectedProblems(ann), []);
  assert.deepEqual(unexpectedProblems(other, REFUSAL_NOISE), []);
  await ann.context().close();
  await other.context().close();
});

test('a claim the server does not accept is dropped and replaced', async () => {
  const page = await openChat(browser, server.url, { room: 'claims' });
  // 43 characters of base64url whose last one has bits a real claim never has.
  const bad = `${'A'.repeat(42)}B`;
  await page.evaluate((c) => localStorage.setItem('roomcast.claim', c), bad);
  await page.getByTestId('join-name').fill('cleo');
  await page.getByTestId('join-submit').click();
  await waitConnected(page);
  const claim = await storedClaim(page);
  assert.match(claim ?? '', /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(claim, bad);
  assert.deepEqual(unexpectedProblems(page, REFUSAL_NOISE), []);
  await page.context().close();
});

test('a private room on a server without invitations is explained on the join form', async () => {
  const page = await openChat(browser, server.url, { room: 'private-plans' });
  await page.getByTestId('join-name').fill('dora');
  await page.getByTestId('join-submit').click();
  await page.getByTestId('join-error').getByText('“private-plans” is a private room', { exact: false }).waitFor();
  assert.equal(await page.getByTestId('join-room').evaluate((el) => el === document.activeElement), true, 'the room field is focused');
  assert.equal(await page.evaluate(() => window.roomcast.state), 'idle');
  assert.deepEqual(unexpectedProblems(page, REFUSAL_NOISE), []);
  await page.context().close();
});
