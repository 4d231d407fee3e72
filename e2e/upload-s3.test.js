// Attachments with the S3 media store: the browser asks the server for a
// presigned PUT, sends the bytes straight to an S3-compatible server (a real
// s3s-fs, which checks signatures), completes, and the other window shows
// the image through the redirect to a presigned GET. A file whose bytes are
// not its declared type is refused at completion with one sentence. A PUT
// that fails gives the upload back to the server (DELETE) at once.
//
// s3s-fs has no CORS support, and a browser PUT to another origin needs it:
// a small relay in front of it answers the preflight and adds
// Access-Control-Allow-Origin, as a real bucket's CORS configuration would.
// It forwards every request byte for byte (the Host header included), so
// the signatures are checked by s3s-fs as if the browser reached it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, mkdirSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { openChat, messageWithText, startSuite, stopSuite } from './helpers.js';

const ACCESS = 'roomcast-e2e-access';
const SECRET = 'roomcast-e2e-secret-of-some-length';
let s3;
let cors;
let server;
let browser;
let alice;
let bob;
let png;

/** Starts s3s-fs (ROOMCAST_S3S_FS, else s3s-fs on the PATH) with a `media` bucket. */
async function startS3() {
  const root = mkdtempSync(path.join(tmpdir(), 'roomcast-e2e-s3-'));
  mkdirSync(path.join(root, 'media'));
  const bin = process.env.ROOMCAST_S3S_FS || 's3s-fs';
  const proc = spawn(bin, ['--host', '127.0.0.1', '--port', '0', '--access-key', ACCESS, '--secret-key', SECRET, root],
    { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' } });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('s3s-fs did not say where it listens within 20 s')), 20000);
    proc.once('error', (e) => reject(new Error(`could not start ${bin}: ${e.message} (cargo install --locked s3s-fs@0.14.1 --features binary)`)));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = /server is running at (http:\/\/\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
  return { url, root, proc, stop() { proc.kill('SIGKILL'); rmSync(root, { recursive: true, force: true }); } };
}

/** A relay adding CORS in front of `target` (http://host:port). */
async function startCors(target) {
  const { hostname, port } = new URL(target);
  const relay = http.createServer((req, res) => {
    const allow = {
      'Access-Control-Allow-Origin': req.headers.origin || '*',
      'Access-Control-Allow-Methods': 'GET, HEAD, PUT',
      'Access-Control-Allow-Headers': 'content-type',
    };
    if (req.method === 'OPTIONS') {
      res.writeHead(204, allow);
      res.end();
      return;
    }
    const upstream = http.request({ host: hostname, port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, { ...up.headers, ...allow });
      up.pipe(res);
    });
    upstream.on('error', () => { res.writeHead(502); res.end(); });
    req.pipe(upstream);
  });
  await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${relay.address().port}`, close: () => new Promise((r) => relay.close(r)) };
}

before(async () => {
  s3 = await startS3();
  cors = await startCors(s3.url);
  process.env.AWS_ACCESS_KEY_ID = ACCESS;
  process.env.AWS_SECRET_ACCESS_KEY = SECRET;
  ({ server, browser } = await startSuite({ extraArgs: ['--media-store', `s3://media?endpoint=${cors.url}`] }));
  alice = await openChat(browser, server.url, { room: 'photos', user: 'alice' });
  bob = await openChat(browser, server.url, { room: 'photos', user: 'bob' });
  png = await alice.screenshot({ clip: { x: 0, y: 0, width: 64, height: 48 } });
});

after(async () => {
  await stopSuite({ server, browser });
  await cors?.close();
  s3?.stop();
  for (const p of [alice, bob]) if (p) assert.deepEqual(p.problems.filter((m) => !/status of (422|415)/.test(m)), []);
});

test('an image goes straight to storage with progress and shows in the other window', async () => {
  const puts = [];
  alice.on('request', (r) => { if (r.method() === 'PUT') puts.push(r.url()); });
  await alice.getByTestId('attach-input').setInputFiles({ name: 'sunset.png', mimeType: 'image/png', buffer: png });
  await alice.getByTestId('upload-box').getByText('ready to send').waitFor();
  assert.equal(puts.length, 1);
  assert.ok(puts[0].startsWith(`${cors.url}/media/`), puts[0]);
  assert.match(puts[0], /X-Amz-Signature=/);
  await alice.getByTestId('composer-input').fill('from the bucket');
  await alice.getByTestId('composer-input').press('Enter');

  const msg = messageWithText(bob, 'from the bucket');
  await msg.waitFor();
  const img = msg.getByTestId('attachment-image');
  await img.waitFor();
  await bob.waitForFunction((el) => el.complete && el.naturalWidth === 64, await img.elementHandle());
  assert.match(new URL(await img.getAttribute('src'), server.url).pathname, /^\/uploads\/[0-9a-f]+\.png$/);
  const stored = readdirSync(path.join(s3.root, 'media')).filter((n) => /^[0-9a-f]{32}\.png$/.test(n));
  assert.equal(stored.length, 1, 'the bytes are in the bucket');
});

test('bytes that are not their declared type are refused at completion with one sentence', async () => {
  const html = Buffer.from('<!doctype html><script>alert(1)</script>');
  await alice.getByTestId('attach-input').setInputFiles({ name: 'cat.png', mimeType: 'image/png', buffer: html });
  await alice.getByTestId('composer-error').getByText('not what its type says', { exact: false }).waitFor();
  assert.equal(await alice.getByTestId('upload-item').count(), 0);
});

test('a file the ask does not take by its type (text/markdown) goes to POST /upload, judged by its bytes', async () => {
  const asked = [];
  alice.on('request', (r) => { if (r.method() === 'POST') asked.push(new URL(r.url()).pathname); });
  const notes = Buffer.from('# Notes\n\nplain words, ünïcode\n');
  await alice.getByTestId('attach-input').setInputFiles([
    { name: 'notes.md', mimeType: 'text/markdown', buffer: notes },
  ]);
  await alice.getByTestId('upload-box').getByText('ready to send').waitFor();
  assert.deepEqual(asked, ['/api/uploads', '/upload'], 'refused by type at the ask (415), then sent whole');
  await alice.getByTestId('composer-input').fill('markdown notes');
  await alice.getByTestId('composer-input').press('Enter');
  await messageWithText(bob, 'markdown notes').getByText('notes.md').waitFor();
  const stored = readdirSync(path.join(s3.root, 'media')).filter((n) => /^[0-9a-f]{32}\.txt$/.test(n));
  assert.equal(stored.length, 1, 'kept in the bucket as text');
});

test('a file removed while its complete is under way is given up once the complete leaves it waiting', async () => {
  // The PUT is answered 200 without reaching the bucket, so the complete
  // finds nothing (409) and the upload waits again; the file is removed
  // while that complete is held.
  const fakePut = (route) => (route.request().method() === 'PUT' ? route.fulfill({ status: 200 }) : route.fallback());
  const holdComplete = async (route) => {
    await alice.getByTestId('upload-cancel').click();
    await route.continue();
  };
  await alice.route(`${cors.url}/**`, fakePut);
  await alice.route('**/api/uploads/*/complete', holdComplete);
  const completed = alice.waitForResponse((r) => /\/complete$/.test(r.url()));
  const givenUp = alice.waitForResponse((r) => r.request().method() === 'DELETE');
  try {
    await alice.getByTestId('attach-input').setInputFiles({ name: 'gone.png', mimeType: 'image/png', buffer: png });
    assert.equal((await completed).status(), 409);
    assert.equal((await givenUp).status(), 204);
  } finally {
    await alice.unroute(`${cors.url}/**`, fakePut);
    await alice.unroute('**/api/uploads/*/complete', holdComplete);
  }
  assert.equal(await alice.getByTestId('upload-item').count(), 0);
  alice.problems = alice.problems.filter((m) => !/status of 409/.test(m));
});

test('a PUT that fails gives the upload back at once (DELETE), so its place is free again; the file waits for its Retry', async () => {
  // The storage cannot be reached: the browser's PUT fails, nothing else does.
  const refusePut = (route) => (route.request().method() === 'PUT' ? route.abort('connectionrefused') : route.fallback());
  await alice.route(`${cors.url}/**`, refusePut);
  const givenUp = alice.waitForResponse((r) => r.request().method() === 'DELETE');
  const item = alice.getByTestId('upload-item');
  try {
    await alice.getByTestId('attach-input').setInputFiles({ name: 'lost.png', mimeType: 'image/png', buffer: png });
    await item.getByText('“lost.png” was not uploaded: the file storage could not be reached.').waitFor();
    assert.equal(await item.getByTestId('upload-retry').isVisible(), true, 'worth trying again: it stays');
    const res = await givenUp;
    assert.equal(res.status(), 204);
    assert.match(new URL(res.url()).pathname, /^\/api\/uploads\/[0-9a-f]{32}\.png$/);
  } finally {
    await alice.unroute(`${cors.url}/**`, refusePut);
  }
  // The storage is back: Retry asks again and the file goes.
  await item.getByTestId('upload-retry').click();
  await alice.getByTestId('upload-box').getByText('ready to send').waitFor();
  await alice.getByTestId('send-btn').click();
  await bob.getByTestId('message').filter({ has: bob.locator('img[alt="lost.png"]') }).waitFor();
  await alice.getByTestId('upload-box').waitFor({ state: 'hidden' });
  // A client has 8 places; nothing else is waiting, so 8 asks get one and
  // the 9th is refused (with the lost upload still held, the 8th would be).
  // Each is given up again, leaving nothing waiting.
  const statuses = await alice.evaluate(async () => {
    const asked = JSON.stringify({ name: 'a.png', size: 10, content_type: 'image/png' });
    const out = [];
    const ids = [];
    for (let i = 0; i < 9; i += 1) {
      const r = await fetch('/api/uploads', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: asked });
      out.push(r.status);
      if (r.ok) ids.push((await r.json()).upload_id);
    }
    for (const id of ids) out.push((await fetch(`/api/uploads/${id}`, { method: 'DELETE' })).status);
    return out;
  });
  assert.deepEqual(statuses, [...Array(8).fill(200), 429, ...Array(8).fill(204)]);
  // Expected console noise: the refused PUT and the 9th ask's 429.
  alice.problems = alice.problems.filter((m) => !/net::ERR_CONNECTION_REFUSED|status of 429/.test(m));
});
