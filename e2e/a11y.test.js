// axe-core (WCAG 2.0–2.2, levels A and AA) on the join form and the chat
// view, light and dark, desktop and phone, with the states people use:
// a conversation with reactions, mentions, code and a "New" line, the
// phone drawer open, the reaction picker open. Zero violations allowed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  openChat, sendMessage, sendRaw, messageWithText, axeViolations, startSuite, stopSuite,
} from './helpers.js';

const VIEWS = [
  { name: 'desktop', viewport: { width: 1100, height: 760 } },
  { name: 'phone', viewport: { width: 390, height: 844 }, context: { hasTouch: true, isMobile: true } },
];
const SCHEMES = ['light', 'dark'];
// Each chat-view test reads as a person of its own: a fresh browser context
// is a new identity, and the server holds a name for its last identity for
// a grace period after it leaves, so one name cannot be reused across them.
const reader = (view, colorScheme) => `grace-${view.name}-${colorScheme}`;
const READERS = VIEWS.flatMap((v) => SCHEMES.map((s) => reader(v, s)));
let server;
let browser;
let ada;

before(async () => {
  ({ server, browser } = await startSuite());
  ada = await openChat(browser, server.url, { room: 'a11y', user: 'ada' });
  const lin = await openChat(browser, server.url, { room: 'a11y', user: 'lin' });
  await sendMessage(ada, 'Morning! Notes are at https://example.com/notes');
  await sendRaw(ada, 'Run `cargo test` first:\n```\ncargo test --all-features\n```');
  await sendMessage(lin, `${READERS.map((r) => `@${r}`).join(' ')} can you review? 🎉`);
  await sendMessage(lin, 'שלום');
  const msg = messageWithText(ada, 'שלום');
  await msg.hover();
  await msg.getByTestId('add-reaction').click();
  await ada.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();
  await messageWithText(lin, 'שלום').getByTestId('reaction').waitFor();
  await lin.context().close(); // a "lin left" line for the log
});

after(() => stopSuite({ server, browser }));

function report(violations) {
  return violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.join('\n    ')}`).join('\n');
}

for (const view of VIEWS) {
  for (const colorScheme of SCHEMES) {
    test(`axe: join form, ${view.name}, ${colorScheme}`, async () => {
      const page = await openChat(browser, server.url, { viewport: view.viewport, colorScheme, context: view.context });
      await page.getByTestId('join-form').waitFor();
      await page.getByTestId('join-active-rooms').getByRole('button').first().waitFor(); // the listed rooms too
      let violations = await axeViolations(page);
      assert.deepEqual(violations, [], report(violations));
      // With an error and a note showing.
      await page.goto(`${server.url}/?room=a11y&user=${'x'.repeat(33)}`);
      await page.getByTestId('join-error').getByText('at most 32', { exact: false }).waitFor();
      violations = await axeViolations(page);
      assert.deepEqual(violations, [], report(violations));
      assert.deepEqual(page.problems, []);
      await page.context().close();
    });

    test(`axe: chat view, ${view.name}, ${colorScheme}`, async () => {
      const page = await openChat(browser, server.url, {
        room: 'a11y', user: reader(view, colorScheme), viewport: view.viewport, colorScheme, context: view.context,
      });
      await messageWithText(page, 'שלום').getByTestId('reaction').waitFor();
      await page.getByTestId('mention').waitFor();
      let violations = await axeViolations(page);
      assert.deepEqual(violations, [], report(violations));

      if (view.name === 'phone') {
        await page.getByTestId('sidebar-toggle').tap();
        await page.getByTestId('drawer-backdrop').waitFor();
        violations = await axeViolations(page);
        assert.deepEqual(violations, [], `drawer open:\n${report(violations)}`);
        await page.getByTestId('drawer-close').tap();
        // The message action bar, opened by a tap.
        await messageWithText(page, 'שלום').getByTestId('message-text').tap();
        await messageWithText(page, 'שלום').getByTestId('add-reaction').waitFor();
      } else {
        const msg = messageWithText(page, 'שלום');
        await msg.hover();
        await msg.getByTestId('add-reaction').click();
        await page.getByTestId('reaction-picker').waitFor();
      }
      violations = await axeViolations(page);
      assert.deepEqual(violations, [], `actions open:\n${report(violations)}`);
      assert.deepEqual(page.problems, []);
      await page.context().close();
    });
  }
}
