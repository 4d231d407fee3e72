// Scrollback: older messages load a page at a time when the reader goes up
// (scrolling, Home, or the "Load older messages" button), without moving
// what the reader looks at, render like live ones, and stop at the start;
// a long-lived tab, hidden or not, keeps a bounded list.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openChat, openSeeder, messageWithText, watchProblems, joinAs, waitConnected, axeViolations, startSuite, stopSuite,
  setTabHidden, goToRoom, loseEcho, gatedSocket,
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

test('a load that never gets an answer is given up at its deadline and offered again', async () => {
  // The deadline is the page's own (config), shortened: the request below never answers.
  const page = await openChat(browser, server.url, { room: 'long', user: 'stalled', clientConfig: { history_deadline_ms: 300 } });
  await messageWithText(page, label(SEEDED)).waitFor();
  let asked = 0;
  await page.route(/\/api\/rooms\/[^/]+\/messages/, () => { asked += 1; });
  await page.getByTestId('load-older').dispatchEvent('click');
  const top = page.getByTestId('history-top');
  await top.and(page.locator('[data-state="failed"]')).waitFor();
  await top.getByText('Could not load older messages.').waitFor();
  assert.equal(asked, 1);

  // Nothing is held: the retry asks again, and this time the server answers.
  await page.unroute(/\/api\/rooms\/[^/]+\/messages/);
  await page.getByTestId('load-older').getByText('Try again').dispatchEvent('click');
  await loadedPast(page, 50);
  assert.equal((await texts(page))[0], label(SEEDED - 149));
  assert.equal(await top.getAttribute('data-state'), 'more');
  assert.deepEqual(page.problems, []);
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

test('a deleted message right under the top edge does not stop scrollback', async () => {
  // 60 messages of one author: the welcome brings the newest 50, and the
  // oldest of those is deleted, its tombstone right under the edge; the
  // older page ends with the same author's message above it.
  const seeder = await openSeeder(browser, server.url, 'tomb', 'ann');
  const all = Array.from({ length: 60 }, (_, i) => `t ${String(i + 1).padStart(2, '0')}`);
  await seeder.post(all);
  const page = await openChat(browser, server.url, { room: 'tomb', user: 'bob' });
  await messageWithText(page, 't 60').waitFor();
  await seeder.about('t 11', { type: 'delete' });
  const tombstone = page.getByTestId('message-deleted');
  await tombstone.waitFor();
  assert.equal(await page.getByTestId('history-top').evaluate((edge) => edge.nextElementSibling.classList.contains('msg--deleted')), true);

  await page.getByTestId('load-older').dispatchEvent('click');
  await page.getByTestId('history-note').getByText('Beginning of the conversation', { exact: true }).waitFor();
  assert.deepEqual(await texts(page), all.filter((t) => t !== 't 11'));
  // The message under the tombstone starts a group of its own; the one above it ends one.
  assert.equal(await messageWithText(page, 't 12').evaluate((li) => li.classList.contains('msg--cont')), false);
  assert.equal(await messageWithText(page, 't 10').evaluate((li) => li.classList.contains('msg--cont')), true);
  assert.deepEqual(page.problems, []);
  await seeder.close();
  await page.context().close();
});

test('a gap left by a reconnect is filled by scrollback', async () => {
  // The server's own pages fill the gap; the socket is played by the test so
  // that the resume's `gap` happens on cue: the first welcome brings seqs
  // 1-50 (the room as it was then: its last_seq 50), the resume after 50
  // brings the newest 50 and says `gap`.
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
      history: resume ? newest : oldest, gap: resume, last_seq: resume ? SEEDED : 50,
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

// The tests below play the socket and the store themselves (routeWebSocket,
// route): the seqs a store no longer has, and a server's new life, on cue.

/** A message of a server's life `life` ('a', then 'b' after a restart). */
const T0 = Date.UTC(2026, 0, 1);
const fake = (life, seq, user = 'ann') => ({
  message_id: `${life}-${seq}`, seq, user, content: `${life} ${seq}`, timestamp: new Date(T0 + seq * 1000).toISOString(), reactions: {},
});
const range = (life, from, to, user) => Array.from({ length: to - from + 1 }, (_, i) => fake(life, from + i, user));
/** Two animation frames: whatever a mutation or a load queued has run. */
const frames = (page) => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

/**
 * A tab in `room` as `user` whose socket the test plays: the n-th
 * connection is welcomed with `welcomes[n]` (fields over a default welcome).
 * `hidden`: the tab starts in the background (setTabHidden shows it), where
 * a welcome of thousands of messages lays nothing out for each.
 */
async function scripted(room, user, welcomes, { hidden = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  if (hidden) {
    await context.addInitScript(() => {
      Object.defineProperty(document, 'hidden', { value: true, configurable: true });
      Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
    });
  }
  const tab = watchProblems(await context.newPage());
  const s = { tab, context, socket: null, urls: [] };
  await tab.routeWebSocket(/\/ws\//, (ws) => {
    s.urls.push(ws.url());
    s.socket = ws;
    ws.onMessage((raw) => {
      if (JSON.parse(raw).type === 'ping') ws.send(JSON.stringify({ type: 'pong' }));
    });
    ws.send(JSON.stringify({ type: 'welcome', room, user, online: [user], online_count: 1, ...welcomes[s.urls.length - 1] }));
  });
  // As joinAs, with time for a welcome of thousands of messages on a busy machine.
  await tab.goto(`${server.url}/?${new URLSearchParams({ room })}`);
  await tab.getByTestId('join-name').fill(user);
  await tab.getByTestId('join-submit').click();
  await waitConnected(tab, 60000);
  return s;
}

/** Drops the played socket; resolves once the next connection is welcomed. */
async function reconnect(s) {
  await s.socket.close({ code: 1013, reason: 'test' });
  await s.tab.getByTestId('conn-status').and(s.tab.locator('[data-state="reconnecting"]')).waitFor();
  await waitConnected(s.tab);
}

/** Answers the tab's history requests from `stored` (sorted by seq); returns the `before` of each. */
async function serveStore(tab, room, stored) {
  const asked = [];
  await tab.route(/\/api\/rooms\/[^/]+\/messages/, (route) => {
    const q = new URL(route.request().url()).searchParams;
    const before = Number(q.get('before') ?? Infinity);
    asked.push(before);
    const below = stored.filter((m) => m.seq < before);
    const messages = below.slice(-Number(q.get('limit') ?? 50));
    return route.fulfill({
      status: 200, contentType: 'application/json', body: JSON.stringify({ room, messages, has_more: below.length > messages.length }),
    });
  });
  return asked;
}

test('reading down into a gap the store mostly dropped costs two requests, not a request per empty page', async () => {
  // Seqs 1-50 were read before the link dropped; of those after, the store
  // kept only 20 000-20 099 and 30 001-30 050 (retention, deletes). The
  // reader's own messages: the resume is not news and leaves them at the bottom.
  const stored = [...range('a', 1, 50), ...range('a', 20000, 20099), ...range('a', 30001, 30050)];
  const s = await scripted('sparse', 'ann', [
    { history: range('a', 1, 50), last_seq: 50 },
    { history: range('a', 30001, 30050), last_seq: 30050, gap: true },
  ]);
  const { tab } = s;
  const asked = await serveStore(tab, 'sparse', stored);
  await messageWithText(tab, 'a 50').waitFor();
  await reconnect(s);
  assert.match(s.urls.at(-1), /\?after=50$/);
  await messageWithText(tab, 'a 30050').waitFor();
  const gap = tab.getByTestId('history-gap');
  await gap.getByText('Some messages were missed while you were disconnected.').waitFor();
  // The resume re-reads what the page showed (edits, deletes, reactions
  // made meanwhile): one page, below the seq it resumed after.
  while (!asked.length) await frames(tab);
  assert.deepEqual(asked.splice(0), [51]);

  // The reader reads down towards the gap: its edge just under the view.
  const below = await gap.evaluate((edge) => {
    const l = edge.parentElement;
    l.scrollTop += edge.getBoundingClientRect().top - l.getBoundingClientRect().bottom - 10;
    return edge.getBoundingClientRect().top >= l.getBoundingClientRect().bottom;
  });
  assert.ok(below, 'the edge is under the view (nothing loads by itself)');
  await frames(tab);
  assert.deepEqual(asked, []);

  // The page after 50 is empty: one page from the gap's upper end follows,
  // which shows where messages are again; then nothing more by itself.
  await tab.getByTestId('load-missed').dispatchEvent('click');
  await gap.and(tab.locator('[data-state="more"]')).waitFor();
  await frames(tab);
  assert.deepEqual(asked, [151, 30001]);
  const order = [...range('a', 1, 50), ...range('a', 20000, 20099), ...range('a', 30001, 30050)].map((m) => m.content);
  assert.deepEqual(await texts(tab), order);
  assert.deepEqual(await gap.evaluate((edge) => [edge.previousElementSibling, edge.nextElementSibling]
    .map((li) => li.querySelector('.msg-text').textContent)), ['a 50', 'a 20000']);

  // The next look: again one empty page going down, one from the upper
  // end, which finds nothing in the gap: it closes.
  await tab.getByTestId('load-missed').dispatchEvent('click');
  await gap.waitFor({ state: 'detached' });
  await frames(tab);
  assert.deepEqual(asked, [151, 30001, 251, 20000]);
  assert.deepEqual(await texts(tab), order);
  assert.deepEqual(tab.problems, []);
  await s.context.close();
});

test('after a server restart, gaps of the old numbering become notes with nothing to load', async () => {
  const s = await scripted('reborn', 'ann', [
    { history: range('a', 1, 50), last_seq: 50 },
    { history: range('a', 201, 250), last_seq: 250, gap: true },
    // The server's new life: its numbering starts again.
    { history: range('b', 1, 5, 'bob'), last_seq: 5 },
  ]);
  const { tab } = s;
  const asked = await serveStore(tab, 'reborn', []);
  await messageWithText(tab, 'a 50').waitFor();
  await reconnect(s);
  await messageWithText(tab, 'a 250').waitFor();
  const gap = tab.getByTestId('history-gap');
  await gap.getByText('Some messages were missed while you were disconnected.').waitFor();

  await reconnect(s);
  assert.match(s.urls.at(-1), /\?after=250$/);
  await tab.getByText('The server was restarted', { exact: false }).waitFor();
  await messageWithText(tab, 'b 5').waitFor();
  // Seqs 51-200 of the old numbering are nowhere now: a note, no button.
  assert.equal(await gap.count(), 1);
  assert.equal(await gap.getAttribute('data-state'), 'gone');
  await gap.getByText('Some messages here are no longer stored on the server.').waitFor();
  assert.equal(await tab.getByTestId('load-missed').isVisible(), false);
  const n = asked.length;
  await tab.getByTestId('load-missed').dispatchEvent('click');
  await frames(tab);
  assert.equal(asked.length, n, 'nothing is asked for');
  assert.deepEqual(await texts(tab), [...range('a', 1, 50), ...range('a', 201, 250), ...range('b', 1, 5)].map((m) => m.content));
  assert.equal(await tab.locator('#messages > li.msg--archived').count(), 100);
  assert.deepEqual(tab.problems, []);
  await s.context.close();
});

test('messages from before a server restart are bounded apart, and new ones arrive without a walk of the list', async () => {
  // history.js: at most MAX_SHOWN (3 000) archived messages; the oldest
  // beyond leave with no hole (nothing could load them again). Before the
  // restart the page holds 3 100, the most a reader following the newest keeps.
  const kept = 3000;
  const s = await scripted('twice', 'ann', [
    { history: range('a', 1, 3100), last_seq: 3100 },
    { history: range('b', 1, 3, 'bob'), last_seq: 3 },
  ], { hidden: true });
  const { tab } = s;
  await messageWithText(tab, 'a 3100').waitFor({ state: 'attached' });
  await setTabHidden(tab, false);
  // A tombstone keeps its seq: of the old numbering too after the restart.
  s.socket.send(JSON.stringify({ type: 'message_deleted', message_id: 'a-2' }));
  await tab.getByTestId('message-deleted').waitFor();

  await reconnect(s);
  await tab.getByText('The server was restarted', { exact: false }).waitFor();
  await messageWithText(tab, 'b 3').waitFor();
  const archived = tab.locator('#messages > li.msg--archived');
  await tab.waitForFunction((n) => document.querySelectorAll('#messages > li.msg--archived').length <= n, kept, { timeout: 15000 });
  assert.equal(await archived.count(), kept);
  const shown = await texts(tab);
  assert.deepEqual(shown.slice(0, 2), ['a 101', 'a 102'], 'the oldest left');
  assert.deepEqual(shown.slice(-4), ['a 3100', 'b 1', 'b 2', 'b 3']);
  assert.equal(await tab.getByTestId('message-deleted').count(), 0, 'the tombstone was among the oldest');
  assert.equal(await tab.getByTestId('history-gap').count(), 0, 'no hole stands for what nothing can load');
  assert.equal(await tab.getByTestId('history-top').count(), 0);

  // Under its bound, a message arriving is no reason to look at every
  // message on the page (counted: walks of the list's messages).
  await tab.evaluate(() => {
    const list = document.getElementById('messages');
    window.walks = 0;
    list.querySelectorAll = function walk(selector) {
      if (/li\.msg/.test(selector)) window.walks += 1;
      return Element.prototype.querySelectorAll.call(this, selector);
    };
  });
  for (let seq = 4; seq <= 13; seq += 1) {
    s.socket.send(JSON.stringify({ type: 'message', ...fake('b', seq, 'bob') }));
    await tab.waitForFunction((text) => document.getElementById('messages').lastElementChild
      ?.querySelector('.msg-text')?.textContent === text, `b ${seq}`);
    await frames(tab);
  }
  assert.equal(await tab.evaluate(() => window.walks), 0);
  assert.equal(await archived.count(), kept);
  assert.deepEqual(tab.problems, []);
  await s.context.close();
});

test('a change heard while a page is on its way is not undone by that page', async () => {
  const s = await scripted('in-flight', 'ann', [{ history: range('a', 101, 150), last_seq: 150 }]);
  const { tab } = s;
  // The store's answer is held until the changes below were heard; it was
  // read before them, so it brings the messages as they were.
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let asked;
  const out = new Promise((resolve) => { asked = resolve; });
  await tab.route(/\/api\/rooms\/[^/]+\/messages/, async (route) => {
    asked();
    await held;
    const messages = range('a', 1, 100);
    return route.fulfill({
      status: 200, contentType: 'application/json', body: JSON.stringify({ room: 'in-flight', messages, has_more: false }),
    });
  });
  await messageWithText(tab, 'a 150').waitFor();
  await tab.getByTestId('load-older').click();
  await out;

  const send = (ev) => s.socket.send(JSON.stringify(ev));
  send({ type: 'message_updated', ...fake('a', 100), content: 'a 100, edited', edited_at: new Date(T0 + 200000).toISOString() });
  send({ type: 'message_deleted', message_id: 'a-99', seq: 99 });
  send({ type: 'reaction_update', message_id: 'a-98', emoji: '👍', user: 'bob', action: 'add', count: 1, users: ['bob'], reactions: { '👍': ['bob'] } });
  // Then something that shows: the page has read them.
  send({ type: 'message', ...fake('a', 151) });
  await messageWithText(tab, 'a 151').waitFor();
  release();

  await messageWithText(tab, 'a 97').waitFor();
  assert.equal(await messageWithText(tab, 'a 100, edited').count(), 1, 'the edit stands');
  assert.equal(await messageWithText(tab, 'a 100').count(), 0);
  assert.equal(await messageWithText(tab, 'a 99').count(), 0, 'the deleted message is not back');
  assert.equal(await tab.getByTestId('message-deleted').count(), 1);
  const thumb = messageWithText(tab, 'a 98').getByTestId('reaction');
  assert.equal(await thumb.getAttribute('data-users'), 'bob');
  assert.deepEqual(tab.problems, []);
  await s.context.close();
});

/**
 * Alice posts `text` in `room` and its echo is lost; she goes to another
 * room before she could learn of the post, `between()` runs, 60 more
 * messages are posted, and she comes back: too many for her welcome to
 * tell, so the message is offered as failed. Returns her page, the failed
 * copy, and the room's first message (hers) as the server has it now.
 */
async function lostThenOffered(room, text, between = async () => {}) {
  const alice = await openChat(browser, server.url, { user: undefined });
  const proxy = await loseEcho(alice, new RegExp(`/ws/${room}/`), text);
  await joinAs(alice, server.url, room, 'alice');
  await alice.getByTestId('composer-input').fill(text);
  await alice.getByTestId('composer-input').press('Enter');
  await proxy.lost;
  await goToRoom(alice, `${room}-elsewhere`);
  await between(alice);
  const seeder = await openSeeder(browser, server.url, room, 'bob');
  await seeder.post(Array.from({ length: 60 }, (_, i) => `${room} ${i + 1}`));
  await seeder.close();
  proxy.open();
  await goToRoom(alice, room);
  await messageWithText(alice, `${room} 60`).waitFor();
  const failed = messageWithText(alice, text).and(alice.locator('.msg--failed'));
  await failed.waitFor();
  return { alice, failed };
}

test('a message whose echo was lost is confirmed by the scrollback page that brings it, shown once', async () => {
  const text = 'posted, echo lost';
  const { alice } = await lostThenOffered('lost-echo', text);
  // Going up brings the post itself: it is the failed one, now confirmed.
  // (A click without scrolling: scrolling the button into view starts the
  // same load by itself, and the button goes while the click waits on it.)
  await alice.getByTestId('load-older').dispatchEvent('click');
  await alice.getByTestId('history-top').and(alice.locator('[data-state="done"]')).waitFor();
  assert.equal(await messageWithText(alice, text).count(), 1, 'shown once');
  const shown = messageWithText(alice, text);
  assert.equal(await shown.evaluate((li) => li.matches('.msg--pending, .msg--failed')), false, 'confirmed');
  assert.equal(await alice.getByTestId('retry-message').count(), 0, 'nothing offered to send again');
  assert.equal((await texts(alice))[0], text, 'in its place, first in the room');
  assert.equal(await alice.locator('#messages > li.msg--pending').count(), 0);
  assert.deepEqual(alice.problems, []);
  await alice.context().close();
});

test('"Send again" of a message already shown (edited meanwhile) confirms it instead of leaving it sending', async () => {
  const text = 'posted, echo lost, then edited';
  const edited = 'edited in another tab';
  const { alice, failed } = await lostThenOffered('lost-edited', text, async (alice) => {
    // Another tab of hers edits the post meanwhile: no longer the same
    // words, so only its client_id can tell it is the one waiting.
    const other = await openChat(browser, server.url, { room: 'lost-edited', sameAs: alice });
    const li = messageWithText(other, text);
    await li.hover();
    await li.getByTestId('edit-message').click();
    await other.getByTestId('edit-input').fill(edited);
    await other.getByTestId('edit-input').press('Enter');
    await messageWithText(other, edited).getByTestId('message-edited').waitFor();
    await other.context().close();
  });
  await alice.getByTestId('load-older').dispatchEvent('click');
  await alice.getByTestId('history-top').and(alice.locator('[data-state="done"]')).waitFor();
  await messageWithText(alice, edited).waitFor();

  // The server answers the retry (same client_id) with the post it has.
  await failed.getByTestId('retry-message').click();
  await alice.waitForFunction(() => !document.querySelector('#messages > li.msg--pending'));
  assert.equal(await messageWithText(alice, text).count(), 0, 'the waiting copy went');
  assert.equal(await messageWithText(alice, edited).count(), 1, 'the post is shown once');
  assert.equal((await texts(alice))[0], edited);
  assert.deepEqual(alice.problems, []);
  await alice.context().close();
});

test('a reconnect after joining an empty room brings everything posted meanwhile, not the last 50', async () => {
  const alice = await openChat(browser, server.url, { user: undefined });
  const link = await gatedSocket(alice);
  await joinAs(alice, server.url, 'was-empty', 'alice');
  await alice.getByText('This is the start of #was-empty', { exact: false }).waitFor();

  await link.drop();
  await alice.getByTestId('conn-status').and(alice.locator('[data-state="reconnecting"]')).waitFor();
  const seeder = await openSeeder(browser, server.url, 'was-empty', 'bob');
  const all = Array.from({ length: 60 }, (_, i) => `was-empty ${i + 1}`);
  await seeder.post(all);
  await seeder.close();
  link.open();
  await link.reconnected();
  await messageWithText(alice, 'was-empty 60').waitFor();
  assert.deepEqual(await texts(alice), all, 'the first ten too, in order');
  assert.match(link.urls.at(-1), /[?&]after=0(&|$)/, 'resumed from nothing seen');
  assert.equal(await alice.getByTestId('history-gap').count(), 0);
  assert.deepEqual(alice.problems.filter((p) => !/WebSocket/.test(p)), []);
  await alice.context().close();
});

test('a reconnect after joining a room that shows nothing resumes from the room\'s last seq', async () => {
  // Three posts, all deleted: the room shows nothing but is numbered to 3.
  // The welcome's last_seq is where the page has seen the room to, so a
  // resume asks for what follows it (from 0 it could be told of a gap that
  // is not one: a room numbered on after it left the server's memory).
  const seeder = await openSeeder(browser, server.url, 'all-gone', 'bob');
  const posts = ['gone 1', 'gone 2', 'gone 3'];
  await seeder.post(posts);
  const deleted = seeder.page.evaluate(() => new Promise((resolve) => {
    let n = 0;
    const w = (ev) => {
      if (ev.type === 'message_deleted' && ++n === 3) { window.seed.waiters.delete(w); resolve(); }
    };
    window.seed.waiters.add(w);
  }));
  for (const text of posts) await seeder.about(text, { type: 'delete' });
  await deleted;
  await seeder.close();

  const alice = await openChat(browser, server.url, { user: undefined });
  const link = await gatedSocket(alice);
  await joinAs(alice, server.url, 'all-gone', 'alice');
  await alice.getByText('This is the start of #all-gone', { exact: false }).waitFor();
  await link.drop({ hold: false });
  await link.reconnected();
  assert.match(link.urls.at(-1), /[?&]after=3(&|$)/, 'resumed from the room\'s last seq');
  assert.deepEqual(await texts(alice), []);
  assert.deepEqual(alice.problems.filter((p) => !/WebSocket/.test(p)), []);
  await alice.context().close();
});
