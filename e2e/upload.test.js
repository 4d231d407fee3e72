// Attachments: upload by button and by drag-and-drop, previews in the other
// window, clear errors for refused files, an upload finishing while the
// person does something else leaves their focus alone, and files waiting to
// be sent stay with their room (bounded) across room switches.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openChat, messageWithText, sendMessage, startSuite, stopSuite, waitConnected,
} from './helpers.js';

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

/** Goes to `room` with the "go to room" field and waits until connected. */
async function goTo(page, room) {
  await page.getByTestId('room-input').fill(room);
  await page.getByTestId('room-input').press('Enter');
  await waitConnected(page);
  await page.getByTestId('room-title').getByText(room, { exact: true }).waitFor();
}

/** Holds the page's next POST /upload until `release()`; `reached` resolves once it is sent. */
async function holdUpload(page) {
  let reached;
  let release;
  const sent = new Promise((resolve) => { reached = resolve; });
  const held = new Promise((resolve) => { release = resolve; });
  await page.route('**/upload', async (route) => {
    reached();
    await held;
    await route.continue();
    await page.unroute('**/upload');
  });
  return { reached: sent, release };
}

test('an upload that stalls is cut off, holds up nothing, and its Retry sends it', async () => {
  // The stall bound is the page's own (config), shortened: the upload below never gets an answer.
  const cam = await openChat(browser, server.url, { room: 'photos', user: 'cam', clientConfig: { upload_stall_ms: 400 } });
  let asked = 0;
  await cam.route('**/upload', () => { asked += 1; });
  await cam.getByTestId('attach-input').setInputFiles({ name: 'stuck.png', mimeType: 'image/png', buffer: png });
  const item = cam.getByTestId('upload-item');
  await item.getByText('stuck.png: the upload stalled', { exact: false }).waitFor();
  assert.equal(await item.getByTestId('upload-progress').isVisible(), false);
  assert.equal(asked, 1);

  // Text goes meanwhile; the stalled file stays for its retry.
  await sendMessage(cam, 'while the file is stuck');
  await messageWithText(bob, 'while the file is stuck').waitFor();
  assert.equal(await item.count(), 1);

  await cam.unroute('**/upload');
  await item.getByTestId('upload-retry').click();
  await cam.getByTestId('upload-box').getByText('ready to send').waitFor();
  await cam.getByTestId('composer-input').fill('unstuck');
  await cam.getByTestId('composer-input').press('Enter');
  await messageWithText(bob, 'unstuck').getByTestId('attachment-image').waitFor();
  await cam.getByTestId('upload-box').waitFor({ state: 'hidden' });
  assert.deepEqual(cam.problems, []);
  await cam.context().close();
});

test('an upload the server could not take now (503, or no answer) stays with its Retry; a refusal does not', async () => {
  const cam = await openChat(browser, server.url, { room: 'photos-retry', user: 'cam' });
  const item = cam.getByTestId('upload-item');
  const unavailable = (route) => route.fulfill({
    status: 503, contentType: 'application/json', body: JSON.stringify({ error: 'unavailable' }),
  });
  await cam.route('**/upload', unavailable);
  await cam.getByTestId('attach-input').setInputFiles({ name: 'busy.png', mimeType: 'image/png', buffer: png });
  await item.getByText('“busy.png” was not uploaded: the file storage is unavailable right now; try again in a minute.').waitFor();
  assert.equal(await item.getByTestId('upload-retry').isVisible(), true);
  assert.equal(await item.getByTestId('upload-progress').isVisible(), false);
  assert.deepEqual(await errorLines(cam), [], 'said on the file, not under the composer');
  // It holds up nothing meanwhile.
  await sendMessage(cam, 'text goes while the file waits');
  assert.equal(await item.count(), 1);

  // No answer at all: still worth trying again.
  await cam.unroute('**/upload', unavailable);
  const cut = (route) => route.abort('connectionreset');
  await cam.route('**/upload', cut);
  await item.getByTestId('upload-retry').click();
  await item.getByText('“busy.png” was not uploaded: the server could not be reached.').waitFor();
  assert.equal(await item.getByTestId('upload-retry').isVisible(), true);

  // Back: Retry sends it.
  await cam.unroute('**/upload', cut);
  await item.getByTestId('upload-retry').click();
  await cam.getByTestId('upload-box').getByText('ready to send').waitFor();
  await cam.getByTestId('send-btn').click();
  await cam.getByTestId('message').filter({ has: cam.locator('img[alt="busy.png"]') }).and(cam.locator(':not(.msg--pending)')).waitFor();
  await cam.getByTestId('upload-box').waitFor({ state: 'hidden' });

  // A refusal that would only come again takes the file out, said under the composer.
  const tooLarge = (route) => route.fulfill({ status: 413, contentType: 'application/json', body: '{"error":"too_large"}' });
  await cam.route('**/upload', tooLarge);
  await cam.getByTestId('attach-input').setInputFiles({ name: 'big.png', mimeType: 'image/png', buffer: png });
  await cam.getByTestId('composer-error').getByText('“big.png” is too large', { exact: false }).waitFor();
  await cam.getByTestId('upload-box').waitFor({ state: 'hidden' });
  await cam.unroute('**/upload', tooLarge);
  cam.problems = cam.problems.filter((m) => !/status of (503|413)|ERR_CONNECTION_RESET/.test(m));
  assert.deepEqual(cam.problems, []);
  await cam.context().close();
});

