// A popular message: once its reactions are large the server sends only
// what changes and a few names per emoji (protocol.md "Reactions on the
// wire"); the page still shows every count right, fetches the names when
// someone looks at a reaction, and toggles as usual. And toggling from the
// keyboard keeps the focus where it was.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openChat, sendMessage, messageWithText, startSuite, stopSuite } from './helpers.js';

let server;
let browser;
const pages = [];
const EMOJI = Array.from({ length: 20 }, (_, i) => String.fromCodePoint(0x1F600 + i));
const long = (who) => `${who}-with-a-rather-long-name-01`;

// --rate 0: the reactors send a burst each.
before(async () => { ({ server, browser } = await startSuite({ extraArgs: ['--rate', '0'] })); });

after(async () => {
  await stopSuite({ server, browser });
  for (const p of pages) assert.deepEqual(p.problems, [], 'no page errors, console errors or CSP violations');
});

/**
 * People who are not in the UI react to a message: each connects, adds its
 * emoji one by one (each confirmed by its own `reaction_update`), and leaves.
 */
async function react(room, messageId, who, emoji) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${server.url}/`);
  await page.evaluate(async ({ room, messageId, who, emoji }) => {
    for (const user of who) {
      const ws = new WebSocket(`ws://${location.host}/ws/${encodeURIComponent(room)}/${encodeURIComponent(user)}`);
      const events = [];
      let wake = () => {};
      ws.addEventListener('message', (e) => { events.push(JSON.parse(e.data)); wake(); });
      const next = async (pred) => {
        for (;;) {
          const i = events.findIndex(pred);
          if (i >= 0) return events.splice(i, 1)[0];
          await new Promise((r) => { wake = r; });
        }
      };
      await next((ev) => ev.type === 'welcome');
      for (const e of emoji) {
        ws.send(JSON.stringify({ type: 'add_reaction', message_id: messageId, emoji: e }));
        const ev = await next((ev) => ev.type === 'error' || (ev.type === 'reaction_update' && ev.user === user && ev.emoji === e));
        if (ev.type === 'error') throw new Error(`refused: ${JSON.stringify(ev)}`);
      }
      ws.close();
    }
  }, { room, messageId, who, emoji });
  await context.close();
}

test('a popular message shows every count, fetches names on hover and toggles', async () => {
  const alice = await openChat(browser, server.url, { room: 'popular', user: 'alice' });
  pages.push(alice);
  await sendMessage(alice, 'Popular message');
  const onAlice = messageWithText(alice, 'Popular message');
  const id = await onAlice.getAttribute('data-id');

  // Two long names on all 20 emoji (about 1.5 KB of names: past the
  // whole-list size), then three more people on the first emoji.
  await react('popular', id, [long('ann'), long('ben')], EMOJI);
  await react('popular', id, ['carl', 'dave', 'erin'], [EMOJI[0]]);
  const all = [long('ann'), long('ben'), 'carl', 'dave', 'erin'].join(', ');

  // Alice was there all along: the changes kept her list whole.
  const firstOnAlice = onAlice.getByTestId('reaction').filter({ hasText: EMOJI[0] });
  await firstOnAlice.getByTestId('reaction-count').getByText('5', { exact: true }).waitFor();
  assert.equal(await firstOnAlice.getAttribute('data-users'), all);
  assert.equal(await onAlice.getByTestId('reaction').count(), 20);

  // Bob arrives later: his welcome has a sample and the counts.
  const bob = await openChat(browser, server.url, { room: 'popular', user: 'bob' });
  pages.push(bob);
  const onBob = messageWithText(bob, 'Popular message');
  const firstOnBob = onBob.getByTestId('reaction').filter({ hasText: EMOJI[0] });
  await firstOnBob.getByTestId('reaction-count').getByText('5', { exact: true }).waitFor();
  assert.equal(await firstOnBob.getAttribute('data-users'), `${long('ann')}, ${long('ben')}, carl and 2 more`);
  assert.equal(await onBob.getByTestId('reaction').count(), 20);

  // Looking at it fetches every name.
  await firstOnBob.hover();
  await bob.waitForFunction((all) => [...document.querySelectorAll('[data-testid="reaction"]')]
    .some((b) => b.dataset.users === all), all);

  // Bob's click adds his: 6 everywhere, pressed for him only.
  await firstOnBob.click();
  await firstOnAlice.getByTestId('reaction-count').getByText('6', { exact: true }).waitFor();
  await firstOnBob.and(bob.locator('[aria-pressed="true"]')).waitFor();
  assert.equal(await firstOnAlice.getAttribute('aria-pressed'), 'false');
  assert.equal(await firstOnAlice.getAttribute('data-users'), `${all}, bob`);

  // And takes it back: 5 again.
  await firstOnBob.click();
  await firstOnAlice.getByTestId('reaction-count').getByText('5', { exact: true }).waitFor();
  await firstOnBob.and(bob.locator('[aria-pressed="false"]')).waitFor();
});

test('a reaction toggled from the keyboard keeps the focus, which goes to ☺+ once the reaction is gone', async () => {
  const alice = await openChat(browser, server.url, { room: 'keyboard-reactions', user: 'alice' });
  const bob = await openChat(browser, server.url, { room: 'keyboard-reactions', user: 'bob' });
  pages.push(alice, bob);
  await sendMessage(bob, 'React from the keyboard');
  const onBob = messageWithText(bob, 'React from the keyboard');
  await onBob.hover();
  await onBob.getByTestId('add-reaction').click();
  await bob.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();

  const onAlice = messageWithText(alice, 'React from the keyboard');
  const thumb = onAlice.getByTestId('reaction').filter({ hasText: '👍' });
  const focused = () => alice.evaluate(() => {
    const el = document.activeElement;
    return { testid: el.dataset.testid, emoji: el.dataset.emoji ?? null, message: el.closest('li.msg')?.querySelector('[data-testid=message-text]').textContent };
  });
  await thumb.getByTestId('reaction-count').getByText('1', { exact: true }).waitFor();
  await thumb.focus();
  await alice.keyboard.press('Enter');
  await thumb.getByTestId('reaction-count').getByText('2', { exact: true }).waitFor();
  assert.deepEqual(await focused(), { testid: 'reaction', emoji: '👍', message: 'React from the keyboard' });
  await alice.keyboard.press('Enter');
  await thumb.getByTestId('reaction-count').getByText('1', { exact: true }).waitFor();
  assert.deepEqual(await focused(), { testid: 'reaction', emoji: '👍', message: 'React from the keyboard' });

  // Bob takes his away while Alice is on it: the reaction is gone, she is on ☺+.
  await onBob.getByTestId('reaction').filter({ hasText: '👍' }).click();
  await thumb.waitFor({ state: 'detached' });
  assert.deepEqual(await focused(), { testid: 'add-reaction', emoji: null, message: 'React from the keyboard' });
});
