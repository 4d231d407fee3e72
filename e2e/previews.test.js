// Image previews: a large image is shown as the server's small preview
// (sized before it loads), and the frame opens the original. Needs a build
// with the `previews` feature (`cargo build --all-features`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openChat, messageWithText, startSuite, stopSuite } from './helpers.js';

let server;
let browser;
let alice;
let bob;

before(async () => {
  ({ server, browser } = await startSuite());
  alice = await openChat(browser, server.url, { room: 'photos', user: 'alice' });
  bob = await openChat(browser, server.url, { room: 'photos', user: 'bob' });
});

after(async () => {
  await stopSuite({ server, browser });
  for (const p of [alice, bob]) if (p) assert.deepEqual(p.problems, []);
});

/** A 1600 × 1200 PNG drawn by the browser itself. */
async function bigPng(page) {
  const bytes = await page.evaluate(async () => {
    const canvas = document.createElement('canvas');
    canvas.width = 1600;
    canvas.height = 1200;
    const g = canvas.getContext('2d');
    const grad = g.createLinearGradient(0, 0, 1600, 1200);
    grad.addColorStop(0, '#f80');
    grad.addColorStop(1, '#08f');
    g.fillStyle = grad;
    g.fillRect(0, 0, 1600, 1200);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
    return [...new Uint8Array(await blob.arrayBuffer())];
  });
  return Buffer.from(bytes);
}

test('a large image shows as a preview of at most 320 px, and a click opens the original', async () => {
  const png = await bigPng(alice);
  await alice.getByTestId('attach-input').setInputFiles({ name: 'poster.png', mimeType: 'image/png', buffer: png });
  await alice.getByTestId('upload-box').getByText('ready to send').waitFor();
  await alice.getByTestId('composer-input').fill('big picture');
  await alice.getByTestId('composer-input').press('Enter');

  const msg = messageWithText(bob, 'big picture');
  await msg.waitFor();
  // In the message at once, or by the update that follows once it is made
  // (which renders the attachment anew).
  const img = msg.locator('[data-testid=attachment-image][src$=".png.preview.jpg"]');
  await img.waitFor({ timeout: 30000 });
  await bob.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle());
  const shown = await img.evaluate((el) => ({
    natural: [el.naturalWidth, el.naturalHeight],
    attrs: [el.getAttribute('width'), el.getAttribute('height')],
  }));
  assert.deepEqual(shown.natural, [320, 240]);
  assert.deepEqual(shown.attrs, ['320', '240'], 'sized before it loads');

  const original = new URL(await img.getAttribute('src')).pathname.replace(/\.preview\.jpg$/, '');
  const [tab] = await Promise.all([bob.context().waitForEvent('page'), img.click()]);
  await tab.waitForLoadState();
  assert.equal(new URL(tab.url()).pathname, original);
  const size = await tab.evaluate(() => {
    const el = document.querySelector('img');
    return el && [el.naturalWidth, el.naturalHeight];
  });
  assert.deepEqual(size, [1600, 1200], 'the original, full size');
  await tab.close();
});
