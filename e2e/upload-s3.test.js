// Attachments with the S3 media store: the browser asks the server for a
// presigned PUT, sends the bytes straight to an S3-compatible server (a real
// s3s-fs, which checks signatures), completes, and the other window shows
// the image through the redirect to a presigned GET. A file whose bytes are
// not its declared type is refused at completion with one sentence.
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
  for (const p of [alice, bob]) if (p) assert.deepEqual(p.problems.filter((m) => !/status of 422/.test(m)), []);
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
