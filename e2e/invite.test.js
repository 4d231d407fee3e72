// Token mode: invite links (`#token=` in the fragment), private rooms with a
// lock, uploads with the token, and an invitation that expires while chatting.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  BIN, openChat, sendMessage, messageWithText, waitConnected, watchProblems, unexpectedProblems, axeViolations, startSuite, stopSuite,
} from './helpers.js';

const REFUSAL_NOISE = [/WebSocket connection to .* failed/, /status of (401|403)/];
let server;
let browser;
let secretDir;
let secretFile;
let secret;

before(async () => {
  secretDir = mkdtempSync(path.join(tmpdir(), 'roomcast-e2e-secret-'));
  secretFile = path.join(secretDir, 'secret');
  secret = randomBytes(32).toString('hex'); // 64 bytes of text: the server uses the file's bytes
  writeFileSync(secretFile, `${secret}\n`);
  ({ server, browser } = await startSuite({ extraArgs: ['--auth-secret-file', secretFile] }));
});

after(async () => {
  await stopSuite({ server, browser });
  if (secretDir) rmSync(secretDir, { recursive: true, force: true });
});

/** An HS256 JWT signed with the server's secret, as `roomcast token` makes them. */
function mint(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

/** A fresh browser context (a new person), its page watched for problems. */
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, locale: 'en-US' });
  return watchProblems(await context.newPage());
}

test('an invite link opens a private room: the name comes from it, the token leaves the address, a lock shows', async () => {
  // The link exactly as the server's own command prints it.
  const { stdout } = await promisify(execFile)(BIN, [
    'token', '--user', 'ann', '--room', 'private-design', '--ttl', '1h', '--base-url', server.url,
    '--auth-secret-file', secretFile,
  ]);
  const link = /^invite link: (\S+)$/m.exec(stdout)?.[1];
  assert.ok(link?.includes('#token='), stdout);

  const ann = await newPage();
  await ann.goto(link);
  await waitConnected(ann);
  assert.equal(new URL(ann.url()).hash, '', 'the token is gone from the address bar');
  assert.equal(await ann.getByTestId('me-name').textContent(), 'ann');
  await ann.getByTestId('room-title').getByText('private-design', { exact: true }).waitFor();
  await ann.getByRole('banner').getByRole('img', { name: 'private room' }).waitFor();
  await ann.getByTestId('room-list').getByRole('link', { name: '# private-design' })
    .getByRole('img', { name: 'private room' }).waitFor();
  assert.deepEqual(await axeViolations(ann), [], 'axe: a private room, with its locks');

  // Someone else with an invitation of their own (minted here) joins; both chat.
  const bob = await newPage();
  await bob.goto(`${server.url}/?room=private-design#token=${mint({ sub: 'bob', rooms: ['private-*'], exp: now() + 3600 })}`);
  await waitConnected(bob);
  await sendMessage(ann, 'design review at 3');
  await messageWithText(bob, 'design review at 3').waitFor();

  // Uploads carry the token too.
  const png = await ann.screenshot({ clip: { x: 0, y: 0, width: 32, height: 24 } });
  await bob.getByTestId('attach-input').setInputFiles({ name: 'mock.png', mimeType: 'image/png', buffer: png });
  await bob.getByTestId('upload-box').getByText('ready to send').waitFor();
  await bob.getByTestId('composer-input').fill('the mockup');
  await bob.getByTestId('composer-input').press('Enter');
  await messageWithText(ann, 'the mockup').getByTestId('attachment-image').waitFor();

  // Private rooms are never listed: a newcomer sees the public room only.
  const carl = await newPage();
  await carl.goto(`${server.url}/?room=lobby#token=${mint({ sub: 'carl', exp: now() + 3600 })}`);
  await waitConnected(carl);
  const newcomer = await openChat(browser, server.url);
  await newcomer.getByTestId('join-active-rooms').getByRole('button').first().waitFor();
  assert.deepEqual(await newcomer.getByTestId('join-active-rooms').getByRole('button').allTextContents(), ['lobby1 online']);
  await newcomer.context().close();
  await carl.context().close();

  // A reload connects again with the kept token.
  await ann.reload();
  await waitConnected(ann);
  assert.equal(await ann.getByTestId('me-name').textContent(), 'ann');

  assert.deepEqual(unexpectedProblems(ann), []);
  assert.deepEqual(unexpectedProblems(bob), []);
  await ann.context().close();
  await bob.context().close();
});

