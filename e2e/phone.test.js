// On a phone (390×844, touch): the rooms drawer opens and closes the way
// people expect, message actions come on a tap, with 44 px targets, and
// Enter types a new line (the Send button sends).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openChat, sendMessage, messageWithText, startSuite, stopSuite, waitConnected, unexpectedProblems, goToRoom,
} from './helpers.js';

const PHONE = { viewport: { width: 390, height: 844 }, context: { hasTouch: true, isMobile: true } };
let server;
let browser;

before(async () => { ({ server, browser } = await startSuite()); });

after(() => stopSuite({ server, browser }));

/** Types `text` and taps Send (Enter is a new line on a phone), then waits for the echo. */
async function tapSend(page, text) {
  await page.getByTestId('composer-input').fill(text);
  await page.getByTestId('send-btn').tap();
  await messageWithText(page, text).and(page.locator(':not(.msg--pending)')).waitFor();
}

const focusedTestId = (page) => page.evaluate(() => document.activeElement?.dataset.testid ?? document.activeElement?.id);

test('the drawer: ☰ opens it with focus inside; a tap beside it, ✕ or Esc closes it and focus returns', async () => {
  const page = await openChat(browser, server.url, { room: 'phone', user: 'pat', ...PHONE });
  const toggle = page.getByTestId('sidebar-toggle');
  const sidebar = page.locator('#sidebar');
  const backdrop = page.getByTestId('drawer-backdrop');

  await toggle.tap();
  await sidebar.and(page.locator(':not([hidden])')).waitFor();
  await backdrop.waitFor();
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
  assert.equal(await focusedTestId(page), 'drawer-close', 'focus moves into the drawer');
  assert.equal(await page.locator('#chat').evaluate((el) => el.inert), true, 'the page behind is inert');
  // It slides in (a 0.2 s transition): measure where it ends up, not on the way.
  await sidebar.evaluate((el) => Promise.all(el.getAnimations().map((a) => a.finished)));
  const drawerBox = await sidebar.boundingBox();
  assert.ok(drawerBox.x >= -1 && drawerBox.x + drawerBox.width <= 391, 'the drawer is on screen');

  // A tap on the dimmed page beside the drawer closes it.
  await page.touchscreen.tap(drawerBox.x + drawerBox.width + 30, 400);
  await backdrop.waitFor({ state: 'hidden' });
  assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
  assert.equal(await focusedTestId(page), 'sidebar-toggle', 'focus goes back to ☰');
  assert.equal(await page.locator('#chat').evaluate((el) => el.inert), false);

  // ✕ closes it.
  await toggle.tap();
  await backdrop.waitFor();
  const close = page.getByTestId('drawer-close');
  const closeBox = await close.boundingBox();
  assert.ok(closeBox.width >= 44 && closeBox.height >= 44, '✕ is a 44 px target');
  await close.tap();
  await backdrop.waitFor({ state: 'hidden' });
  assert.equal(await focusedTestId(page), 'sidebar-toggle');

  // Esc closes it.
  await toggle.tap();
  await backdrop.waitFor();
  await page.keyboard.press('Escape');
  await backdrop.waitFor({ state: 'hidden' });
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('message actions come on a tap, with 44 px targets; messages carry no permanent action row', async () => {
  const pat = await openChat(browser, server.url, { room: 'phone-actions', user: 'pat', ...PHONE });
  const sam = await openChat(browser, server.url, { room: 'phone-actions', user: 'sam' });
  await tapSend(pat, 'tap me');
  await sendMessage(sam, 'and me');
  const mine = messageWithText(pat, 'tap me');
  const theirs = messageWithText(pat, 'and me');
  await theirs.waitFor();
  await mine.and(pat.locator('[data-id]:not([data-id=""])')).waitFor();

  // At rest: no action row takes space.
  assert.equal(await mine.getByTestId('edit-message').isVisible(), false);
  assert.equal(await theirs.getByTestId('add-reaction').isVisible(), false);

  await mine.getByTestId('message-text').tap();
  for (const id of ['add-reaction', 'edit-message', 'delete-message']) {
    const b = mine.getByTestId(id);
    await b.waitFor();
    const box = await b.boundingBox();
    assert.ok(box.width >= 44 && box.height >= 44, `${id} is ${box.width}×${box.height}`);
  }
  // Another message's tap moves the bar there.
  await theirs.getByTestId('message-text').tap();
  await theirs.getByTestId('add-reaction').waitFor();
  assert.equal(await mine.getByTestId('edit-message').isVisible(), false);
  // A long press opens it too, and letting go keeps it open.
  await pat.keyboard.press('Escape');
  await theirs.getByTestId('add-reaction').waitFor({ state: 'hidden' });
  const cdp = await pat.context().newCDPSession(pat);
  const at = await theirs.getByTestId('message-text').boundingBox();
  const point = { x: at.x + 10, y: at.y + at.height / 2 };
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: [point] });
  await theirs.getByTestId('add-reaction').waitFor(); // opened while the finger is still down
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
  await sendMessage(sam, 'a later message'); // a round trip, so any click from letting go has landed
  await messageWithText(pat, 'a later message').waitFor();
  assert.equal(await theirs.getByTestId('add-reaction').isVisible(), true, 'still open after letting go');
  // And it works: react from the bar.
  await theirs.getByTestId('add-reaction').tap();
  await pat.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).tap();
  await messageWithText(sam, 'and me').getByTestId('reaction').waitFor();
  for (const p of [pat, sam]) { assert.deepEqual(p.problems, []); await p.context().close(); }
});

