// Two people chatting: messages, safety of rendered text, reactions, edits,
// deletes, typing, presence, links, rooms, scrolling and keyboard-only use.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openChat, joinAs, sendMessage, messageWithText, waitConnected, startSuite, stopSuite } from './helpers.js';

let server;
let browser;
const pages = [];

before(async () => { ({ server, browser } = await startSuite()); });

after(async () => {
  await stopSuite({ server, browser });
  for (const p of pages) assert.deepEqual(p.problems, [], 'no page errors, console errors or CSP violations');
});

async function chat(room, user, opts) {
  const page = await openChat(browser, server.url, { room, user, ...opts });
  pages.push(page);
  return page;
}

test('two users exchange messages and see each other online', async () => {
  const alice = await chat('lobby', 'alice');
  const bob = await chat('lobby', 'bob');

  await alice.getByTestId('notice').getByText('bob joined').waitFor();
  await alice.getByTestId('online-count').getByText('2 online').waitFor();
  await alice.getByTestId('online-list').getByText('bob').waitFor();

  await sendMessage(alice, 'Hi Bob!');
  await sendMessage(alice, 'Are you there?');
  await messageWithText(bob, 'Are you there?').waitFor();
  await sendMessage(bob, 'Hello Alice');
  await messageWithText(alice, 'Hello Alice').waitFor();

  // Bob sees both of Alice's messages once, in order, as one group.
  const texts = await bob.getByTestId('message-text').allTextContents();
  assert.deepEqual(texts, ['Hi Bob!', 'Are you there?', 'Hello Alice']);
  const second = messageWithText(bob, 'Are you there?');
  assert.equal(await second.evaluate((el) => el.classList.contains('msg--cont')), true, 'grouped with the previous message');
  assert.equal(await second.getAttribute('data-author'), 'alice');

  // Timestamps are machine-readable and shown in the reader's locale.
  const dt = await second.locator('time').getAttribute('datetime');
  assert.ok(!Number.isNaN(Date.parse(dt)));

  await bob.close();
  await alice.getByTestId('notice').getByText('bob left').waitFor();
  await alice.getByTestId('online-count').getByText('1 online').waitFor();
});

test('script-like content is shown as literal text and runs nothing', async () => {
  const mallory = await chat('xss', 'mallory');
  const victim = await chat('xss', 'victim');
  const payloads = ['<img src=x onerror="window.__pwned=1">', '<script>window.__pwned=1</script>'];
  for (const p of payloads) await sendMessage(mallory, p);

  for (const p of payloads) await messageWithText(victim, p).waitFor();
  const texts = await victim.getByTestId('message-text').allTextContents();
  assert.deepEqual(texts, payloads);
  assert.equal(await victim.locator('.messages img, .messages script').count(), 0, 'no element was created from message text');
  assert.equal(await victim.evaluate(() => window.__pwned), undefined);
  assert.equal(await mallory.evaluate(() => window.__pwned), undefined);
});

test('links are clickable only for http(s) and open safely', async () => {
  const a = await chat('links', 'ann');
  const b = await chat('links', 'ben');
  await sendMessage(a, 'docs at https://example.com/a?b=1, not javascript:alert(1) or data:text/html,x');
  const msg = messageWithText(b, 'docs at https://example.com/a?b=1, not javascript:alert(1) or data:text/html,x');
  await msg.waitFor();
  const links = msg.getByRole('link');
  assert.equal(await links.count(), 1);
  assert.equal(await links.getAttribute('href'), 'https://example.com/a?b=1');
  assert.equal(await links.getAttribute('rel'), 'noopener noreferrer');
  assert.equal(await links.getAttribute('target'), '_blank');
});

