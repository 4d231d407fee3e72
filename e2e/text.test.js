// How message text reads: right-to-left scripts, code, emoji, long
// messages, links inside punctuation, and the edit box, light and dark.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openChat, sendMessage, sendRaw, messageWithText, startSuite, stopSuite } from './helpers.js';

let server;
let browser;
let writer;
let reader;

before(async () => {
  ({ server, browser } = await startSuite());
  writer = await openChat(browser, server.url, { room: 'text', user: 'writer' });
  reader = await openChat(browser, server.url, { room: 'text', user: 'reader' });
});

after(async () => {
  await stopSuite({ server, browser });
  for (const p of [writer, reader]) if (p) assert.deepEqual(p.problems, []);
});

/** The reader's copy of the newest message whose text contains `part`. */
async function received(part) {
  const msg = reader.getByTestId('message')
    .filter({ has: reader.getByTestId('message-text').getByText(part, { exact: false }) }).last();
  await msg.waitFor();
  return msg;
}

const style = (locator, prop) => locator.evaluate((el, p) => getComputedStyle(el)[p], prop);

test('Hebrew and Arabic are laid out right to left, English left to right, the composer follows', async () => {
  for (const text of ['שלום לכולם, מה שלומכם?', 'مرحبا بالجميع، كيف حالكم؟']) {
    await sendMessage(writer, text);
    assert.equal(await style((await received(text)).getByTestId('message-text'), 'direction'), 'rtl', text);
  }
  await sendMessage(writer, 'Hello, left to right');
  assert.equal(await style((await received('Hello, left to right')).getByTestId('message-text'), 'direction'), 'ltr');
  const box = reader.getByTestId('composer-input');
  await box.fill('שלום');
  assert.equal(await style(box, 'direction'), 'rtl', 'the composer follows what is typed');
  await box.fill('');
});

test('inline code and fenced code blocks show in monospace, as text', async () => {
  await sendRaw(writer, 'Run `cargo test` first:\n```rust\nfn main() {\n    println!("<b>hi</b>");\n}\n```\nthen push.');
  const msg = await received('then push.');
  const inline = msg.locator('code.code-inline');
  assert.equal(await inline.textContent(), 'cargo test');
  const block = msg.locator('pre.code-block');
  assert.equal(await block.textContent(), 'fn main() {\n    println!("<b>hi</b>");\n}');
  for (const el of [inline, block]) assert.match(await style(el, 'fontFamily'), /monospace/);
  assert.equal(await msg.locator('b').count(), 0, 'nothing in code became markup');
  assert.equal(await style(block, 'direction'), 'ltr', 'code reads left to right');
  // An unclosed fence is just text.
  await sendRaw(writer, '```\nnot closed');
  assert.equal(await (await received('not closed')).locator('pre').count(), 0);
});

test('emoji-only messages are shown bigger', async () => {
  await sendMessage(writer, '🎉🎉');
  await sendMessage(writer, 'nice one 🎉');
  const big = parseFloat(await style((await received('🎉🎉')).getByTestId('message-text'), 'fontSize'));
  const normal = parseFloat(await style((await received('nice one')).getByTestId('message-text'), 'fontSize'));
  assert.ok(big >= 2 * normal, `${big}px vs ${normal}px`);
});

test('a 4000-character message is folded behind "Show more"', async () => {
  const long = 'All work and no play makes a long message. '.repeat(93).slice(0, 4000);
  await sendMessage(writer, long);
  const msg = await received('All work and no play');
  const text = msg.getByTestId('message-text');
  const folded = await text.evaluate((el) => el.getBoundingClientRect().height);
  assert.ok(folded < 320, `folded to ${folded}px`);
  const more = msg.getByTestId('show-more');
  assert.equal(await more.getAttribute('aria-expanded'), 'false');
  await more.click();
  assert.equal(await more.getAttribute('aria-expanded'), 'true');
  assert.equal(await more.textContent(), 'Show less');
  const open = await text.evaluate((el) => el.getBoundingClientRect().height);
  assert.ok(open > 2 * folded, `unfolded to ${open}px`);
  assert.equal(await (await received('nice one')).getByTestId('show-more').count(), 0, 'short messages are not folded');
});