test('without an invitation the join form says the server is invitation-only', async () => {
  const page = await openChat(browser, server.url, { room: 'lobby' });
  // Said before any attempt (the page knows the server's mode)…
  await page.getByTestId('join-note').getByText('invitation-only', { exact: false }).waitFor();
  // …and again if someone tries anyway.
  await page.getByTestId('join-name').fill('nobody');
  await page.getByTestId('join-submit').click();
  await page.getByTestId('join-error').getByText('invitation-only', { exact: false }).waitFor();
  assert.equal(await page.evaluate(() => window.roomcast.state), 'idle');

  // An invitation for one private room does not open another.
  await page.goto(`${server.url}/?room=private-finance#token=${mint({ sub: 'cy', rooms: ['private-design'], exp: now() + 3600 })}`);
  await page.getByTestId('join-error').getByText('does not open the private room “private-finance”', { exact: false }).waitFor();
  assert.deepEqual(unexpectedProblems(page, REFUSAL_NOISE), []);
  await page.context().close();
});

test('an invitation that expires stops the chat with a message; a new invite link brings it back', async () => {
  const page = await newPage();
  const invite = (exp) => `${server.url}/?room=private-design#token=${mint({ sub: 'eve', rooms: ['private-design'], exp })}`;
  // The server closes the connection (4001) when `exp` and its 30 s clock
  // leeway have passed: this one is admitted 27 s past `exp`.
  await page.goto(invite(now() + 3 - 30));
  await waitConnected(page);
  await sendMessage(page, 'before it expires');
  const banner = page.getByTestId('conn-banner');
  await banner.getByText('Your invitation has expired. Ask for a new invite link', { exact: false }).waitFor({ timeout: 12000 });
  await page.getByTestId('conn-status').and(page.locator('[data-state="stopped"]')).waitFor();
  // The conversation stays readable.
  await messageWithText(page, 'before it expires').waitFor();
  assert.deepEqual(await axeViolations(page), [], 'axe: stopped, with the expiry message');
  await page.screenshot({ path: path.join(tmpdir(), 'roomcast-expired.png') });

  await page.goto(invite(now() + 3600));
  await waitConnected(page);
  await banner.waitFor({ state: 'hidden' });
  await sendMessage(page, 'renewed');

  // Another link while connected renews the token in place (`auth`), without reconnecting.
  const renewed = page.waitForFunction(
    () => [...document.querySelectorAll('[data-testid=toast]')].some((t) => t.textContent.includes('Your invitation was renewed.')),
    null, { polling: 'raf' },
  );
  await page.evaluate(() => { window.__sameDocument = true; });
  let sockets = 0;
  page.on('websocket', () => { sockets += 1; });
  await page.goto(invite(now() + 7200));
  await renewed;
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
  assert.equal(sockets, 0, 'no new WebSocket');
  assert.equal(await page.evaluate(() => window.roomcast.state), 'connected');
  assert.deepEqual(unexpectedProblems(page), []);
  await page.context().close();
});

/** A page in `context` (one browser: its tabs share localStorage), watched for problems. */
async function tabIn(context) {
  return watchProblems(await context.newPage());
}

