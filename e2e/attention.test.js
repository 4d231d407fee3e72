// What draws a reader back: @mentions highlighted and notified (after the
// reader turned notifications on with a click), a "New" line where unread
// messages begin, and a count on the "new messages" pill.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openChat, joinAs, sendMessage, messageWithText, setTabHidden, startSuite, stopSuite,
} from './helpers.js';

let server;
let browser;

before(async () => { ({ server, browser } = await startSuite()); });

after(() => stopSuite({ server, browser }));

/**
 * A context whose Notification records what the page does with it (asked
 * for permission, showed what), through the DevTools protocol, which the
 * page's CSP does not govern.
 */
async function recordNotifications(context, permission) {
  await context.addInitScript((initial) => {
    const log = { asked: 0, shown: [] };
    let current = initial;
    class FakeNotification {
      static get permission() { return current; }
      static async requestPermission() { log.asked += 1; current = 'granted'; return current; }
      constructor(title, options = {}) { log.shown.push({ title, body: options.body }); }
      addEventListener() {}
      close() {}
    }
    Object.defineProperty(window, 'Notification', { value: FakeNotification, configurable: true });
    Object.defineProperty(window, '__notifications', { value: log });
  }, permission);
}

test('a mention of the reader is highlighted for the reader only', async () => {
  const alice = await openChat(browser, server.url, { room: 'mentions', user: 'alice' });
  const bob = await openChat(browser, server.url, { room: 'mentions', user: 'bob' });
  await sendMessage(bob, 'hey @alice, can you look? (not @alicia)');
  const onAlice = messageWithText(alice, 'hey @alice, can you look? (not @alicia)');
  await onAlice.waitFor();
  assert.deepEqual(await onAlice.getByTestId('mention').allTextContents(), ['@alice']);
  assert.equal(await onAlice.evaluate((el) => el.classList.contains('msg--mention')), true);
  const bg = await onAlice.getByTestId('mention').evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.notEqual(bg, 'rgba(0, 0, 0, 0)', 'the mention is marked');
  // Case does not matter; the author's own view marks nothing for them.
  await sendMessage(bob, '@ALICE again');
  await messageWithText(alice, '@ALICE again').getByTestId('mention').waitFor();
  assert.equal(await messageWithText(bob, 'hey @alice, can you look? (not @alicia)').getByTestId('mention').count(), 0);
  for (const p of [alice, bob]) { assert.deepEqual(p.problems, []); await p.context().close(); }
});

test('desktop notifications on mention: asked for on a click, shown only while away', async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 }, locale: 'en-US' });
  await recordNotifications(context, 'default');
  const alice = await context.newPage();
  await joinAs(alice, server.url, 'notify', 'alice');
  const bob = await openChat(browser, server.url, { room: 'notify', user: 'bob' });
  const log = () => alice.evaluate(() => window.__notifications);

  assert.equal((await log()).asked, 0, 'never asked without a click');
  const toggle = alice.getByTestId('notify-toggle');
  assert.equal(await toggle.textContent(), 'Alert me when mentioned');
  await toggle.click();
  await toggle.getByText('Mention alerts are on').waitFor();
  assert.equal((await log()).asked, 1);

  // Looking at the room: a mention is highlighted, not notified.
  await sendMessage(bob, '@alice while you look');
  await messageWithText(alice, '@alice while you look').waitFor();
  assert.deepEqual((await log()).shown, []);
  // Away: notified, with who and where.
  await setTabHidden(alice, true);
  await sendMessage(bob, '@alice are you there?');
  await messageWithText(alice, '@alice are you there?').waitFor();
  await sendMessage(bob, 'no mention here');
  await messageWithText(alice, 'no mention here').waitFor();
  assert.deepEqual((await log()).shown, [{ title: 'bob mentioned you in #notify', body: '@alice are you there?' }]);
  assert.equal(await alice.title(), '(2) #notify · roomcast', 'unread count in the title');
  await setTabHidden(alice, false);
  assert.equal(await alice.title(), '#notify · roomcast');
  await context.close();
  await bob.context().close();
});

test('a "New" line marks where unread messages begin, and the pill counts them', async () => {
  const reader = await openChat(browser, server.url, { room: 'unread', user: 'reader', viewport: { width: 800, height: 500 } });
  const writer = await openChat(browser, server.url, { room: 'unread', user: 'writer' });
  for (let i = 1; i <= 12; i++) await sendMessage(writer, `old ${i}`);
  await messageWithText(reader, 'old 12').waitFor();
  assert.equal(await reader.getByTestId('new-divider').count(), 0, 'no line while following along');

  // The reader scrolls up; three messages arrive below.
  const list = reader.getByTestId('messages');
  await list.evaluate((l) => { l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); });
  for (const t of ['new 1', 'new 2', 'new 3']) await sendMessage(writer, t);
  await messageWithText(reader, 'new 3').waitFor({ state: 'attached' });
  const pill = reader.getByTestId('new-pill');
  await pill.getByText('3 new messages ↓').waitFor();
  // The line sits right above the first unread message.
  const before = await reader.getByTestId('new-divider').evaluate((el) => el.nextElementSibling.textContent);
  assert.match(before, /new 1/);
  await pill.click();
  await pill.waitFor({ state: 'hidden' });
  await reader.getByTestId('new-divider').waitFor({ state: 'visible' });

  // Away in another tab: the line moves to the first message missed there.
  await setTabHidden(reader, true);
  await sendMessage(writer, 'while away');
  await messageWithText(reader, 'while away').waitFor();
  await setTabHidden(reader, false);
  assert.equal(await reader.getByTestId('new-divider').count(), 1);
  assert.match(await reader.getByTestId('new-divider').evaluate((el) => el.nextElementSibling.textContent), /while away/);
  // Writing ends the "New" section.
  await sendMessage(reader, 'caught up');
  assert.equal(await reader.getByTestId('new-divider').count(), 0);
  for (const p of [reader, writer]) { assert.deepEqual(p.problems, []); await p.context().close(); }
});
