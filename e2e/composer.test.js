// Around the composer: drafts kept per room, toasts that never cover it,
// the reaction picker on the newest message, a message list that is one
// Tab stop with arrow keys, visible focus on the attach button, and the
// Enter that confirms an input method's text sending nothing.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openChat, sendMessage, messageWithText, waitConnected, startSuite, stopSuite } from './helpers.js';

let server;
let browser;

// --rate 0: one test sends 50 messages as fast as echoes come back; with the
// default 10/s its pass would depend on how slow the machine is.
before(async () => { ({ server, browser } = await startSuite({ extraArgs: ['--rate', '0'] })); });

after(() => stopSuite({ server, browser }));

const overlap = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;

test('a draft stays with its room, across room switches and reloads', async () => {
  const page = await openChat(browser, server.url, { room: 'drafts-a', user: 'drafter' });
  const box = page.getByTestId('composer-input');
  await box.fill('half-written for A');
  await page.getByTestId('room-input').fill('drafts-b');
  await page.getByTestId('room-input').press('Enter');
  await waitConnected(page);
  assert.equal(await box.inputValue(), '', 'the draft did not follow into B');
  await box.fill('for B');
  await page.getByTestId('room-list').getByRole('link', { name: '# drafts-a' }).click();
  await waitConnected(page);
  assert.equal(await box.inputValue(), 'half-written for A');
  await page.reload();
  await waitConnected(page);
  assert.equal(await box.inputValue(), 'half-written for A', 'kept across a reload');
  // Sending clears it for good.
  await box.press('Enter');
  await messageWithText(page, 'half-written for A').and(page.locator(':not(.msg--pending)')).waitFor();
  await page.reload();
  await waitConnected(page);
  assert.equal(await box.inputValue(), '');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('toasts never cover the composer, on a desktop or a phone', async () => {
  for (const viewport of [{ width: 1100, height: 700 }, { width: 390, height: 760 }]) {
    const page = await openChat(browser, server.url, { room: 'toasts', user: `t${viewport.width}`, viewport });
    await page.getByTestId('invite-link').click(); // no clipboard permission: the link is shown in a toast
    const toast = page.getByTestId('toast').first();
    await toast.waitFor();
    const t = await toast.boundingBox();
    for (const id of ['composer', 'send-btn', 'composer-input']) {
      assert.ok(!overlap(t, await page.getByTestId(id).boundingBox()), `${viewport.width}px: toast clear of ${id}`);
    }
    assert.ok(t.x >= 0 && t.x + t.width <= viewport.width, 'on screen');
    assert.deepEqual(page.problems, []);
    await page.context().close();
  }
});

test('the picker on the newest message opens upward, fully visible, and finds emoji by name', async () => {
  const page = await openChat(browser, server.url, { room: 'picker', user: 'picky', viewport: { width: 900, height: 600 } });
  const other = await openChat(browser, server.url, { room: 'picker', user: 'other' });
  for (let i = 1; i <= 8; i++) await sendMessage(other, `message ${i}`);
  const last = messageWithText(page, 'message 8');
  await last.waitFor();
  await last.hover();
  await last.getByTestId('add-reaction').click();
  const picker = page.getByTestId('reaction-picker');
  await picker.waitFor();
  const p = await picker.boundingBox();
  const composer = await page.locator('.composer-wrap').boundingBox();
  const button = await last.getByTestId('add-reaction').boundingBox();
  assert.ok(p.y >= 0 && p.x >= 0 && p.x + p.width <= 900, 'inside the window');
  assert.ok(p.y + p.height <= composer.y, 'above the composer, not under it');
  assert.ok(p.y + p.height <= button.y, 'flipped above its button');
  assert.ok(await picker.getByTestId('picker-emoji').count() > 100, 'a fuller set than eight');
  // Every quick choice is fully in view.
  for (const b of await picker.getByTestId('picker-emoji').all().then((all) => all.slice(0, 8))) {
    const r = await b.boundingBox();
    assert.ok(r.y >= p.y && r.y + r.height <= p.y + p.height);
  }
  await picker.getByTestId('picker-search').fill('rocket');
  const hits = picker.getByTestId('picker-emoji').and(page.locator(':not([hidden])'));
  assert.deepEqual(await hits.allTextContents(), ['🚀']);
  await page.keyboard.press('Enter');
  await messageWithText(other, 'message 8').getByTestId('reaction').filter({ hasText: '🚀' }).waitFor();
  // Nothing matches: said so.
  await last.hover();
  await last.getByTestId('add-reaction').click();
  await picker.getByTestId('picker-search').fill('zzzz');
  await picker.getByText('No emoji match “zzzz”.').waitFor();
  await page.keyboard.press('Escape');
  await picker.waitFor({ state: 'hidden' });
  for (const x of [page, other]) { assert.deepEqual(x.problems, []); await x.context().close(); }
});

test('the message list is one Tab stop: arrows move between messages, typing goes to the composer', async () => {
  const page = await openChat(browser, server.url, { room: 'keys50', user: 'keys' });
  const other = await openChat(browser, server.url, { room: 'keys50', user: 'writer' });
  for (let i = 1; i <= 50; i++) await sendMessage(other, `m${i} https://example.com/${i}`);
  await messageWithText(page, 'm50 https://example.com/50').waitFor();

  // From the first stop of the page (the skip link), Tab until the composer.
  await page.locator('.skip-link').focus();
  const stops = [{ testid: 'skip-link', inList: false }];
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press('Tab');
    const where = await page.evaluate(() => {
      const el = document.activeElement;
      return { testid: el.dataset.testid || el.id || el.tagName, inList: Boolean(el.closest('#messages')) };
    });
    stops.push(where);
    if (where.testid === 'composer-input') break;
  }
  assert.equal(stops.at(-1).testid, 'composer-input', 'Tab reaches the composer');
  if (process.env.SHOW_TAB_STOPS) console.log(JSON.stringify(stops));
  assert.ok(stops.length <= 20, `${stops.length} Tab stops before the composer`);
  assert.ok(stops.filter((s) => s.inList).length <= 4, 'the list is one message and its own controls');

  // Shift+Tab back into the list lands on the newest message; arrows move.
  const focusedText = () => page.evaluate(() => document.activeElement.closest('li')?.querySelector('[data-testid=message-text]')?.textContent);
  await page.getByTestId('messages').locator('li.msg').last().focus();
  assert.equal(await focusedText(), 'm50 https://example.com/50');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('ArrowUp');
  assert.equal(await focusedText(), 'm48 https://example.com/48');
  await page.keyboard.press('Home');
  assert.equal(await focusedText(), 'm1 https://example.com/1');
  await page.keyboard.press('End');
  assert.equal(await focusedText(), 'm50 https://example.com/50');
  // Enter goes into the message's controls, Esc back out.
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.tagName), 'A');
  await page.keyboard.press('Escape');
  assert.equal(await page.evaluate(() => document.activeElement.matches('li.msg')), true);
  // Typing while in the list writes in the composer.
  await page.keyboard.type('hi');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'composer-input');
  assert.equal(await page.getByTestId('composer-input').inputValue(), 'hi');
  for (const x of [page, other]) { assert.deepEqual(x.problems, []); await x.context().close(); }
});

