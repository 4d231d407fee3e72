// Screenshots of the main views (desktop and phone, light and dark, the
// join form and the phone drawer) for the README, written to
// docs/screenshots/. Each view is also checked: the theme follows the OS
// setting, and nothing overflows sideways on a phone.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import {
  openChat, sendMessage, sendRaw, messageWithText, SCREENSHOT_DIR, startSuite, stopSuite,
} from './helpers.js';

const VIEWS = [
  { name: 'desktop', viewport: { width: 1100, height: 700 } },
  { name: 'phone', viewport: { width: 390, height: 760 }, context: { hasTouch: true, isMobile: true } },
];

let server;
let browser;
// grace's browser storage (her name and claim) once she joined: every later
// window is her again, as the server holds her name for her identity only.
let grace;

before(async () => {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  ({ server, browser } = await startSuite());
  // A short conversation for every view to show.
  const ada = await openChat(browser, server.url, { room: 'design-review', user: 'ada' });
  const lin = await openChat(browser, server.url, { room: 'design-review', user: 'lin' });
  await sendMessage(ada, 'Morning! The new layout is up on staging.');
  await sendMessage(ada, 'Notes are at https://example.com/notes');
  await sendMessage(lin, 'Looks great on my phone too 🎉');
  await sendRaw(ada, '@grace could you check the new flag before we ship?\n```\nroomcast --max-connections 20000\n```');
  await sendMessage(lin, '🚀🚀');
  const msg = messageWithText(ada, 'Looks great on my phone too 🎉');
  await msg.hover();
  await msg.getByTestId('add-reaction').click();
  await ada.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();
  await messageWithText(lin, 'Looks great on my phone too 🎉').getByTestId('reaction').waitFor();
  // lin stays connected so every view shows two people online.
});

after(() => stopSuite({ server, browser }));

/** The page's background colour, as the browser computed it. */
function background(page) {
  return page.evaluate(() => getComputedStyle(document.body).backgroundColor);
}

for (const view of VIEWS) {
  test(`${view.name}: light and dark chat views`, async () => {
    const colours = {};
    for (const colorScheme of ['light', 'dark']) {
      const page = await openChat(browser, server.url, {
        room: 'design-review', user: 'grace', viewport: view.viewport, colorScheme, context: view.context, sameAs: grace,
      });
      grace ??= await page.context().storageState();
      await messageWithText(page, 'Looks great on my phone too 🎉').getByTestId('reaction').waitFor();
      await page.getByTestId('mention').waitFor();
      await page.getByTestId('online-count').getByText('3 online').waitFor();
      colours[colorScheme] = await background(page);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.equal(overflow, 0, `no sideways scrolling at ${view.viewport.width}px`);
      await page.evaluate(() => document.activeElement?.blur()); // no focus ring in the picture
      await page.screenshot({ path: path.join(SCREENSHOT_DIR, `chat-${view.name}-${colorScheme}.png`) });
      if (view.name === 'phone' && colorScheme === 'light') {
        await page.getByTestId('sidebar-toggle').tap();
        await page.getByTestId('active-rooms').getByRole('link').first().waitFor();
        await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'drawer-phone-light.png'), animations: 'disabled' });
      }
      assert.deepEqual(page.problems, []);
      await page.context().close();
    }
    assert.notEqual(colours.light, colours.dark, 'the theme follows the OS colour scheme');
  });
}

for (const [view, colorScheme] of [[VIEWS[0], 'light'], [VIEWS[1], 'dark']]) {
  test(`the join form, ${view.name}, ${colorScheme}`, async () => {
    const page = await openChat(browser, server.url, { viewport: view.viewport, colorScheme, context: view.context });
    await page.getByTestId('join-active-rooms').getByRole('button').first().waitFor();
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, `join-${view.name}-${colorScheme}.png`) });
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });
}
