// A popular message: once its reactions are large the server sends only
// what changes and a few names per emoji (protocol.md "Reactions on the
// wire"); the page still shows every count right, fetches the names when
// someone looks at a reaction, and toggles as usual; a reaction of one's
// own that the sample leaves out is still one's own (after a reload too),
// and a refused fetch of the names is asked again. And toggling from the
// keyboard keeps the focus where it was.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openChat, sendMessage, messageWithText, startSuite, stopSuite, waitConnected, joinAs, unexpectedProblems, goToRoom,
} from './helpers.js';

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

/** A message by alice in `room` with large reactions: 5 people on EMOJI[0], 2 on the rest. */
async function popularMessage(room, text) {
  const alice = await openChat(browser, server.url, { room, user: 'alice' });
  pages.push(alice);
  await sendMessage(alice, text);
  const onAlice = messageWithText(alice, text);
  const id = await onAlice.getAttribute('data-id');
  await react(room, id, [long('ann'), long('ben')], EMOJI);
  await react(room, id, ['carl', 'dave', 'erin'], [EMOJI[0]]);
  const first = onAlice.getByTestId('reaction').filter({ hasText: EMOJI[0] });
  await first.getByTestId('reaction-count').getByText('5', { exact: true }).waitFor();
  return { alice, first };
}

test('a reaction of mine the sample leaves out shows pressed after a reload, and pressing it takes it back', async () => {
  const { first: firstOnAlice } = await popularMessage('hidden-mine', 'Crowded reactions');
  const bea = await openChat(browser, server.url, { room: 'hidden-mine', user: 'bea' });
  pages.push(bea);
  const chip = () => messageWithText(bea, 'Crowded reactions').getByTestId('reaction').filter({ hasText: EMOJI[0] });
  // A click with no pointer moving there: no look fetched the names first.
  await chip().dispatchEvent('click');
  await firstOnAlice.getByTestId('reaction-count').getByText('6', { exact: true }).waitFor();
  await chip().and(bea.locator('[aria-pressed="true"]')).waitFor();

  // After a reload the sample (3 names) leaves bea out; the page remembers.
  await bea.reload();
  await waitConnected(bea);
  await chip().getByTestId('reaction-count').getByText('6', { exact: true }).waitFor();
  assert.equal(await chip().getAttribute('aria-pressed'), 'true', 'still hers');
  assert.equal(await chip().getAttribute('data-users'), `${long('ann')}, ${long('ben')}, carl and 3 more`);

  // Pressing it takes hers back, as it shows: 5 again.
  await chip().dispatchEvent('click');
  await firstOnAlice.getByTestId('reaction-count').getByText('5', { exact: true }).waitFor();
  await chip().and(bea.locator('[aria-pressed="false"]')).waitFor();
  assert.equal(await firstOnAlice.getAttribute('data-users'), [long('ann'), long('ben'), 'carl', 'dave', 'erin'].join(', '));
});

test('pressing a reaction the sample may hide never takes it away, and finds out whose it is', async () => {
  const { alice, first: firstOnAlice } = await popularMessage('unsure-mine', 'Unsure reactions');
  const bea = await openChat(browser, server.url, { room: 'unsure-mine', user: 'bea' });
  pages.push(bea);
  const chip = () => messageWithText(bea, 'Unsure reactions').getByTestId('reaction').filter({ hasText: EMOJI[0] });
  await chip().dispatchEvent('click');
  await chip().and(bea.locator('[aria-pressed="true"]')).waitFor();

  // This browser forgets (as another device of hers would know nothing):
  // after a reload the button cannot tell, and shows it not pressed.
  await bea.evaluate(() => localStorage.removeItem('roomcast.reactions'));
  await bea.reload();
  await waitConnected(bea);
  await chip().getByTestId('reaction-count').getByText('6', { exact: true }).waitFor();
  assert.equal(await chip().getAttribute('aria-pressed'), 'false');

  // Pressing it asks to add (hers already: nothing changes) and fetches
  // the names, which show it is hers.
  await chip().dispatchEvent('click');
  await chip().and(bea.locator('[aria-pressed="true"]')).waitFor({ timeout: 15000 });
  // Anything her press changed reaches alice before bea's next message.
  await sendMessage(bea, 'after the press');
  await messageWithText(alice, 'after the press').waitFor();
  assert.equal(await firstOnAlice.getByTestId('reaction-count').textContent(), '6');
});