test('the attach button shows keyboard focus', async () => {
  const page = await openChat(browser, server.url, { room: 'attach-focus', user: 'kb' });
  const label = page.locator('.attach-btn');
  assert.equal(await label.evaluate((el) => getComputedStyle(el).outlineStyle), 'none', 'no ring at rest');
  await page.getByTestId('composer-input').focus();
  await page.keyboard.press('Shift+Tab');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'attach-input');
  const ring = await label.evaluate((el) => ({ style: getComputedStyle(el).outlineStyle, width: getComputedStyle(el).outlineWidth }));
  assert.equal(ring.style, 'solid');
  assert.equal(ring.width, '2px');
  await page.context().close();
});

test("the Enter that confirms an input method's text (Safari: keyCode 229) sends nothing, in the composer or an edit", async () => {
  const page = await openChat(browser, server.url, { room: 'ime', user: 'kana' });
  await sendMessage(page, 'original');
  const mine = messageWithText(page, 'original').and(page.locator('[data-id]:not([data-id=""])'));
  await mine.waitFor();
  // Safari's Enter that ends a composition: isComposing false, keyCode 229.
  const imeEnter = (testid) => page.evaluate((testid) => {
    const box = document.querySelector(`[data-testid=${testid}]`);
    const e = new KeyboardEvent('keydown', { key: 'Enter', code: 'Enter', bubbles: true, cancelable: true });
    Object.defineProperty(e, 'keyCode', { value: 229 });
    box.dispatchEvent(e);
    // What the handler did, read before anything else can run.
    return {
      value: box.value,
      messages: document.querySelectorAll('[data-testid=message]').length,
      editing: Boolean(document.querySelector('[data-testid=edit-box]')),
      prevented: e.defaultPrevented,
    };
  }, testid);

  await page.getByTestId('composer-input').fill('かな');
  assert.deepEqual(await imeEnter('composer-input'), { value: 'かな', messages: 1, editing: false, prevented: false });
  // A real Enter still sends it.
  await page.getByTestId('composer-input').press('Enter');
  await messageWithText(page, 'かな').and(page.locator(':not(.msg--pending)')).waitFor();

  await mine.hover();
  await mine.getByTestId('edit-message').click();
  await page.getByTestId('edit-input').fill('編集');
  assert.deepEqual(await imeEnter('edit-input'), { value: '編集', messages: 2, editing: true, prevented: false });
  assert.equal(await mine.getByTestId('message-edited').isVisible(), false, 'no edit was sent');
  // A real Enter saves it.
  await page.getByTestId('edit-input').press('Enter');
  await messageWithText(page, '編集').getByTestId('message-edited').waitFor();
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