test('reactions toggle with one click and update counts in the other window', async () => {
  const alice = await chat('react', 'alice');
  const bob = await chat('react', 'bob');
  await sendMessage(alice, 'React to this');
  const onBob = messageWithText(bob, 'React to this');
  const onAlice = messageWithText(alice, 'React to this');

  // Bob picks 👍 from the picker.
  await onBob.hover();
  await onBob.getByTestId('add-reaction').click();
  await bob.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();

  const thumbAlice = onAlice.getByTestId('reaction').filter({ hasText: '👍' });
  await thumbAlice.getByTestId('reaction-count').getByText('1', { exact: true }).waitFor();
  assert.equal(await thumbAlice.getAttribute('aria-pressed'), 'false', 'not highlighted for alice');
  assert.equal(await thumbAlice.getAttribute('data-users'), 'bob', 'who reacted is shown on hover/focus');
  const thumbBob = onBob.getByTestId('reaction').filter({ hasText: '👍' });
  await thumbBob.and(bob.locator('[aria-pressed="true"]')).waitFor();

  // Alice adds hers with one click on the existing reaction: 2, highlighted for her.
  await thumbAlice.click();
  await thumbBob.getByTestId('reaction-count').getByText('2', { exact: true }).waitFor();
  await thumbAlice.and(alice.locator('[aria-pressed="true"]')).waitFor();
  assert.equal(await thumbBob.getAttribute('data-users'), 'bob, alice');

  // Bob toggles his off: 1 left, no longer highlighted for him.
  await thumbBob.click();
  await thumbAlice.getByTestId('reaction-count').getByText('1', { exact: true }).waitFor();
  await thumbBob.and(bob.locator('[aria-pressed="false"]')).waitFor();

  // Alice toggles hers off: the reaction disappears everywhere.
  await thumbAlice.click();
  await onBob.getByTestId('reaction').waitFor({ state: 'detached' });
});

test('authors edit and delete their own messages; others cannot', async () => {
  const alice = await chat('edits', 'alice');
  const bob = await chat('edits', 'bob');
  await sendMessage(alice, 'Teh first draft');
  await sendMessage(alice, 'Delete me');
  await messageWithText(bob, 'Delete me').waitFor();

  // Bob gets no edit/delete controls on Alice's messages.
  assert.equal(await messageWithText(bob, 'Teh first draft').getByTestId('edit-message').count(), 0);
  assert.equal(await messageWithText(bob, 'Teh first draft').getByTestId('delete-message').count(), 0);

  const draft = messageWithText(alice, 'Teh first draft');
  await draft.hover();
  await draft.getByTestId('edit-message').click();
  const input = alice.getByTestId('edit-input');
  await input.fill('The first draft');
  await input.press('Enter');
  const edited = messageWithText(bob, 'The first draft');
  await edited.waitFor();
  assert.equal(await edited.getByTestId('message-edited').isVisible(), true, '"(edited)" is shown');
  assert.equal(await messageWithText(bob, 'Teh first draft').count(), 0);

  alice.once('dialog', (d) => d.accept());
  const doomed = messageWithText(alice, 'Delete me');
  await doomed.hover();
  await doomed.getByTestId('delete-message').click();
  await bob.getByTestId('message-deleted').getByText('alice deleted a message').waitFor();
  await messageWithText(bob, 'Delete me').waitFor({ state: 'detached' });
  await messageWithText(alice, 'Delete me').waitFor({ state: 'detached' });
});

/**
 * alice in `room`, her socket behind a proxy: `onFrame(frame, { toPage,
 * upstream })` decides what of each frame she sends reaches the server.
 */
async function proxiedAlice(room, onFrame) {
  const alice = await openChat(browser, server.url);
  pages.push(alice);
  await alice.routeWebSocket(/\/ws\//, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((m) => onFrame(m, { toPage: ws, upstream }));
  });
  await joinAs(alice, server.url, room, 'alice');
  return alice;
}

/** Opens the edit box on `page`'s confirmed message `text`; types `typed` and saves, if given. */
async function openEdit(page, text, typed) {
  const li = messageWithText(page, text).and(page.locator('[data-id]:not([data-id=""])'));
  await li.waitFor();
  await li.hover();
  await li.getByTestId('edit-message').click();
  if (typed !== undefined) {
    await page.getByTestId('edit-input').fill(typed);
    await page.getByTestId('edit-input').press('Enter');
  }
  return li;
}

const GONE_TEXT = 'That message is no longer available (it may be too old or deleted).';

