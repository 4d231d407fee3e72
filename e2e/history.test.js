// Scrollback: older messages load a page at a time when the reader goes up
// (scrolling, Home, or the "Load older messages" button), without moving
// what the reader looks at, render like live ones, and stop at the start;
// a long-lived tab, hidden or not, keeps a bounded list.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openChat, openSeeder, messageWithText, watchProblems, joinAs, waitConnected, axeViolations, startSuite, stopSuite,
  setTabHidden,
} from './helpers.js';

let server;
let browser;
const SEEDED = 1200;
const label = (i) => `msg ${String(i).padStart(4, '0')}`;

before(async () => {
  // --rate 0: the seeder posts a burst on one connection.
  ({ server, browser } = await startSuite({ extraArgs: ['--rate', '0'] }));
  const seeder = await openSeeder(browser, server.url, 'long', 'seeder');
  await seeder.post(Array.from({ length: SEEDED }, (_, i) => label(i + 1)));
  await seeder.close();
});

after(() => stopSuite({ server, browser }));

/** The texts of the messages shown, top to bottom. */
const texts = (page) => page.getByTestId('message-text').allTextContents();

/** Where `text`'s message is relative to the list's visible area. */
function placeOf(page, text) {
  return messageWithText(page, text).evaluate((li) => {
    const list = li.closest('#messages').getBoundingClientRect();
    const r = li.getBoundingClientRect();
    return { top: r.top, inView: r.bottom > list.top && r.top < list.bottom };
  });
}

/** Waits until the list holds more than `n` messages, or the top edge says there is nothing older. */
async function loadedPast(page, n) {
  await page.waitForFunction((n) => document.querySelectorAll('#messages > li.msg').length > n
    || document.querySelector('[data-testid="history-top"]')?.dataset.state === 'done', n);
}

function assertWhole(list) {
  assert.equal(list.length, SEEDED, 'every seeded message once');
  list.forEach((t, i) => assert.equal(t, label(i + 1), `message ${i + 1} in order`));
}