test('Enter types a new line on a phone; the Send button sends, line break and all', async () => {
  const pat = await openChat(browser, server.url, { room: 'phone-newline', user: 'pat', ...PHONE });
  const sam = await openChat(browser, server.url, { room: 'phone-newline', user: 'sam' });
  const box = pat.getByTestId('composer-input');
  await box.tap();
  await pat.keyboard.type('first line');
  await pat.keyboard.press('Enter');
  await pat.keyboard.type('second line');
  assert.equal(await box.inputValue(), 'first line\nsecond line', 'Enter put a line break in the box');
  assert.equal(await pat.getByTestId('message').count(), 0, 'Enter sent nothing');
  assert.doesNotMatch(await pat.locator('#composer-hint').textContent(), /Enter to send/);

  await pat.getByTestId('send-btn').tap();
  for (const p of [pat, sam]) {
    const text = p.getByTestId('message').and(p.locator(':not(.msg--pending)')).getByTestId('message-text');
    await text.waitFor();
    assert.equal(await text.evaluate((el) => el.innerText), 'first line\nsecond line', 'the line break was kept');
  }
  assert.equal(await box.inputValue(), '');
  for (const p of [pat, sam]) { assert.deepEqual(p.problems, []); await p.context().close(); }
});

test('on a phone every small control is a 44 px target, the pill stays above a tall composer, and taps do not open the keyboard', async () => {
  const pat = await openChat(browser, server.url, { room: 'phone-targets', user: 'pat', ...PHONE });
  const sam = await openChat(browser, server.url, { room: 'phone-targets', user: 'sam' });
  const big = async (locator, what) => {
    const box = await locator.boundingBox();
    assert.ok(box && box.width >= 44 && box.height >= 44, `${what} is ${box?.width}×${box?.height}`);
  };
  const typing = () => pat.evaluate(() => document.activeElement?.dataset.testid === 'composer-input');

  // Enough to scroll; a reaction chip, and "Show more" on a long message.
  for (let i = 1; i <= 15; i++) await sendMessage(sam, `filler ${i}`);
  await sendMessage(sam, 'x'.repeat(800));
  await sendMessage(sam, 'react here');
  const target = messageWithText(pat, 'react here');
  await target.getByTestId('message-text').tap();
  await target.getByTestId('add-reaction').tap();
  const picker = pat.getByTestId('reaction-picker');
  await picker.waitFor();
  for (const emoji of await picker.getByTestId('picker-emoji').all()) await big(emoji, 'an emoji in the picker');
  await picker.getByRole('button', { name: 'React with 👍' }).tap();
  await big(target.getByTestId('reaction'), 'a reaction chip');
  await big(pat.getByTestId('show-more'), '"Show more"');

  // The composer's buttons, the header's "N online", the drawer's "change".
  await big(pat.locator('label.attach-btn'), 'the attach button');
  await big(pat.getByTestId('send-btn'), 'Send');
  await big(pat.getByTestId('online-count'), '"N online"');
  await pat.getByTestId('sidebar-toggle').tap();
  await pat.getByTestId('drawer-backdrop').waitFor();
  await pat.locator('#sidebar').evaluate((el) => Promise.all(el.getAnimations().map((a) => a.finished)));
  await big(pat.locator('#change-name'), '"change" (the name)');
  await pat.getByTestId('drawer-close').tap();
  await pat.getByTestId('drawer-backdrop').waitFor({ state: 'hidden' });
  // The join form's active rooms (this room has people in it).
  const newcomer = await openChat(browser, server.url, PHONE);
  const chip = newcomer.getByTestId('join-active-rooms').getByRole('button').first();
  await chip.waitFor();
  await big(chip, 'a room chip on the join form');
  await newcomer.context().close();
  // Message actions are 44 px for any coarse pointer, not only without
  // hover (a touch laptop): no browser here emulates one alone, so the
  // stylesheet is read.
  const actsInTouchBlock = await pat.evaluate(() => [...document.styleSheets].flatMap((sheet) => [...sheet.cssRules])
    .filter((r) => r instanceof CSSMediaRule && /\(pointer: coarse\)/.test(r.conditionText) && /\(hover: none\)/.test(r.conditionText))
    .some((r) => [...r.cssRules].some((x) => x.selectorText === '.msg-actions .act' && x.style.minHeight === '44px' && x.style.minWidth === '44px')));
  assert.equal(actsInTouchBlock, true, 'message actions are 44 px under (hover: none), (pointer: coarse)');

  // A file's ✕: removing it does not put the focus in the message box.
  await pat.getByTestId('attach-input').setInputFiles({ name: 'note.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') });
  await pat.getByTestId('upload-box').getByText('ready to send').waitFor();
  await pat.getByTestId('upload-cancel').evaluate((b) => b.blur());
  await big(pat.getByTestId('upload-cancel'), 'a file\'s ✕');
  await pat.getByTestId('upload-cancel').tap();
  await pat.getByTestId('upload-box').waitFor({ state: 'hidden' });
  assert.equal(await typing(), false, 'removing a file does not open the keyboard');

  // Offline: "Retry now", and a toast's ✕.
  await pat.context().setOffline(true);
  await pat.getByTestId('retry-now').waitFor();
  await big(pat.getByTestId('retry-now'), '"Retry now"');
  await target.getByTestId('reaction').tap();
  await big(pat.getByTestId('toast').locator('.toast-close'), 'a toast\'s ✕');
  await pat.context().setOffline(false);
  await waitConnected(pat);

  // The pill stands above the composer, however tall it grew, and a tap on
  // it shows the newest without opening the keyboard.
  await pat.getByTestId('composer-input').fill(Array.from({ length: 12 }, (_, i) => `line ${i + 1}`).join('\n'));
  await pat.getByTestId('composer-input').evaluate((el) => el.blur());
  await pat.getByTestId('messages').evaluate((l) => { l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); });
  await sendMessage(sam, 'while pat reads back');
  const pill = pat.getByTestId('new-pill');
  await pill.waitFor();
  await big(pill, 'the new-messages pill');
  const [pillBox, composerBox] = [await pill.boundingBox(), await pat.getByTestId('composer').boundingBox()];
  const wrapTop = await pat.locator('.composer-wrap').evaluate((el) => el.getBoundingClientRect().top);
  assert.ok(pillBox.y + pillBox.height <= wrapTop, `the pill (${pillBox.y}+${pillBox.height}) is above the composer (${wrapTop}, box at ${composerBox.y})`);
  await pill.tap();
  await pill.waitFor({ state: 'hidden' });
  assert.equal(await typing(), false, 'the pill does not open the keyboard');
  assert.equal(await pat.evaluate(() => document.activeElement?.querySelector('.msg-text')?.textContent), 'while pat reads back');
  assert.deepEqual(pat.problems.filter((m) => !/WebSocket connection to .* failed/.test(m)), []);
  for (const p of [pat, sam]) await p.context().close();
});