test('a refused edit comes back in its box with what was typed and the reason', async () => {
  // The server would answer `unknown_message` for a message older than it
  // keeps in memory; a proxy answers the first edit so, in its place.
  let refused = 0;
  const alice = await proxiedAlice('refused-edit', (m, { toPage, upstream }) => {
    if (JSON.parse(m).type !== 'edit' || refused) { upstream.send(m); return; }
    refused += 1;
    toPage.send(JSON.stringify({ type: 'error', code: 'unknown_message', message: 'no such message', ref: 'edit' }));
  });
  const bob = await chat('refused-edit', 'bob');
  await sendMessage(alice, 'an old message');
  const typed = 'a careful rewrite\nover two lines';
  const mine = await openEdit(alice, 'an old message', typed);
  // The refusal shows either in the box or, failing that, as a toast.
  await alice.getByTestId('edit-error').or(alice.getByTestId('toast')).first().waitFor();
  assert.equal(refused, 1);
  assert.equal(await mine.getByTestId('edit-box').isVisible(), true, 'the edit box is open again on the message');
  assert.equal(await mine.getByTestId('edit-input').inputValue(), typed, 'with what was typed');
  assert.equal(await mine.getByTestId('edit-error').textContent(), GONE_TEXT);
  assert.equal(await alice.evaluate(() => document.activeElement.dataset.testid), 'edit-input');
  assert.equal(await alice.getByTestId('toast').count(), 0, 'said once, in the box');

  // Saving again goes through this time, and the box closes for good.
  await alice.getByTestId('edit-input').press('Enter');
  for (const p of [alice, bob]) {
    const edited = p.getByTestId('message').filter({ has: p.getByTestId('message-edited') }).getByTestId('message-text');
    await edited.waitFor();
    assert.equal(await edited.evaluate((el) => el.innerText), typed);
  }
  assert.equal(await alice.getByTestId('edit-box').count(), 0);
});

test('an edit refused by the rate limit comes back in its box too', async () => {
  // A proxy answers the edit in the server's place with the refusal the
  // server sends past the rate (its shape, `ref` and `message_id`
  // included, is pinned by tests/ws_limits.rs). Spending the real
  // server's burst first would race its refill: a slow machine refilled a
  // token before the edit and the edit went through.
  let refused = false;
  const alice = await proxiedAlice('limited-edit', (m, { toPage, upstream }) => {
    const req = JSON.parse(m);
    if (req.type === 'edit' && !refused) {
      refused = true;
      toPage.send(JSON.stringify({
        type: 'error',
        code: 'rate_limited',
        message: 'more than 10 requests per second (your connections count together); this one was dropped',
        ref: 'edit',
        message_id: req.message_id,
      }));
      return;
    }
    upstream.send(m);
  });
  await sendMessage(alice, 'a hasty message');
  const typed = 'a slower, better message';
  const mine = await openEdit(alice, 'a hasty message', typed);
  await alice.getByTestId('edit-error').or(alice.getByTestId('toast')).first().waitFor();
  assert.equal(await mine.getByTestId('edit-input').inputValue(), typed, 'what was typed is kept');
  assert.equal(await mine.getByTestId('edit-error').textContent(),
    'You are sending too fast. Wait a moment and try again.');
  assert.equal(await alice.locator('.msg--failed').count(), 0, 'no message is marked refused for it');
});

test('a rate-limited edit that overtakes an earlier one reopens its own box', async () => {
  // With Redis the rate limit's refusal, sent at once, can arrive before
  // the answer to an earlier edit: a proxy holds the first edit back until
  // the second is refused, and the refusal names its message.
  let held = null;
  const alice = await proxiedAlice('overtaken-edit', (m, { toPage, upstream }) => {
    const req = JSON.parse(m);
    if (req.type === 'edit' && !held) { held = m; return; }
    if (req.type === 'edit') {
      toPage.send(JSON.stringify({ type: 'error', code: 'rate_limited', message: 'test', ref: 'edit', message_id: req.message_id }));
      upstream.send(held);
      return;
    }
    upstream.send(m);
  });
  await sendMessage(alice, 'first words');
  await sendMessage(alice, 'second words');
  await openEdit(alice, 'first words', 'first, rewritten');
  const second = await openEdit(alice, 'second words', 'second, rewritten');
  await second.getByTestId('edit-error').waitFor();
  assert.equal(await second.getByTestId('edit-input').inputValue(), 'second, rewritten');
  const first = messageWithText(alice, 'first, rewritten');
  await first.getByTestId('message-edited').waitFor();
  assert.equal(await first.getByTestId('edit-box').count(), 0, 'the first edit was taken, not reopened');
});

