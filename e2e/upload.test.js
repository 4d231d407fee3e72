// Attachments: upload by button and by drag-and-drop, previews in the other
// window, and clear errors for refused files.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openChat, messageWithText } from './helpers.js';

const LIMIT = 200_000;
let server;
let browser;
let alice;
let bob;
let png;

before(async () => {
  server = await startServer({ extraArgs: ['--max-upload-bytes', String(LIMIT)] });
  browser = await launchBrowser();
  alice = await openChat(browser, server.url, { room: 'photos', user: 'alice' });
  bob = await openChat(browser, server.url, { room: 'photos', user: 'bob' });
  // A real PNG, made by the browser itself.
  png = await alice.screenshot({ clip: { x: 0, y: 0, width: 64, height: 48 } });
});

after(async () => {
  for (const p of [alice, bob]) if (p) assert.deepEqual(p.problems.filter((m) => !/status of 41[35]/.test(m)), []);
  await browser?.close();
  await server?.cleanup();
});

/** Waits until the image in `message` has actually loaded from the server. */
async function imageLoaded(page, message) {
  const img = message.getByTestId('attachment-image');
  await img.waitFor();
  await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle());
}

test('an image uploaded with the button shows inline in the other window', async () => {
  await alice.getByTestId('attach-input').setInputFiles({ name: 'sunset.png', mimeType: 'image/png', buffer: png });
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

test('a file type the server refuses gets a clear error (415)', async () => {
  const elf = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(200)]);
  await alice.getByTestId('attach-input').setInputFiles({ name: 'tool.png', mimeType: 'image/png', buffer: elf });
  await alice.getByTestId('composer-error').getByText('can’t be shared here', { exact: false }).waitFor();
  await alice.getByTestId('upload-box').waitFor({ state: 'hidden' });
});

test('a file over the limit is refused before uploading, with the limit in words', async () => {
  await alice.getByTestId('attach-input').setInputFiles({ name: 'huge.png', mimeType: 'image/png', buffer: Buffer.alloc(LIMIT + 1) });
  await alice.getByTestId('composer-error').getByText('the limit is 195 KB', { exact: false }).waitFor();
});
