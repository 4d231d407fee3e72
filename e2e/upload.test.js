// Attachments: upload by button and by drag-and-drop, previews in the other
// window, clear errors for refused files, and an upload finishing while the
// person does something else leaves their focus alone.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openChat, messageWithText, sendMessage, startSuite, stopSuite } from './helpers.js';

const LIMIT = 200_000;
let server;
let browser;
let alice;
let bob;
let png;

before(async () => {
  ({ server, browser } = await startSuite({ extraArgs: ['--max-upload-bytes', String(LIMIT)] }));
  alice = await openChat(browser, server.url, { room: 'photos', user: 'alice' });
  bob = await openChat(browser, server.url, { room: 'photos', user: 'bob' });
  // A real PNG, made by the browser itself.
  png = await alice.screenshot({ clip: { x: 0, y: 0, width: 64, height: 48 } });
});

after(async () => {
  await stopSuite({ server, browser });
  for (const p of [alice, bob]) if (p) assert.deepEqual(p.problems.filter((m) => !/status of 41[35]/.test(m)), []);
});

/** Waits until the image in `message` has actually loaded from the server. */
async function imageLoaded(page, message) {
  const img = message.getByTestId('attachment-image');
  await img.waitFor();
  await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle());
}

test('an image uploaded with the button is previewed, then shows inline in the other window', async () => {
  await alice.getByTestId('attach-input').setInputFiles({ name: 'sunset.png', mimeType: 'image/png', buffer: png });
  // A preview before sending, from the file itself.
  const preview = alice.getByTestId('upload-preview');
  await preview.waitFor();
  assert.match(await preview.getAttribute('src'), /^blob:/);
  await alice.waitForFunction((el) => el.complete && el.naturalWidth === 64, await preview.elementHandle());
  await alice.getByTestId('upload-box').getByText('ready to send').waitFor();
  await alice.getByTestId('composer-input').fill('look at this');
  await alice.getByTestId('composer-input').press('Enter');

  const msg = messageWithText(bob, 'look at this');
  await msg.waitFor();
  await imageLoaded(bob, msg);
  const src = await msg.getByTestId('attachment-image').getAttribute('src');
  assert.match(new URL(src).pathname, /^\/uploads\/[0-9a-f]+\.png$/);
  assert.equal(await msg.getByTestId('attachment-image').getAttribute('alt'), 'sunset.png');
  await alice.getByTestId('upload-box').waitFor({ state: 'hidden' });
});

test('a file dropped on the chat is uploaded and sent', async () => {
  await alice.evaluate((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], 'dropped.png', { type: 'image/png' }));
    const target = document.querySelector('[data-testid=messages]');
    target.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, [...png]);
  await alice.getByTestId('upload-box').getByText('ready to send').waitFor();
  await alice.getByTestId('send-btn').click(); // an attachment alone is a message

  const withImage = bob.getByTestId('message').filter({ has: bob.locator('img[alt="dropped.png"]') });
  await withImage.waitFor();
  await imageLoaded(bob, withImage);
});

const elf = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(200)]);

/** The sentences under the composer, one per line. */
const errorLines = (page) => page.getByTestId('composer-error').locator('.error-line').allTextContents();

test('a file type the server refuses gets one clear sentence naming it (415)', async () => {
  await alice.getByTestId('attach-input').setInputFiles({ name: 'tool.png', mimeType: 'image/png', buffer: elf });
  await alice.getByTestId('composer-error').getByText('can’t be shared here', { exact: false }).waitFor();
  assert.deepEqual(await errorLines(alice),
    ['“tool.png” can’t be shared here: only images, video, audio, PDF and plain text files are allowed.']);
  await alice.getByTestId('upload-box').waitFor({ state: 'hidden' });
});

test('a file over the limit is refused before uploading, with the limit in words', async () => {
  await alice.getByTestId('attach-input').setInputFiles({ name: 'huge.png', mimeType: 'image/png', buffer: Buffer.alloc(LIMIT + 1) });
  await alice.getByTestId('composer-error').getByText('just over the limit', { exact: false }).waitFor();
  assert.deepEqual(await errorLines(alice), ['“huge.png” is 200,001 bytes, just over the limit of 200,000 bytes.']);
  await alice.getByTestId('attach-input').setInputFiles({ name: 'huger.png', mimeType: 'image/png', buffer: Buffer.alloc(3 * LIMIT) });
  await alice.getByTestId('composer-error').getByText('“huger.png” is 586 KB; the limit is 195 KB.').waitFor();
});

