// Shared helpers for the browser suite: start a real roomcast, drive Chromium.
//
// Every wait here is on a condition; timeouts are only failure bounds.

import assert from 'node:assert/strict';
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
export async function startServer({ port = 0, uploadsDir, dataDir, extraArgs = [] } = {}) {
  const ownsUploads = !uploadsDir;
  uploadsDir ??= mkdtempSync(path.join(tmpdir(), 'roomcast-e2e-'));
  // Each server keeps its history in a directory of its own (the default,
  // data/ under the working directory, would be shared by every test).
  const ownsData = !dataDir;
  dataDir ??= mkdtempSync(path.join(tmpdir(), 'roomcast-e2e-data-'));
  // A file's tests share one server and all join from 127.0.0.1: the
  // per-address join rate (60/min) would be the whole suite's. The
  // per-address connection caps stay: a browser test opens few.
  const args = ['--host', '127.0.0.1', '--port', String(port), '--uploads-dir', uploadsDir, '--data-dir', dataDir,
    '--joins-per-minute', '0', ...extraArgs];
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
    dataDir,
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
      if (ownsData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * What most test files share: a server started with `options` (see
 * startServer) and one browser. Assign it in `before`:
 * `({ server, browser } = await startSuite())`.
 */
export async function startSuite(options) {
  const server = await startServer(options);
  try {
    return { server, browser: await launchBrowser() };
  } catch (e) {
    // Nobody else holds the server yet: stop it, or it keeps the test
    // process alive after the failure.
    await server.cleanup();
    throw e;
  }
}

/**
 * Closes the browser, then stops the server and removes what it wrote. Call
 * it first in `after`: an assertion failing before it would leave both
 * running and the test process would never exit.
 */
export async function stopSuite({ server, browser }) {
  await browser?.close();
  await server?.cleanup();
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
 * until it is connected. A fresh browser has no name yet, so it joins the
 * way a person does: the room's link, then the name in the join form.
 * Without `room` and `user` it stops at the join form. Page errors and
 * console errors (CSP violations show up there) are collected in
 * `page.problems` for the test to assert on.
 *
 * `sameAs: page` (or a storage state saved from one) opens another window
 * of the person in `page` instead: a context with that browser's storage
 * (its name and its claim, so the server knows it is the same identity),
 * which goes straight into `room`.
 * A fresh context is someone else, and cannot use a name another identity
 * held moments ago.
 *
 * `clientConfig`: settings merged into the page's config (see
 * withClientConfig), e.g. `{ upload_stall_ms: 500 }`.
 */
export async function openChat(browser, baseUrl, {
  room, user, viewport, colorScheme = 'light', context: extra = {}, sameAs, clientConfig,
} = {}) {
  const storageState = typeof sameAs?.context === 'function' ? await sameAs.context().storageState() : sameAs;
  const context = await browser.newContext({
    viewport: viewport ?? { width: 1100, height: 760 }, colorScheme, locale: 'en-US', ...(storageState ? { storageState } : {}), ...extra,
  });
  const page = await context.newPage();
  watchProblems(page);
  if (clientConfig) await withClientConfig(page, clientConfig);
  if (sameAs && room) {
    await page.goto(`${baseUrl}/?${new URLSearchParams({ room })}`);
    await waitConnected(page);
  } else if (room && user) {
    await joinAs(page, baseUrl, room, user);
  } else {
    await page.goto(`${baseUrl}/${room ? `?${new URLSearchParams({ room })}` : ''}`);
  }
  return page;
}

/**
 * Merges `settings` into the config the server renders into every chat page
 * `page` loads from now on (<meta name="roomcast-config">, static/js/config.js):
 * how a test shortens the client's own timings, e.g. `history_deadline_ms`
 * or `upload_stall_ms`, which the server never sends. The page itself comes
 * from the server (a page served by the test would count as another
 * network, and Chromium would not let it reach 127.0.0.1); the <meta> is
 * changed as the parser adds it, before any module runs.
 */
export async function withClientConfig(page, settings) {
  await page.addInitScript((extra) => {
    const apply = (meta) => {
      const merged = { ...JSON.parse(meta.content || '{}'), ...extra };
      meta.content = JSON.stringify(merged);
    };
    const watch = new MutationObserver(() => {
      const meta = document.querySelector('meta[name="roomcast-config"]');
      if (!meta) return;
      watch.disconnect();
      apply(meta);
    });
    watch.observe(document, { childList: true, subtree: true });
  }, settings);
}

/** Collects page errors and console errors in `page.problems`. */
export function watchProblems(page) {
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push(`console: ${m.text()}`); });
  return page;
}