test('an edit refused while another box is open waits for that box to close', async () => {
  // A proxy keeps the first edit from the server; its refusal is sent once
  // the person is typing in another message's box.
  let toAlice = null;
  let held = null;
  const alice = await proxiedAlice('later-edit', (m, { toPage, upstream }) => {
    toAlice = toPage;
    const req = JSON.parse(m);
    if (req.type === 'edit' && !held) { held = req; return; }
    upstream.send(m);
  });
  await sendMessage(alice, 'one message');
  await sendMessage(alice, 'another message');
  const one = await openEdit(alice, 'one message', 'one, rewritten');
  const another = await openEdit(alice, 'another message');
  await alice.getByTestId('edit-input').fill('half typed');
  assert.ok(held, 'the first edit went out');
  toAlice.send(JSON.stringify({ type: 'error', code: 'unknown_message', message: 'no such message', ref: 'edit' }));
  await alice.getByTestId('toast').getByText('opens again when you close this one', { exact: false }).waitFor();
  assert.equal(await another.getByTestId('edit-input').inputValue(), 'half typed', 'the box being typed in stays');
  await alice.getByTestId('edit-input').press('Escape');
  await one.getByTestId('edit-box').waitFor();
  assert.equal(await one.getByTestId('edit-input').inputValue(), 'one, rewritten');
  assert.equal(await one.getByTestId('edit-error').textContent(), GONE_TEXT);
});

test('typing indicator shows who is typing', async () => {
  const alice = await chat('typing', 'alice');
  const bob = await chat('typing', 'bob');
  // The indicator shows for a few seconds only: watch for it from before
  // bob types, so a slow moment in the test cannot miss it.
  const shown = alice.waitForFunction(
    () => document.querySelector('[data-testid=typing]').textContent.includes('bob is typing…'),
    null, { polling: 'raf' },
  );
  await bob.getByTestId('composer-input').pressSequentially('hel');
  await shown;
  // Sending clears it for the reader.
  await bob.getByTestId('composer-input').press('Enter');
  await messageWithText(alice, 'hel').waitFor();
  await alice.getByTestId('typing').getByText('bob is typing…').waitFor({ state: 'detached' });
});

test('keyboard only: join from the form and send a message', async () => {
  const watcher = await chat('keys', 'watcher');
  const page = await chat(undefined, undefined); // no room or name in the URL: the join form
  await page.getByTestId('join-form').waitFor();
  // Focus starts in the name field; Tab moves to the room field.
  await page.keyboard.type('keyboarder');
  await page.keyboard.press('Tab');
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.type('keys');
  await page.keyboard.press('Enter');
  await waitConnected(page);
  assert.match(page.url(), /\/\?room=keys$/, 'the address can be shared: it names the room only');
  // After joining, focus is in the message box.
  await page.keyboard.type('typed without a mouse');
  await page.keyboard.press('Enter');
  await messageWithText(watcher, 'typed without a mouse').waitFor();

  // React by keyboard too: Tab into the message's actions, open the picker, choose.
  const mine = messageWithText(page, 'typed without a mouse');
  // Reactions need the server's id, which comes with the echo.
  await mine.and(page.locator('[data-id]:not([data-id=""])')).waitFor();
  await mine.getByTestId('add-reaction').focus();
  await page.keyboard.press('Enter');
  await page.keyboard.press('ArrowRight'); // ❤️
  await page.keyboard.press('Enter');
  await messageWithText(watcher, 'typed without a mouse').getByTestId('reaction').filter({ hasText: '❤️' }).waitFor();
});