test('an edit keeps a long message unfolded and its image as it is', async () => {
  const png = await writer.screenshot({ clip: { x: 0, y: 0, width: 32, height: 24 } });
  await writer.getByTestId('attach-input').setInputFiles({ name: 'kept.png', mimeType: 'image/png', buffer: png });
  await writer.getByTestId('upload-box').getByText('ready to send').waitFor();
  const before = 'Long, with a picture. '.repeat(60).trim();
  await sendMessage(writer, before);
  const msg = await received('Long, with a picture.');
  const img = msg.getByTestId('attachment-image');
  await img.waitFor();
  await img.evaluate((el) => { el.dataset.mark = 'the first one'; });
  await msg.getByTestId('show-more').click();
  assert.equal(await msg.getByTestId('show-more').getAttribute('aria-expanded'), 'true');

  const mine = messageWithText(writer, before);
  await mine.hover();
  await mine.getByTestId('edit-message').click();
  const after = 'Long, with a picture, edited. '.repeat(60).trim();
  await writer.getByTestId('edit-input').fill(after);
  await writer.getByTestId('edit-input').press('Enter');

  const edited = await received('Long, with a picture, edited.');
  await edited.getByTestId('message-edited').waitFor();
  const more = edited.getByTestId('show-more');
  assert.equal(await more.getAttribute('aria-expanded'), 'true', 'still unfolded');
  assert.equal(await more.textContent(), 'Show less');
  assert.equal(await edited.getByTestId('message-text').evaluate((el) => el.classList.contains('msg-text--folded')), false);
  assert.equal(await edited.getByTestId('attachment-image').getAttribute('data-mark'), 'the first one', 'the image was not built again');
});

test('links end where the sentence’s punctuation begins', async () => {
  const text = 'See (https://en.wikipedia.org/wiki/Rust_(programming_language)). Also https://example.com/a, '
    + 'and "https://example.com/b"! Or [https://example.com/c].';
  await sendMessage(writer, text);
  const links = (await received('Also https://example.com/a')).getByRole('link');
  const hrefs = await links.evaluateAll((as) => as.map((a) => a.getAttribute('href')));
  assert.deepEqual(hrefs, [
    'https://en.wikipedia.org/wiki/Rust_(programming_language)',
    'https://example.com/a', 'https://example.com/b', 'https://example.com/c',
  ]);
});

test('the edit box is styled and grows with its text, light and dark', async () => {
  await sendMessage(writer, 'edit me');
  // The writer in a second, dark window: the same person (edits are checked against the identity).
  const dark = await openChat(browser, server.url, { room: 'text', colorScheme: 'dark', sameAs: writer });
  const backgrounds = {};
  for (const [scheme, page] of [['light', writer], ['dark', dark]]) {
    const msg = messageWithText(page, 'edit me');
    await msg.and(page.locator('[data-id]:not([data-id=""])')).waitFor();
    await msg.hover();
    await msg.getByTestId('edit-message').click();
    const area = page.getByTestId('edit-input');
    await area.waitFor();
    const box = await area.evaluate((el) => {
      const cs = getComputedStyle(el);
      const main = el.closest('.msg-main').getBoundingClientRect();
      return {
        width: el.getBoundingClientRect().width, main: main.width, height: el.getBoundingClientRect().height,
        fontSize: cs.fontSize, radius: cs.borderTopLeftRadius, background: cs.backgroundColor, color: cs.color,
        page: getComputedStyle(document.body).backgroundColor, text: getComputedStyle(document.body).color,
      };
    });
    assert.ok(box.width >= 0.95 * box.main, `${scheme}: full width (${box.width} of ${box.main})`);
    assert.equal(box.fontSize, '15px', `${scheme}: the message's own font size`);
    assert.equal(box.radius, '10px');
    assert.equal(box.background, box.page, `${scheme}: the page's background, not a grey default`);
    assert.equal(box.color, box.text);
    backgrounds[scheme] = box.background;
    // The hint and the buttons do not touch.
    const hint = await page.locator('.edit-hint').boundingBox();
    const cancel = await page.getByTestId('edit-cancel').boundingBox();
    assert.ok(hint.x + hint.width + 8 <= cancel.x || hint.y + hint.height <= cancel.y, `${scheme}: hint clear of Cancel`);
    // Three more lines: the box grows.
    await area.press('End');
    for (let i = 0; i < 3; i++) { await area.press('Shift+Enter'); await area.type(`line ${i}`); }
    const grown = await area.evaluate((el) => el.getBoundingClientRect().height);
    assert.ok(grown > box.height + 40, `${scheme}: grew from ${box.height} to ${grown}`);
    await area.press('Escape');
    await area.waitFor({ state: 'detached' });
  }
  assert.notEqual(backgrounds.light, backgrounds.dark);
  assert.deepEqual(dark.problems, []);
  await dark.context().close();
});