/** Opens `room`'s invite link, types `user` in the join form, waits until connected. */
export async function joinAs(page, baseUrl, room, user) {
  await page.goto(`${baseUrl}/?${new URLSearchParams({ room })}`);
  await page.getByTestId('join-name').fill(user);
  await page.getByTestId('join-submit').click();
  await waitConnected(page);
}

export async function waitConnected(page, timeout = 15000) {
  await page.getByTestId('conn-status').and(page.locator('[data-state="connected"]')).waitFor({ timeout });
}

/** Goes to `room` through the sidebar's "Go to room" box (no reload) and waits until connected there. */
export async function goToRoom(page, room) {
  await page.getByTestId('room-input').fill(room);
  await page.getByTestId('room-input').press('Enter');
  await page.getByTestId('room-title').getByText(room, { exact: true }).waitFor();
  await waitConnected(page);
}

/**
 * Puts a test-controlled proxy between `page`'s WebSockets and the server,
 * so a test can cut the connection while the server keeps running.
 * `urls` lists every socket the page opened; `drop()` closes the current
 * one (as a server would, 1013) and holds the next until `open()`;
 * `reconnected()` waits until a socket after the dropped one is connected.
 */
export async function gatedSocket(page) {
  const urls = [];
  let current = null;
  let gate = Promise.resolve();
  let release = () => {};
  let opened = 0; // sockets opened when the last drop came
  await page.routeWebSocket(/\/ws\//, async (ws) => {
    urls.push(ws.url());
    await gate;
    ws.connectToServer();
    current = ws;
  });
  return {
    urls,
    async drop({ hold = true } = {}) {
      if (hold) gate = new Promise((resolve) => { release = resolve; });
      opened = urls.length;
      await current.close({ code: 1013, reason: 'test' });
    },
    open() { release(); },
    async reconnected() {
      for (let waited = 0; urls.length <= opened; waited += 50) {
        assert.ok(waited < 15000, 'no new socket within 15 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      await waitConnected(page);
    },
  };
}

/**
 * Puts a proxy between `page` and the server for the rooms whose WebSocket
 * path matches `pattern`, which loses the echo of the first message of
 * ours saying `content` (the server posts it; the page never hears so).
 * From then on new connections to those rooms wait until `open()`, so the
 * page cannot learn of the post by resuming either. `lost` resolves once
 * the echo was lost.
 */
export async function loseEcho(page, pattern, content) {
  let gate = Promise.resolve();
  let open = () => {};
  let swallowed;
  const lost = new Promise((resolve) => { swallowed = resolve; });
  let done = false;
  await page.routeWebSocket(pattern, async (ws) => {
    await gate;
    const upstream = ws.connectToServer();
    upstream.onMessage((m) => {
      const ev = JSON.parse(m);
      if (!done && ev.type === 'message' && ev.client_id && ev.content === content) {
        done = true;
        gate = new Promise((resolve) => { open = resolve; });
        swallowed();
        return;
      }
      ws.send(m);
    });
    ws.onMessage((m) => upstream.send(m));
  });
  return { lost, open: () => open() };
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

/**
 * A TCP relay on 127.0.0.1 in front of `targetPort`, for a network that dies
 * without saying so. `stall()` makes every connection, open or new, forward
 * nothing from then on (bytes vanish, nothing is closed); `resume()` lets
 * new connections through again and drops the ones that were opened during
 * the stall (they never got anywhere). Connections stalled while open stay
 * open and silent until `close()`.
 */
export async function startRelay(targetPort) {
  const net = await import('node:net');
  const pairs = new Set();
  let stalled = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted += 1;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair = { client, upstream, frozen: stalled, bornStalled: stalled };
    pairs.add(pair);
    client.on('data', (d) => { if (!pair.frozen) upstream.write(d); });
    upstream.on('data', (d) => { if (!pair.frozen) client.write(d); });
    const end = () => { client.destroy(); upstream.destroy(); pairs.delete(pair); };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    get accepted() { return accepted; },
    get open() { return pairs.size; },
    stall() {
      stalled = true;
      for (const p of pairs) p.frozen = true;
    },
    resume() {
      stalled = false;
      for (const p of pairs) if (p.bornStalled) { p.client.destroy(); p.upstream.destroy(); }
    },
    async close() {
      for (const p of pairs) { p.client.destroy(); p.upstream.destroy(); }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Runs axe-core's WCAG 2.x A and AA rules on the page and returns the
 * violations. axe is evaluated through the DevTools protocol, which the
 * page's CSP does not govern, so the page keeps its strict policy.
 */
export async function axeViolations(page) {
  const source = await axeSource();
  await page.evaluate(source);
  return page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] },
      resultTypes: ['violations'],
    });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
    }));
  });
}