test('a long room name without a break wraps on a phone instead of pushing the page sideways', async () => {
  const room = `no-breaks-${'x'.repeat(54)}`; // 64 characters, the longest a room name may be
  const pat = await openChat(browser, server.url, { room, user: 'pat', ...PHONE });
  const list = pat.getByTestId('messages');
  await list.getByText(`This is the start of #${room}`, { exact: false }).waitFor();
  const fits = (locator) => locator.evaluate((el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
  const shown = await fits(list);
  assert.ok(shown.scroll <= shown.client, `the list is ${shown.scroll} px wide in ${shown.client}`);
  await pat.context().close();

  // The join form's sentences too: a refusal naming such a room.
  const ivy = await openChat(browser, server.url, { room: `private-${'y'.repeat(56)}`, ...PHONE });
  await ivy.getByTestId('join-name').fill('ivy');
  await ivy.getByTestId('join-submit').tap();
  const error = ivy.getByTestId('join-error');
  await error.getByText('is a private room', { exact: false }).waitFor();
  const said = await fits(error);
  assert.ok(said.scroll <= said.client, `the error is ${said.scroll} px wide in ${said.client}`);
  const page = await ivy.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  assert.ok(page.scroll <= page.client, `the page is ${page.scroll} px wide in ${page.client}`);
  assert.deepEqual(unexpectedProblems(ivy, [/WebSocket connection to .* failed/, /status of 403/]), []);
  await ivy.context().close();
});

test('entering or switching rooms on a phone does not open the keyboard', async () => {
  const pat = await openChat(browser, server.url, { room: 'phone-enter', user: 'pat', ...PHONE });
  const typing = () => pat.evaluate(() => document.activeElement?.dataset.testid === 'composer-input');
  assert.equal(await typing(), false, 'joined: the message box is not focused');
  await pat.getByTestId('sidebar-toggle').tap();
  await goToRoom(pat, 'phone-enter-2');
  assert.equal(await typing(), false, 'switched: the message box is not focused');
  // The recent rooms list, tapped.
  await pat.getByTestId('sidebar-toggle').tap();
  await pat.getByTestId('room-list').getByRole('link', { name: '# phone-enter', exact: true }).tap();
  await pat.getByTestId('room-title').getByText('phone-enter', { exact: true }).waitFor();
  await waitConnected(pat);
  assert.equal(await typing(), false, 'switched back: the message box is not focused');
  assert.deepEqual(pat.problems, []);
  await pat.context().close();
});