test('a fetch of the names that was refused is asked again on the next look', async () => {
  const { first: firstOnAlice } = await popularMessage('refused-names', 'Names refused once');
  const all = await firstOnAlice.getAttribute('data-users');
  const bea = await openChat(browser, server.url);
  pages.push(bea);
  // The first answer to a `reactions` request is a refusal instead.
  let asked = 0;
  let refuseNext = true;
  await bea.routeWebSocket(/\/ws\//, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((m) => {
      if (JSON.parse(m).type === 'reactions') asked += 1;
      upstream.send(m);
    });
    upstream.onMessage((m) => {
      if (refuseNext && JSON.parse(m).type === 'reactions') {
        ws.send(JSON.stringify({ type: 'error', code: 'unavailable', ref: 'reactions', message: 'try again' }));
        // Then something that shows: the page has read the refusal.
        ws.send(JSON.stringify({ type: 'presence', online: ['alice', 'bea', 'read-the-refusal'], online_count: 3 }));
        refuseNext = false;
        return;
      }
      ws.send(m);
    });
  });
  await joinAs(bea, server.url, 'refused-names', 'bea');
  const chip = messageWithText(bea, 'Names refused once').getByTestId('reaction').filter({ hasText: EMOJI[0] });
  await chip.getByTestId('reaction-count').getByText('5', { exact: true }).waitFor();
  await chip.hover();
  await bea.getByTestId('online-list').getByText('read-the-refusal').waitFor();

  // Looking again asks again, and the names come.
  await bea.mouse.move(0, 0);
  await chip.hover();
  await chip.and(bea.locator(`[data-users="${all}"]`)).waitFor();
  assert.ok(asked >= 2, 'the names came from a request of their own');
});

test('a fetch of the names lost with the connection is asked again once reconnected', async () => {
  const { first: firstOnAlice } = await popularMessage('lost-names', 'Names lost once');
  const all = await firstOnAlice.getAttribute('data-users');
  const bea = await openChat(browser, server.url);
  // The first `reactions` request goes nowhere, and the link drops.
  let asked = 0;
  await bea.routeWebSocket(/\/ws\//, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((m) => {
      if (JSON.parse(m).type === 'reactions') {
        asked += 1;
        if (asked === 1) { ws.close({ code: 1013, reason: 'test' }); return; }
      }
      upstream.send(m);
    });
  });
  await joinAs(bea, server.url, 'lost-names', 'bea');
  const chip = messageWithText(bea, 'Names lost once').getByTestId('reaction').filter({ hasText: EMOJI[0] });
  await chip.getByTestId('reaction-count').getByText('5', { exact: true }).waitFor();
  await chip.hover();
  await bea.getByTestId('conn-status').and(bea.locator('[data-state="reconnecting"]')).waitFor();
  await waitConnected(bea);

  // Looking again asks again, and the names come.
  await bea.mouse.move(0, 0);
  await chip.hover();
  await chip.and(bea.locator(`[data-users="${all}"]`)).waitFor();
  assert.ok(asked >= 2, 'the names came from a request of their own');
  assert.deepEqual(unexpectedProblems(bea, [/WebSocket/i]), [], 'the drop aside, no page errors');
  await bea.context().close();
});

test('a fetch of the names still out when the room is left is asked again on coming back', async () => {
  const { first: firstOnAlice } = await popularMessage('left-names', 'Names left behind');
  const all = await firstOnAlice.getAttribute('data-users');
  const cy = await openChat(browser, server.url);
  // The first `reactions` request goes nowhere, and nothing answers it.
  let asked = 0;
  let wentOut;
  const firstOut = new Promise((resolve) => { wentOut = resolve; });
  await cy.routeWebSocket(/\/ws\//, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((m) => {
      if (JSON.parse(m).type === 'reactions') {
        asked += 1;
        if (asked === 1) { wentOut(); return; }
      }
      upstream.send(m);
    });
  });
  await joinAs(cy, server.url, 'left-names', 'cy');
  const chip = messageWithText(cy, 'Names left behind').getByTestId('reaction').filter({ hasText: EMOJI[0] });
  await chip.getByTestId('reaction-count').getByText('5', { exact: true }).waitFor();
  await chip.hover();
  await firstOut;
  // Another room, at once (that socket's answers will never come), and back.
  await goToRoom(cy, 'left-names-elsewhere');
  await goToRoom(cy, 'left-names');
  await cy.mouse.move(0, 0);
  await chip.hover();
  await chip.and(cy.locator(`[data-users="${all}"]`)).waitFor();
  assert.ok(asked >= 2, 'asked again');
  assert.deepEqual(unexpectedProblems(cy), []);
  await cy.context().close();
});