test('one person with invitations to two private rooms: each tab goes on with the one that opens its room', async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, locale: 'en-US' });
  const a = await tabIn(context);
  let current = null;
  await a.routeWebSocket(/\/ws\//, (ws) => { ws.connectToServer(); current = ws; });
  await a.goto(`${server.url}/?room=private-a#token=${mint({ sub: 'ann', rooms: ['private-a'], exp: now() + 3600 })}`);
  await waitConnected(a);
  // The second one names its rooms by a pattern, in another case: the server's rule.
  const b = await tabIn(context);
  await b.goto(`${server.url}/?room=private-b-team#token=${mint({ sub: 'ann', rooms: ['Private-B*'], exp: now() + 3600 })}`);
  await waitConnected(b);

  // Tab A's connection drops: it comes back with the invitation to its room.
  await current.close({ code: 1013, reason: 'test' });
  await a.getByTestId('conn-status').and(a.locator('[data-state="reconnecting"]')).waitFor();
  await waitConnected(a);
  await a.getByTestId('room-title').getByText('private-a', { exact: true }).waitFor();
  await sendMessage(a, 'still in room a');
  // Scrollback reads with it too.
  assert.equal(await a.evaluate(async () => {
    const { tokenFor } = await import('/static/js/token.js');
    const res = await fetch('/api/rooms/private-a/messages?limit=1', { headers: { Authorization: `Bearer ${tokenFor('ann', 'private-a')}` } });
    return res.status;
  }), 200);
  await sendMessage(b, 'still in room b');
  assert.equal(await b.evaluate(() => JSON.parse(localStorage.getItem('roomcast.tokens')).length), 2, 'both kept');
  assert.deepEqual(unexpectedProblems(a), []);
  assert.deepEqual(unexpectedProblems(b), []);
  await context.close();
});

test('a renewed invitation opened in another tab renews a connected tab in place, before its token expires', async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, locale: 'en-US' });
  const invite = (exp) => `${server.url}/?room=private-design#token=${mint({ sub: 'gil', rooms: ['private-design'], exp })}`;
  const first = await tabIn(context);
  // Admitted within the server's 30 s leeway: it is closed (4001) 10 s from now.
  const closesAt = Date.now() + 10000;
  await first.goto(invite(now() + 10 - 30));
  await waitConnected(first);
  let sockets = 0;
  first.on('websocket', () => { sockets += 1; });

  const second = await tabIn(context);
  await second.goto(invite(now() + 3600));
  await waitConnected(second);
  await first.getByTestId('toast').getByText('Your invitation was renewed.').waitFor();
  // Past the moment the old token would have closed it: still the same connection.
  await first.waitForFunction((t) => Date.now() > t, closesAt + 2000, { timeout: 20000 });
  assert.equal(await first.evaluate(() => window.roomcast.state), 'connected');
  assert.equal(await first.getByTestId('conn-banner').isHidden(), true);
  assert.equal(sockets, 0, 'no new WebSocket');
  await sendMessage(first, 'renewed from the other tab');
  assert.deepEqual(unexpectedProblems(first), []);
  await context.close();
});

test('an expired invitation goes on with a newer one kept meanwhile instead of stopping', async () => {
  const page = await newPage();
  const invite = (exp) => mint({ sub: 'hal', rooms: ['private-design'], exp });
  await page.goto(`${server.url}/?room=private-design#token=${invite(now() + 8 - 30)}`);
  await waitConnected(page);
  await sendMessage(page, 'before the expiry');
  // A newer invitation kept while this tab heard nothing of it (the
  // storage event fires in other tabs only): this tab finds it at 4001.
  const newer = invite(now() + 3600);
  await page.evaluate((t) => {
    const kept = JSON.parse(localStorage.getItem('roomcast.tokens') || '[]');
    localStorage.setItem('roomcast.tokens', JSON.stringify([...kept, t]));
  }, newer);
  const reopened = page.waitForEvent('websocket', { predicate: (ws) => ws.url().includes(newer), timeout: 30000 });
  await reopened;
  await waitConnected(page);
  assert.notEqual(await page.evaluate(() => window.roomcast.state), 'stopped');
  await page.getByTestId('conn-banner').waitFor({ state: 'hidden' });
  await sendMessage(page, 'after the expiry');
  assert.deepEqual(unexpectedProblems(page), []);
  await page.context().close();
});