let axeCache;
async function axeSource() {
  if (!axeCache) {
    const { readFile } = await import('node:fs/promises');
    const { createRequire } = await import('node:module');
    const file = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
    axeCache = await readFile(file, 'utf8');
  }
  return axeCache;
}

/**
 * Makes the page believe its tab is in the background (or back), as the
 * browser would say it; and, as a browser does for a background tab, runs
 * no animation frames while hidden: those asked for wait until it is shown.
 */
export async function setTabHidden(page, hidden) {
  await page.evaluate((h) => {
    const frames = (window.__heldFrames ??= {
      request: window.requestAnimationFrame, cancel: window.cancelAnimationFrame, held: new Map(), next: 0,
    });
    if (h) {
      window.requestAnimationFrame = (cb) => { frames.next -= 1; frames.held.set(frames.next, cb); return frames.next; };
      window.cancelAnimationFrame = (id) => { if (!frames.held.delete(id)) frames.cancel.call(window, id); };
    } else {
      window.requestAnimationFrame = frames.request;
      window.cancelAnimationFrame = frames.cancel;
      for (const cb of frames.held.values()) frames.request.call(window, cb);
      frames.held.clear();
    }
    Object.defineProperty(document, 'hidden', { value: h, configurable: true });
    Object.defineProperty(document, 'visibilityState', { value: h ? 'hidden' : 'visible', configurable: true });
    document.hasFocus = () => !h;
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

/**
 * Sends `text` through the composer and waits until nothing is pending,
 * for texts whose rendering differs from what was typed (code fences).
 */
export async function sendRaw(page, text) {
  const box = page.getByTestId('composer-input');
  await box.fill(text);
  await box.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('.msg--pending').length === 0);
}

/**
 * A raw protocol client in a page of its own (no UI), for putting many
 * messages in a room quickly and acting on them later as their author.
 * Start the server with `--rate 0`, or the per-connection limit refuses a
 * burst. It runs in a browser page because the page's origin is one the
 * server accepts, and Node 20 has no WebSocket without a flag.
 */
export async function openSeeder(browser, baseUrl, room, user) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${baseUrl}/`);
  await page.evaluate(async ({ room, user }) => {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${proto}://${location.host}/ws/${encodeURIComponent(room)}/${encodeURIComponent(user)}`);
    // ids: content -> message_id of what this client posted; waiters see every event.
    const seed = { ws, ids: new Map(), waiters: new Set() };
    window.seed = seed;
    await new Promise((resolve, reject) => {
      ws.addEventListener('message', (e) => {
        const ev = JSON.parse(e.data);
        if (ev.type === 'welcome') resolve();
        if (ev.type === 'message' && ev.user === user) seed.ids.set(ev.content, ev.message_id);
        for (const w of seed.waiters) w(ev);
      });
      ws.addEventListener('close', (e) => reject(new Error(`the seeder's socket closed with ${e.code}`)));
    });
  }, { room, user });
  return {
    page,
    /**
     * Posts the texts in order (with `attachment` from upload() if given),
     * each once its predecessor is echoed, so seqs follow the list. A post
     * refused as `unavailable` (the store reserves seqs in blocks and a
     * burst can outrun it) is sent again after a pause: it was not posted.
     */
    post(texts, { attachment } = {}) {
      return page.evaluate(async ({ texts, attachment }) => {
        const s = window.seed;
        const once = (content) => new Promise((resolve, reject) => {
          const w = (ev) => {
            if (ev.type === 'message' && ev.content === content) { s.waiters.delete(w); resolve(true); }
            if (ev.type === 'error') {
              s.waiters.delete(w);
              if (ev.code === 'unavailable') resolve(false);
              else reject(new Error(`refused: ${JSON.stringify(ev)}`));
            }
          };
          s.waiters.add(w);
          s.ws.send(JSON.stringify(attachment ? { type: 'message', content, attachment } : { type: 'message', content }));
        });
        for (const content of texts) {
          for (let tries = 0; !(await once(content)); tries += 1) {
            if (tries > 50) throw new Error(`${content}: the server stayed unavailable`);
            await new Promise((r) => setTimeout(r, 20 * (tries + 1)));
          }
        }
      }, { texts, attachment });
    },
    /** Uploads a small file and returns `{ url }` for post(). */
    upload(name, type, text) {
      return page.evaluate(async ({ name, type, text }) => {
        const form = new FormData();
        form.append('file', new File([text], name, { type }));
        const res = await fetch('/upload', { method: 'POST', body: form });
        if (!res.ok) throw new Error(`upload: ${res.status} ${await res.text()}`);
        return { url: (await res.json()).url };
      }, { name, type, text });
    },
    /** Sends a request about the message this client posted as `text` (edit, delete, reaction). */
    about(text, request) {
      return page.evaluate(({ text, request }) => {
        const id = window.seed.ids.get(text);
        if (!id) throw new Error(`the seeder did not post ${JSON.stringify(text)}`);
        window.seed.ws.send(JSON.stringify({ ...request, message_id: id }));
      }, { text, request });
    },
    async close() { await page.context().close(); },
  };
}

/**
 * People in `room` with no UI: one page of its own holding a socket per
 * name in `names`, each open once its `welcome` came (in parallel: the
 * order of their joins is not kept). `leave(name)` closes that one's
 * socket; `close()` all of them. Many names from one address stay under
 * the server's per-address caps up to about 200.
 */
export async function openCrowd(browser, baseUrl, room, names) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${baseUrl}/`);
  await page.evaluate(async ({ room, names }) => {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    window.crowd = new Map();
    await Promise.all(names.map((name) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`${proto}://${location.host}/ws/${encodeURIComponent(room)}/${encodeURIComponent(name)}`);
      window.crowd.set(name, ws);
      ws.addEventListener('message', (e) => { if (JSON.parse(e.data).type === 'welcome') resolve(); });
      ws.addEventListener('close', (e) => reject(new Error(`${name}'s socket closed with ${e.code}`)));
    })));
  }, { room, names });
  return {
    /** Closes `name`'s socket: the room sees them leave. */
    leave(name) {
      return page.evaluate((name) => { window.crowd.get(name).close(); window.crowd.delete(name); }, name);
    },
    async close() { await context.close(); },
  };
}