test('the name is remembered and rooms switch without a page reload', async () => {
  const page = await chat('first-room', 'rememberme');
  await page.evaluate(() => { window.__sameDocument = true; });
  await page.getByTestId('room-input').fill('second-room');
  await page.getByTestId('room-input').press('Enter');
  await page.getByTestId('room-title').getByText('second-room', { exact: true }).waitFor();
  await waitConnected(page);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
  assert.match(page.url(), /\/\?room=second-room$/);

  // Recent rooms are listed; clicking one switches back.
  await page.getByTestId('room-list').getByRole('link', { name: '# first-room' }).click();
  await page.getByTestId('room-title').getByText('first-room', { exact: true }).waitFor();
  await waitConnected(page);
  assert.equal(await page.evaluate(() => window.__sameDocument), true);

  // A shared link with only a room uses the remembered name.
  await page.goto(`${server.url}/?room=third-room`);
  await waitConnected(page);
  assert.equal(await page.getByTestId('me-name').textContent(), 'rememberme');
});

test('a reader who scrolled up is not yanked down; a pill offers the new messages', async () => {
  const reader = await chat('scroll', 'reader', { viewport: { width: 800, height: 500 } });
  const writer = await chat('scroll', 'writer');
  for (let i = 1; i <= 15; i++) await sendMessage(writer, `line ${i}`);
  await messageWithText(reader, 'line 15').waitFor();
  const list = reader.getByTestId('messages');
  // Following along: the newest message is in view.
  await reader.waitForFunction(() => {
    const l = document.querySelector('[data-testid=messages]');
    return l.scrollHeight - l.scrollTop - l.clientHeight < 60;
  });
  await list.evaluate((l) => { l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); });
  await sendMessage(writer, 'while you were reading');
  await messageWithText(reader, 'while you were reading').waitFor({ state: 'attached' });
  await reader.getByTestId('new-pill').waitFor();
  assert.equal(await list.evaluate((l) => l.scrollTop), 0, 'the reader stays where they were');
  await reader.getByTestId('new-pill').click();
  await reader.getByTestId('new-pill').waitFor({ state: 'hidden' });
  await messageWithText(reader, 'while you were reading').waitFor({ state: 'visible' });
});

test('typing notices do not eat the rate budget: 18 quick messages are all accepted', async () => {
  const page = await chat('quick', 'quick');
  // Type-and-send 18 times in one tick. The server allows a burst of 20
  // requests; a typing request before every message would make 36, and the
  // server would refuse the later messages as too fast.
  await page.evaluate(() => {
    const input = document.querySelector('[data-testid=composer-input]');
    const form = document.querySelector('[data-testid=composer]');
    for (let i = 1; i <= 18; i++) {
      input.value = `quick ${i}`;
      input.dispatchEvent(new Event('input', { bubbles: true }));
      form.requestSubmit();
    }
  });
  // Settled: each message is confirmed by its echo or marked refused.
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=message]').length === 18
    && document.querySelectorAll('.msg--pending:not(.msg--failed)').length === 0);
  assert.equal(await page.locator('.msg--failed').count(), 0, 'none was refused');
  assert.equal(await page.locator('[data-testid=message]:not(.msg--pending)').count(), 18);
});

test('server errors are shown as readable notices (rate limit)', async () => {
  const page = await chat('flood', 'eager');
  // Toasts go away after a while: watch for this one from before it can come.
  const told = page.waitForFunction(
    () => [...document.querySelectorAll('[data-testid=toast]')]
      .some((t) => t.textContent.includes('You are sending too fast')),
    null, { polling: 'raf' },
  );
  // 30 sends in one tick: more than the burst (20 by default), so the server
  // refuses some with `rate_limited`.
  await page.evaluate(() => {
    const input = document.querySelector('[data-testid=composer-input]');
    const form = document.querySelector('[data-testid=composer]');
    for (let i = 0; i < 30; i++) { input.value = `burst ${i}`; form.requestSubmit(); }
  });
  await told;
  await page.locator('.msg--failed').first().waitFor();
  await page.getByTestId('retry-message').first().waitFor();
});