test('scrolling up loads older pages in place until the beginning', async () => {
  const page = await openChat(browser, server.url, { room: 'long', user: 'reader' });
  await messageWithText(page, label(SEEDED)).waitFor();
  // The welcome brings the newest 50, oldest first.
  assert.deepEqual(await texts(page), Array.from({ length: 50 }, (_, i) => label(SEEDED - 49 + i)));
  assert.equal(await page.getByTestId('load-older').textContent(), 'Load older messages');

  const announced = [];
  for (let loads = 0; ; loads += 1) {
    assert.ok(loads < 20, 'the beginning is reached in 12 pages');
    const shown = await texts(page);
    if (await page.getByTestId('history-top').getAttribute('data-state') === 'done') break;
    // Read from the top: the first message shown is what the reader looks at.
    // Measured in the same task as the scroll, before its event can load anything.
    const was = await page.getByTestId('messages').evaluate((l) => {
      l.scrollTop = 0;
      return { top: l.querySelector(':scope > li.msg').getBoundingClientRect().top };
    });
    await loadedPast(page, shown.length);
    const now = await placeOf(page, shown[0]);
    assert.ok(now.inView, `${shown[0]} is still in view after a load`);
    assert.ok(Math.abs(now.top - was.top) < 2, `${shown[0]} did not move (${was.top} → ${now.top})`);
    announced.push(await page.getByTestId('announcer').textContent());
  }
  await page.getByTestId('history-note').getByText('Beginning of the conversation', { exact: true }).waitFor();
  assert.equal(await page.getByTestId('load-older').isHidden(), true, 'nothing more to ask for');
  assertWhole(await texts(page));
  // Old messages are not news: the live announcer never spoke of them.
  assert.ok(announced.every((t) => !/msg \d{4}/.test(t)), JSON.stringify(announced));
  assert.match(await page.getByTestId('history-status').textContent(), /Beginning of the conversation/);

  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('keyboard: Home in the list and the button load older messages', async () => {
  const page = await openChat(browser, server.url, { room: 'long', user: 'keys' });
  await messageWithText(page, label(SEEDED)).waitFor();
  const first = label(SEEDED - 49);

  // Home on a message: focus goes to the first one shown, and older ones load above it.
  await page.getByTestId('message').last().focus();
  await page.keyboard.press('Home');
  await loadedPast(page, 50);
  assert.equal(await page.evaluate(() => document.activeElement.querySelector('.msg-text')?.textContent), first);
  assert.ok((await placeOf(page, first)).inView);
  assert.equal((await texts(page))[0], label(SEEDED - 149));

  // The button, from the keyboard: focus carries on from the newest message it brought.
  // The edge and its button pass axe's WCAG rules like the rest of the list.
  assert.deepEqual(await axeViolations(page), []);

  await page.getByTestId('load-older').focus();
  await page.keyboard.press('Enter');
  await loadedPast(page, 150);
  const focused = label(SEEDED - 150);
  assert.equal(await page.evaluate(() => document.activeElement.querySelector('.msg-text')?.textContent), focused);
  assert.ok((await placeOf(page, focused)).inView);
  assert.match(await page.getByTestId('history-status').textContent(), /^Loaded 100 older messages\.$/);
  assert.equal((await texts(page))[0], label(SEEDED - 249));
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('a failed load offers a retry instead of looping', async () => {
  const page = await openChat(browser, server.url, { room: 'long', user: 'flaky' });
  await messageWithText(page, label(SEEDED)).waitFor();
  let asked = 0;
  await page.route(/\/api\/rooms\/[^/]+\/messages/, (route) => {
    asked += 1;
    return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"unavailable","message":"busy"}' });
  });
  await page.getByTestId('messages').evaluate((l) => { l.scrollTop = 0; });
  const top = page.getByTestId('history-top');
  await top.and(page.locator('[data-state="failed"]')).waitFor();
  await top.getByText('Could not load older messages.').waitFor();
  // Going up again does not ask again by itself: only the retry does.
  await page.getByTestId('messages').evaluate(async (l) => {
    l.scrollTop = 40;
    await new Promise((r) => requestAnimationFrame(r));
    l.scrollTop = 0;
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  });
  assert.equal(await top.getAttribute('data-state'), 'failed');
  assert.equal(asked, 1);

  await page.unroute(/\/api\/rooms\/[^/]+\/messages/);
  await page.getByTestId('load-older').getByText('Try again').click();
  await loadedPast(page, 50);
  assert.equal((await texts(page))[0], label(SEEDED - 149));
  assert.equal(await top.getAttribute('data-state'), 'more');
  // The browser logs the refused request; nothing else.
  assert.deepEqual(page.problems.filter((p) => !/503/.test(p)), []);
  await page.context().close();
});

test('old messages render like live ones and take live edits, reactions and deletes', async () => {
  const seeder = await openSeeder(browser, server.url, 'alive', 'ann');
  const file = await seeder.upload('notes.txt', 'text/plain', 'hello');
  await seeder.post(['with a file'], { attachment: file });
  const rest = Array.from({ length: 79 }, (_, i) => `line ${String(i + 2).padStart(2, '0')}`);
  await seeder.post(rest);

  const page = await openChat(browser, server.url, { room: 'alive', user: 'bob' });
  await messageWithText(page, 'line 80').waitFor();
  assert.equal(await messageWithText(page, 'line 10').count(), 0, 'not in the welcome');
  // The event without scrolling the button into view: a scroll to the top
  // starts the same load by itself and the button would be gone under the
  // pointer (the keyboard test above clicks it for real).
  await page.getByTestId('load-older').dispatchEvent('click');
  await page.getByTestId('history-note').getByText('Beginning of the conversation', { exact: true }).waitFor();
  const all = await texts(page);
  assert.equal(all.length, 80);
  assert.equal(all[0], 'with a file');
  await messageWithText(page, 'with a file').getByTestId('attachment-link').waitFor();
  // Grouped with the messages of the same author like any others.
  assert.equal(await messageWithText(page, 'line 10').evaluate((li) => li.classList.contains('msg--cont')), true);

  await seeder.about('line 10', { type: 'edit', content: 'line 10, edited' });
  await seeder.about('line 20', { type: 'reaction', emoji: '👍', action: 'add' });
  await seeder.about('line 30', { type: 'delete' });
  await messageWithText(page, 'line 10, edited').getByTestId('message-edited').waitFor();
  await messageWithText(page, 'line 20').getByTestId('reaction-count').getByText('1').waitFor();
  await page.getByTestId('message-deleted').getByText('ann deleted a message').waitFor();
  assert.equal(await messageWithText(page, 'line 30').count(), 0);
  // What is new still arrives, at the bottom.
  await seeder.post(['line 81']);
  await messageWithText(page, 'line 81').waitFor();
  assert.equal((await texts(page)).at(-1), 'line 81');
  assert.deepEqual(page.problems, []);
  await seeder.close();
  await page.context().close();
});

test('a gap left by a reconnect is filled by scrollback', async () => {
  // The server's own pages fill the gap; the socket is played by the test so
  // that the resume's `gap` happens on cue: the first welcome brings seqs
  // 1-50, the resume after 50 brings the newest 50 and says `gap`.
  const page = async (q) => (await (await fetch(`${server.url}/api/rooms/long/messages?${q}`)).json()).messages;
  const oldest = await page('before=51&limit=50');
  const newest = await page('limit=50');
  assert.equal(oldest[0].seq, 1);
  assert.equal(newest.at(-1).seq, SEEDED);

  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const tab = watchProblems(await context.newPage());
  const urls = [];
  let socket;
  await tab.routeWebSocket(/\/ws\//, (ws) => {
    urls.push(ws.url());
    socket = ws;
    const resume = /\?after=50$/.test(ws.url());
    ws.onMessage((raw) => {
      if (JSON.parse(raw).type === 'ping') ws.send(JSON.stringify({ type: 'pong' }));
    });
    ws.send(JSON.stringify({
      type: 'welcome', room: 'long', user: 'gappy', online: ['gappy'], online_count: 1,
      history: resume ? newest : oldest, gap: resume, last_seq: SEEDED,
    }));
  });
  await joinAs(tab, server.url, 'long', 'gappy');
  await messageWithText(tab, label(50)).waitFor();
  await tab.getByTestId('history-top').getByText('Beginning of the conversation').waitFor();

  await socket.close({ code: 1013, reason: 'test' });
  await tab.getByTestId('conn-status').and(tab.locator('[data-state="reconnecting"]')).waitFor();
  await waitConnected(tab);
  assert.match(urls.at(-1), /\?after=50$/);
  await messageWithText(tab, label(SEEDED)).waitFor();
  const gap = tab.getByTestId('history-gap');
  await gap.getByText('Some messages were missed while you were disconnected.').waitFor();

  // Going up to the gap fills it a page at a time, then the mark goes.
  for (let loads = 0; await gap.count() > 0; loads += 1) {
    assert.ok(loads < 20, 'the gap closes in 11 pages');
    const n = await tab.locator('#messages > li.msg').count();
    // Without scrolling it into view (see above): scrolling there fills the gap by itself.
    await tab.getByTestId('load-missed').dispatchEvent('click');
    await tab.waitForFunction((n) => document.querySelectorAll('#messages > li.msg').length > n
      || !document.querySelector('[data-testid="history-gap"]'), n);
  }
  assertWhole(await texts(tab));
  assert.deepEqual(tab.problems, []);
  await context.close();
});

test('a hidden tab keeps at most the limit of messages while a busy room goes on', async () => {
  // history.js: MAX_SHOWN kept, trimmed once PAGE_SIZE more have come.
  const [kept, slack] = [3000, 100];
  const posted = kept + slack + 50;
  const seeder = await openSeeder(browser, server.url, 'busy', 'seeder');
  const page = await openChat(browser, server.url, { room: 'busy', user: 'idle' });
  await setTabHidden(page, true);
  const busy = (i) => `busy ${String(i).padStart(4, '0')}`;
  await seeder.post(Array.from({ length: posted }, (_, i) => busy(i + 1)));
  await messageWithText(page, busy(posted)).waitFor({ state: 'attached' });
  const count = () => page.locator('#messages > li.msg').count();
  // Still hidden: the oldest left the page. (Polled: a hidden tab runs no
  // animation frames; the timeout only fails the test.)
  await page.waitForFunction((n) => document.querySelectorAll('#messages > li.msg').length <= n, kept + slack, { polling: 50, timeout: 20000 });
  assert.ok(await count() >= kept, 'the newest are all kept');
  assert.equal((await texts(page)).at(-1), busy(posted));
  assert.equal(await page.getByTestId('history-top').getAttribute('data-state'), 'more', 'the oldest can be loaded again');

  // The list is still one Tab stop: the newest message and its controls only.
  await setTabHidden(page, false);
  const stops = await page.locator('#messages > li.msg').evaluateAll((lis) => lis
    .filter((li) => li.tabIndex === 0).map((li) => li.querySelector('.msg-text').textContent));
  assert.deepEqual(stops, [busy(posted)]);
  const buttons = await page.locator('#messages > li.msg [data-action="react"]').evaluateAll((bs) => bs
    .filter((b) => b.tabIndex === 0).length);
  assert.equal(buttons, 1);
  assert.deepEqual(page.problems, []);
  await seeder.close();
  await page.context().close();
});

test('a reader scrolled up in a hidden tab keeps their place while a busy room stays bounded', async () => {
  // history.js: a reader not following the newest keeps at most MAX_LIST
  // (MAX_SHOWN + 5 pages); past that, what they look at stays with AROUND
  // (5 pages) on either side, the newest fill up to MAX_SHOWN, and a
  // trimmed gap stands for those in between.
  const [kept, most, around] = [3000, 3500, 500];
  const far = (i) => `far ${String(i).padStart(4, '0')}`;
  const seeder = await openSeeder(browser, server.url, 'far', 'seeder');
  await seeder.post(Array.from({ length: 150 }, (_, i) => far(i + 1)));
  const page = await openChat(browser, server.url, { room: 'far', user: 'deep' });
  await messageWithText(page, far(150)).waitFor();
  // Read back a page (to the beginning), and rest on a message there.
  await page.getByTestId('messages').evaluate((l) => { l.scrollTop = 0; });
  await loadedPast(page, 50);
  assert.equal((await texts(page))[0], far(1));
  const was = await placeOf(page, far(101));
  assert.ok(was.inView, `${far(101)} is where the reader is`);
  await messageWithText(page, far(105)).evaluate((li) => li.focus({ preventScroll: true }));
  const focused = () => page.evaluate(() => document.activeElement.querySelector?.('.msg-text')?.textContent);
  assert.equal(await focused(), far(105));

  await setTabHidden(page, true);
  const posted = most + 100 - 150;
  const last = 150 + posted;
  await seeder.post(Array.from({ length: posted }, (_, i) => far(151 + i)));
  await messageWithText(page, far(last)).waitFor({ state: 'attached' });
  // Still hidden: the list went back under the bound. (Polled: a hidden tab
  // runs no animation frames; the timeout only fails the test.)
  await page.waitForFunction((n) => document.querySelectorAll('#messages > li.msg').length <= n, most, { polling: 50, timeout: 20000 });
  await setTabHidden(page, false);

  const shown = await texts(page);
  assert.ok(shown.length >= kept && shown.length <= most, `${shown.length} messages shown`);
  const gap = page.getByTestId('history-gap');
  assert.equal(await gap.count(), 1, 'one gap between the reader and the newest');
  await gap.getByText('Some messages here were taken off the page to keep it fast.').waitFor();
  assert.equal(await page.getByTestId('load-missed').textContent(), 'Load these messages');
  /** The texts above and below the gap; each side is an unbroken run. */
  const sides = async () => {
    const [above, below] = await gap.evaluate((edge) => [edge.previousElementSibling, edge.nextElementSibling]
      .map((li) => li.querySelector('.msg-text').textContent));
    const all = await texts(page);
    const cut = all.indexOf(above) + 1;
    all.slice(0, cut).forEach((t, i) => assert.equal(t, far(i + 1), 'above the gap: from the first message on'));
    all.slice(cut).forEach((t, i) => assert.equal(t, far(Number(below.slice(4)) + i), 'below the gap: up to the newest'));
    return { above: Number(above.slice(4)), below: Number(below.slice(4)) };
  };
  const { above, below } = await sides();
  assert.ok(above >= 105 + around, `what the reader read on to is kept (up to ${far(above)})`);
  assert.ok(below > above + 1 && shown.at(-1) === far(last), 'the newest are kept');
  // The reader's place and focus did not move.
  const now = await placeOf(page, far(101));
  assert.ok(now.inView && Math.abs(now.top - was.top) < 2, `${far(101)} did not move (${was.top} → ${now.top})`);
  assert.equal(await focused(), far(105));

  // Reading down to the gap brings the messages that follow, above the
  // edge, and the reader's view stays where it is.
  const n = shown.length;
  await page.getByTestId('load-missed').dispatchEvent('click');
  await page.waitForFunction((n) => document.querySelectorAll('#messages > li.msg').length > n, n);
  const filled = await sides();
  assert.deepEqual(filled, { above: above + 100, below });
  assert.match(await page.getByTestId('history-status').textContent(), /^Loaded 100 messages\.$/);
  assert.ok(Math.abs((await placeOf(page, far(101))).top - was.top) < 2, 'the view stayed');
  assert.deepEqual(page.problems, []);
  await seeder.close();
  await page.context().close();
});
