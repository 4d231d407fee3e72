// Shared helpers for the browser suite: start a real roomcast, drive Chromium.
//
// Every wait here is on a condition; timeouts are only failure bounds.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.ROOMCAST_BIN
  ? path.resolve(process.env.ROOMCAST_BIN)
  : path.resolve(here, '../target/debug/roomcast');
export const SCREENSHOT_DIR = path.resolve(here, '../docs/screenshots');

/**
 * Starts roomcast and resolves once it printed `listening on http://HOST:PORT`.
 * The suite serves the UI embedded in the binary (what users get); set
 * ROOMCAST_UI_DIR=.. while iterating on the UI to serve static/ and
 * templates/ from disk instead of rebuilding.
 */
export async function startServer({ port = 0, uploadsDir, extraArgs = [] } = {}) {
  const ownsUploads = !uploadsDir;
  uploadsDir ??= mkdtempSync(path.join(tmpdir(), 'roomcast-e2e-'));
  const args = ['--host', '127.0.0.1', '--port', String(port), '--uploads-dir', uploadsDir, ...extraArgs];
  if (process.env.ROOMCAST_UI_DIR) {
    const ui = path.resolve(process.env.ROOMCAST_UI_DIR);
    args.push('--static-dir', path.join(ui, 'static'), '--templates-dir', path.join(ui, 'templates'));
  }
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });

  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('roomcast did not report "listening on" within 20 s')), 20000);
    const lines = createInterface({ input: proc.stdout });
    function fail(err) {
      clearTimeout(timer);
      proc.kill('SIGKILL');
      reject(new Error(`${err.message}\n--- roomcast stderr ---\n${stderr}`));
    }
    lines.on('line', (line) => {
      const m = /^listening on (http:\/\/\S+)$/.exec(line.trim());
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.once('error', (e) => fail(new Error(`could not start ${BIN}: ${e.message} (build it with cargo build, or set ROOMCAST_BIN)`)));
    proc.once('exit', (code) => fail(new Error(`roomcast exited early with ${code}`)));
  });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));

  return {
    url,
    port: Number(new URL(url).port),
    uploadsDir,
    proc,
    get stderr() { return stderr; },
    /** SIGTERM (graceful: sockets close with 1001) and wait for the exit. */
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
    async cleanup() {
      await this.stop();
      if (ownsUploads) rmSync(uploadsDir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * Opens the chat as `user` in `room` in a fresh browser context and waits
 * until it is connected. Page errors and console errors (CSP violations show
 * up there) are collected in `page.problems` for the test to assert on.
 */
export async function openChat(browser, baseUrl, { room, user, viewport, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport: viewport ?? { width: 1100, height: 760 }, colorScheme, locale: 'en-US' });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push(`console: ${m.text()}`); });
  const q = new URLSearchParams();
  if (room) q.set('room', room);
  if (user) q.set('user', user);
  await page.goto(`${baseUrl}/?${q}`);
  if (room && user) await waitConnected(page);
  return page;
}

export async function waitConnected(page, timeout = 15000) {
  await page.getByTestId('conn-status').and(page.locator('[data-state="connected"]')).waitFor({ timeout });
}

/** The message list items whose text is exactly `text`. */
export function messageWithText(page, text) {
  return page.getByTestId('message').filter({ has: page.getByTestId('message-text').getByText(text, { exact: true }) });
}

/** Types and sends a message through the composer, then waits for the echo. */
export async function sendMessage(page, text) {
  const box = page.getByTestId('composer-input');
  await box.fill(text);
  await box.press('Enter');
  // Settled means confirmed by the echo or refused; a refusal fails here with
  // its reason instead of waiting out the timeout.
  const settled = messageWithText(page, text).and(page.locator(':not(.msg--pending), .msg--failed')).last();
  await settled.waitFor();
  if (await settled.evaluate((el) => el.classList.contains('msg--failed'))) {
    const why = await settled.locator('.msg-status').textContent();
    throw new Error(`message ${JSON.stringify(text)} was refused: ${why}`);
  }
}

/** Problems that are expected noise, e.g. a failed WebSocket while the server restarts. */
export function unexpectedProblems(page, allow = []) {
  return page.problems.filter((p) => !allow.some((re) => re.test(p)));
}