test('three files dropped at once: each is sent or explained', async () => {
  await alice.evaluate(({ image, bad }) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(image)], 'first.png', { type: 'image/png' }));
    dt.items.add(new File([new Uint8Array(bad)], 'program.bin', { type: 'application/octet-stream' }));
    dt.items.add(new File([new Uint8Array(image)], 'third.png', { type: 'image/png' }));
    const target = document.querySelector('[data-testid=messages]');
    target.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, { image: [...png], bad: [...elf] });
  const ready = alice.getByTestId('upload-item').locator('.upload-name');
  await alice.waitForFunction(() => document.querySelectorAll('[data-testid=upload-item].done').length === 2
    && document.querySelectorAll('[data-testid=upload-item]').length === 2);
  assert.deepEqual(await ready.allTextContents(), [`first.png (${png.length} B) ready to send`, `third.png (${png.length} B) ready to send`]);
  assert.deepEqual(await errorLines(alice),
    ['“program.bin” can’t be shared here: only images, video, audio, PDF and plain text files are allowed.']);

  await alice.getByTestId('composer-input').fill('two of three');
  await alice.getByTestId('composer-input').press('Enter');
  const first = bob.getByTestId('message').filter({ has: bob.locator('img[alt="first.png"]') });
  const third = bob.getByTestId('message').filter({ has: bob.locator('img[alt="third.png"]') });
  await first.waitFor();
  await third.waitFor();
  assert.equal(await first.getByTestId('message-text').textContent(), 'two of three', 'the text goes with the first');
  assert.equal(await third.getByTestId('message-text').isVisible(), false);
  await alice.getByTestId('upload-box').waitFor({ state: 'hidden' });
});

test('an image takes its space before it loads, so nothing below it moves', async () => {
  // Hold bob's image downloads until the test lets them through.
  const held = [];
  let arrived;
  const first = new Promise((resolve) => { arrived = resolve; });
  await bob.route('**/uploads/**', (route) => { held.push(route); arrived(); });
  await alice.getByTestId('attach-input').setInputFiles({ name: 'slow.png', mimeType: 'image/png', buffer: png });
  await alice.getByTestId('upload-box').getByText('ready to send').waitFor();
  await alice.getByTestId('composer-input').fill('slow image');
  await alice.getByTestId('composer-input').press('Enter');
  const msg = messageWithText(bob, 'slow image');
  await msg.waitFor();
  await first; // the browser asked for the image and is waiting
  const img = msg.getByTestId('attachment-image');
  assert.equal(await img.evaluate((el) => el.complete && el.naturalWidth > 0), false, 'not loaded yet');
  const before = await msg.boundingBox();
  assert.ok((await img.boundingBox()).height > 150, 'the frame is there already');
  for (const r of held) await r.continue();
  await bob.unroute('**/uploads/**');
  await imageLoaded(bob, msg);
  const afterLoad = await msg.boundingBox();
  assert.equal(afterLoad.height, before.height, 'the message kept its height');
});

test('an upload that finishes while a message is being edited leaves the focus in the edit box', async () => {
  const page = await openChat(browser, server.url, { room: 'edit-while-uploading', user: 'carol' });
  await sendMessage(page, 'to be edited');
  // The upload waits until the test lets it through.
  let reached;
  const arrived = new Promise((resolve) => { reached = resolve; });
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  await page.route('**/upload', async (route) => { reached(); await held; await route.continue(); });
  await page.getByTestId('attach-input').setInputFiles({ name: 'meanwhile.png', mimeType: 'image/png', buffer: png });
  await arrived;

  // ↑ in the empty message box edits the last message of ours.
  await page.getByTestId('composer-input').press('ArrowUp');
  const edit = page.getByTestId('edit-input');
  await edit.waitFor();
  await page.keyboard.type(', halfway');
  // Still uploading, and the person is in the edit box.
  assert.equal(await page.getByTestId('upload-progress').count(), 1);
  assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'edit-input');
  release();
  await page.getByTestId('upload-box').getByText('ready to send').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'edit-input');
  await page.keyboard.type(' and on');
  assert.equal(await edit.inputValue(), 'to be edited, halfway and on');
  assert.equal(await page.getByTestId('composer-input').inputValue(), '');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