test('files waiting to be sent stay with their room, and one still uploading finishes there', async () => {
  const page = await openChat(browser, server.url, { room: 'files-a', user: 'dora' });
  const box = page.getByTestId('upload-box');
  const input = page.getByTestId('composer-input');
  await page.getByTestId('attach-input').setInputFiles({ name: 'ready.png', mimeType: 'image/png', buffer: png });
  await box.getByText('ready to send').waitFor();
  const slow = await holdUpload(page);
  await page.getByTestId('attach-input').setInputFiles({ name: 'slow.png', mimeType: 'image/png', buffer: png });
  await slow.reached;
  await input.fill('both files');

  // Another room: its box is empty, and nothing there waits for an upload.
  await goTo(page, 'files-b');
  await box.waitFor({ state: 'hidden' });
  assert.equal(await page.getByTestId('upload-item').count(), 0);
  assert.equal(await page.getByTestId('send-btn').getAttribute('aria-disabled'), 'false');
  // The upload goes on meanwhile, and lands in its own room.
  const finished = page.waitForEvent('requestfinished', (r) => new URL(r.url()).pathname === '/upload');
  slow.release();
  await finished;
  assert.equal(await page.getByTestId('upload-item').count(), 0, 'not in this room');

  await goTo(page, 'files-a');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=upload-item].done').length === 2);
  assert.deepEqual(await box.locator('.upload-name').allTextContents(),
    [`ready.png (${png.length} B) ready to send`, `slow.png (${png.length} B) ready to send`]);
  assert.equal(await input.inputValue(), 'both files', 'the draft came back too');
  await input.press('Enter');
  const sent = messageWithText(page, 'both files').and(page.locator(':not(.msg--pending)'));
  await sent.locator('img[alt="ready.png"]').waitFor();
  await page.getByTestId('message').and(page.locator(':not(.msg--pending)')).filter({ has: page.locator('img[alt="slow.png"]') }).waitFor();
  await box.waitFor({ state: 'hidden' });
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('files are kept for five rooms left, the oldest dropped with a toast; a file refused while away is told', async () => {
  const page = await openChat(browser, server.url, { room: 'keep-0', user: 'erin' });
  const box = page.getByTestId('upload-box');
  const names = () => box.locator('.upload-name').allTextContents();
  for (let i = 0; i <= 5; i += 1) {
    if (i) await goTo(page, `keep-${i}`);
    await page.getByTestId('attach-input').setInputFiles({ name: `k${i}.png`, mimeType: 'image/png', buffer: png });
    await box.getByText('ready to send').waitFor();
  }
  // A sixth room left with a file in it: the first one's goes.
  await page.getByTestId('room-input').fill('keep-6');
  await page.getByTestId('room-input').press('Enter');
  await page.getByTestId('toast')
    .getByText('1 file waiting to be sent in #keep-0 was dropped: files are kept for at most 5 rooms left.').waitFor();
  await waitConnected(page);
  await goTo(page, 'keep-0');
  assert.equal(await page.getByTestId('upload-item').count(), 0);
  await goTo(page, 'keep-1');
  assert.deepEqual(await names(), [`k1.png (${png.length} B) ready to send`]);

  // Refused after the room was left: said in a toast naming the room.
  const bad = await holdUpload(page);
  await page.getByTestId('attach-input').setInputFiles({ name: 'tool.png', mimeType: 'image/png', buffer: elf });
  await bad.reached;
  await goTo(page, 'keep-2');
  bad.release();
  await page.getByTestId('toast')
    .getByText('In #keep-1: “tool.png” can’t be shared here: only images, video, audio, PDF and plain text files are allowed.').waitFor();
  assert.deepEqual(await names(), [`k2.png (${png.length} B) ready to send`]);
  assert.deepEqual(await page.getByTestId('composer-error').locator('.error-line').allTextContents(), []);
  await goTo(page, 'keep-1');
  assert.deepEqual(await names(), [`k1.png (${png.length} B) ready to send`]);
  assert.deepEqual(page.problems.filter((p) => !/status of 415/.test(p)), []);
  await page.context().close();
});

test('"Change name" puts the files aside for the name that added them', async () => {
  const page = await openChat(browser, server.url, { room: 'files-name', user: 'fred' });
  const box = page.getByTestId('upload-box');
  const names = () => box.locator('.upload-name').allTextContents();
  const rename = async (name) => {
    await page.locator('#change-name').click();
    await page.getByTestId('join-name').fill(name);
    await page.getByTestId('join-submit').click();
    await waitConnected(page);
    await page.getByTestId('me-name').getByText(name, { exact: true }).waitFor();
  };
  await page.getByTestId('attach-input').setInputFiles({ name: 'fred.png', mimeType: 'image/png', buffer: png });
  await box.getByText('ready to send').waitFor();

  // As another name: an empty box, and only the files added as that name.
  await rename('gwen');
  await box.waitFor({ state: 'hidden' });
  await page.getByTestId('attach-input').setInputFiles({ name: 'gwen.png', mimeType: 'image/png', buffer: png });
  await box.getByText('ready to send').waitFor();
  assert.deepEqual(await names(), [`gwen.png (${png.length} B) ready to send`]);

  // Back as the first name: its file is there again, and goes with the message.
  await rename('fred');
  assert.deepEqual(await names(), [`fred.png (${png.length} B) ready to send`]);
  await page.getByTestId('composer-input').fill('as fred');
  await page.getByTestId('composer-input').press('Enter');
  const sent = messageWithText(page, 'as fred').and(page.locator(':not(.msg--pending)'));
  await sent.locator('img[alt="fred.png"]').waitFor();
  await box.waitFor({ state: 'hidden' });
  assert.equal(await page.locator('img[alt="gwen.png"]').count(), 0);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
