// Attachments waiting to be sent: chosen with the button, dropped on the
// chat or pasted. Each file uploads on its own (POST /upload, with progress;
// or, when the server keeps media in S3, asked for at POST /api/uploads, PUT
// straight to storage with progress, then completed; a file whose type the
// browser does not name, or names other than the ask expects (text/markdown,
// text/csv, ...), goes to POST /upload, which judges by the bytes in either
// store), shows a preview, and
// is sent as its own message; a file that cannot be sent is explained in one
// sentence that names it.
//
// A transfer that makes no progress for UPLOAD_STALL_MS (a link that went
// quiet without failing: no byte moves, no answer comes) is cut off: the
// file stays in the box marked as stalled, with "Retry" and its ✕, and no
// longer holds up sending. So does one whose upload failed in a way worth
// trying again (no answer, 408, 429, 5xx), saying why on the file; a refusal
// that would only come again (too large, a type not allowed, ...) takes the
// file out of the box, said under the composer.

import { config, MAX_FILES, UPLOAD_STALL_MS } from './config.js';
import { els, h, isTouch } from './dom.js';
import { formatBytes, quoted } from './format.js';
import { composerError, updateSendState } from './composer.js';
import { toast } from './notices.js';
import { state } from './state.js';
import { roomKey } from './store.js';
import { tokenFor } from './token.js';

/**
 * { file, abort, result, el, preview, key, room, run, stalled, giveUp? } in the order
 * added, of the room shown and of those left (see below): at most
 * MAX_FILES a room, for 1 + STASH_ROOMS rooms.
 */
const items = [];

/**
 * Each file belongs to the room, and name, it was added in (`it.key`).
 * Leaving the room puts its files aside (still in `items`, out of the box;
 * one still uploading goes on, or fails with a toast naming its room), and
 * entering it again as that name brings them back (stashUploads,
 * restoreUploads). In this page only, and bounded: at most MAX_FILES a
 * room, and the files of STASH_ROOMS rooms left; one more drops those of
 * the room left longest ago, said in a toast.
 */
const STASH_ROOMS = 5;
const left = new Map(); // key -> the room's name as shown, the room left longest ago first
const keyOf = () => `${state.user}\n${roomKey(state.room)}`;
/** The files of the room shown. */
const here = () => items.filter((it) => it.key === keyOf());

/** A file still uploading (a stalled one waits for its Retry, and holds nothing up). */
export const uploadsBusy = () => here().some((it) => !it.result && !it.stalled);
export const readyAttachments = () => here().filter((it) => it.result).map((it) => it.result);

/** Adds files; returns nothing, explains every refusal under the composer. */
export function addFiles(files) {
  const problems = [];
  for (const file of files) {
    const name = quoted(file.name || 'pasted file');
    if (here().length >= MAX_FILES) {
      problems.push(`${name} was not added: at most ${MAX_FILES} files can wait to be sent at once.`);
    } else if (file.size > config.max_upload_bytes) {
      problems.push(tooLarge(name, file.size));
    } else if (file.size === 0) {
      problems.push(`${name} is empty, so there is nothing to send.`);
    } else {
      start(file);
    }
  }
  composerError(problems);
  updateSendState();
}

/** "is 12.4 MB; the limit is 10 MB", in bytes when both round alike. */
function tooLarge(name, size) {
  const limit = config.max_upload_bytes;
  const [a, b] = [formatBytes(size), formatBytes(limit)];
  if (a !== b) return `${name} is ${a}; the limit is ${b}.`;
  return `${name} is ${size.toLocaleString()} bytes, just over the limit of ${limit.toLocaleString()} bytes.`;
}

function start(file) {
  const it = { file, abort: () => {}, result: null, el: null, preview: '', key: keyOf(), room: state.roomTitle || state.room, run: null, stalled: false };
  const label = h('span', { cls: 'upload-name', attrs: { dir: 'auto' } });
  const progress = h('progress', { testid: 'upload-progress', attrs: { max: '100', value: '0', 'aria-label': `Uploading ${file.name || 'file'}` } });
  const retry = h('button', { cls: 'btn btn-small upload-retry', text: 'Retry', testid: 'upload-retry', attrs: { type: 'button' } });
  const remove = h('button', {
    cls: 'btn btn-icon btn-small', testid: 'upload-cancel', attrs: { type: 'button', 'aria-label': `Remove ${file.name || 'file'}` },
  }, [h('span', { text: '✕', attrs: { 'aria-hidden': 'true' } })]);
  let thumb;
  if (file.type.startsWith('image/')) {
    it.preview = URL.createObjectURL(file);
    thumb = h('img', { cls: 'upload-thumb', testid: 'upload-preview', attrs: { src: it.preview, alt: `Preview of ${file.name || 'the image'}` } });
  } else {
    thumb = h('span', { cls: 'upload-thumb upload-thumb-file', text: '📄', attrs: { 'aria-hidden': 'true' } });
  }
  it.el = h('li', { cls: 'upload-item', testid: 'upload-item' }, [thumb, label, progress, retry, remove]);
  Object.assign(it, { label, progress, retryButton: retry });
  items.push(it);
  els.uploadBox.append(it.el);
  els.uploadBox.hidden = false;
  remove.addEventListener('click', () => {
    // The focus goes to the next file's ✕, else the message box; on a touch
    // screen the attach button instead (focusing the box opens the keyboard).
    const hadFocus = it.el.contains(document.activeElement);
    const next = (it.el.nextElementSibling || it.el.previousElementSibling)?.querySelector('[data-testid="upload-cancel"]');
    drop(it);
    if (hadFocus || !isTouch()) (next || (isTouch() ? els.attachInput : els.input)).focus();
  });
  retry.addEventListener('click', () => {
    begin(it);
    it.el.querySelector('[data-testid="upload-cancel"]').focus();
  });
  begin(it);
}

/** Starts (or starts again, after a stall) the transfer of `it`. */
function begin(it) {
  const { file, label, progress } = it;
  const run = {};
  it.run = run;
  it.stalled = false;
  it.el.classList.remove('stalled');
  it.retryButton.hidden = true;
  progress.hidden = false;
  progress.value = 0;
  label.textContent = `${file.name || 'pasted file'} (${formatBytes(file.size)})`;
  updateSendState();

  // No progress for UPLOAD_STALL_MS: cut off, offered again.
  let timer = 0;
  const kick = () => {
    clearTimeout(timer);
    timer = setTimeout(() => { if (current(it, run)) stall(it); }, UPLOAD_STALL_MS);
  };
  run.kick = kick;
  run.stop = () => clearTimeout(timer);
  kick();

  const done = (body) => {
    run.stop();
    if (!current(it, run)) return;
    it.result = body;
    progress.remove();
    it.retryButton.remove();
    it.el.classList.add('done');
    label.textContent = `${body.name || file.name} (${formatBytes(body.size ?? file.size)}) ready to send`;
    // Finished after its room was left: it waits there, ready.
    if (it.key !== keyOf()) return;
    updateSendState();
    // Ready to send: the message box, unless the person is busy elsewhere
    // (editing a message, reading the list) since the upload began.
    const at = document.activeElement;
    if (!at || at === document.body || els.input.closest('.composer-wrap').contains(at)) els.input.focus();
  };
  const onProgress = (e) => {
    kick();
    if (e.lengthComputable) progress.value = Math.round((e.loaded / e.total) * 100);
  };
  // The ask needs the file's type; without one only the bytes can tell.
  if (config.media === 's3' && file.type) presigned(it, run, onProgress, done);
  else direct(it, run, onProgress, done);
}

/** This attempt of `it` is still the one that counts (not removed, not retried since). */
const current = (it, run) => items.includes(it) && it.run === run;

/** No progress for too long: cut off, said on the file, offered again. */
function stall(it) {
  const secs = Math.round(UPLOAD_STALL_MS / 1000);
  hold(it, `${it.file.name || 'pasted file'}: the upload stalled (no progress for ${secs} s).`);
}

/**
 * Stops the transfer of `it` and keeps the file in the box, saying `why`,
 * with its Retry (which starts over: what the server held for this try
 * is given back now).
 */
function hold(it, why) {
  it.run?.stop();
  it.run = null; // whatever the cut-off transfer still reports is ignored
  it.abort();
  it.giveUp?.();
  it.giveUp = null;
  it.stalled = true;
  it.el.classList.add('stalled');
  it.progress.hidden = true;
  it.retryButton.hidden = false;
  it.label.textContent = why;
  updateSendState();
}

/** Token mode: uploads carry the invitation too (a header, unlike the WebSocket). */
function authHeaders() {
  const token = tokenFor(state.user, state.room);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

const unreachable = (file) => `${quoted(file.name || 'pasted file')} was not uploaded: the server could not be reached.`;

/** POST /upload with the file in a form: the server stores it. */
function direct(it, run, onProgress, done) {
  const { file } = it;
  const xhr = new XMLHttpRequest();
  it.abort = () => xhr.abort();
  xhr.upload.addEventListener('progress', onProgress);
  // The answer coming in is progress too.
  xhr.addEventListener('progress', run.kick);
  xhr.addEventListener('load', () => {
    run.stop();
    if (!current(it, run)) return;
    const body = parse(xhr.responseText);
    if (xhr.status === 200 && body && typeof body.url === 'string') return done(body);
    fail(it, refusal(file, xhr.status, (h) => xhr.getResponseHeader(h), body), xhr.status);
  });
  xhr.addEventListener('error', () => { run.stop(); if (current(it, run)) fail(it, unreachable(file), 0); });
  const form = new FormData();
  form.append('file', file, file.name || 'pasted');
  xhr.open('POST', config.upload_path);
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.send(form);
}

/** Presigned: ask the server for a URL, PUT the bytes straight to storage
 *  (with progress), then ask the server to check and keep them. */
async function presigned(it, run, onProgress, done) {
  const { file } = it;
  const controller = new AbortController();
  it.abort = () => controller.abort();
  // One identity for the whole upload: the ask, its complete and a DELETE
  // are the same person's, whatever invitation the tab opens meanwhile.
  const auth = authHeaders();
  const post = async (url, body) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { ...auth, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: controller.signal,
    });
    run.kick();
    return { res, body: parse(await res.text()) };
  };
  const refused = ({ res, body }) => [refusal(file, res.status, (h) => res.headers.get(h), body), res.status];
  try {
    const asked = await post(config.presign_path, { name: file.name || 'pasted', size: file.size, content_type: file.type });
    if (!current(it, run)) return giveUp(asked.body?.upload_id, auth);
    run.kick();
    // A type the ask does not take (text/markdown, application/json, ...)
    // may still be plain text or an allowed kind: POST /upload decides by
    // the bytes, as it does with the local store.
    if (asked.res.status === 415) return direct(it, run, onProgress, done);
    if (asked.res.status !== 200 || !asked.body?.put_url) return fail(it, ...refused(asked));
    // Handed out: dropping the file now (its PUT failed, or the person
    // removed it) gives the server's place and bytes back, as the name
    // that asked (a file put aside may be dropped under another).
    const release = () => giveUp(asked.body.upload_id, auth);
    it.giveUp = release;
    const put = await new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      it.abort = () => { xhr.abort(); controller.abort(); };
      xhr.upload.addEventListener('progress', onProgress);
      xhr.addEventListener('load', () => resolve(xhr.status));
      xhr.addEventListener('error', () => resolve(0));
      xhr.addEventListener('abort', () => resolve(0));
      xhr.open('PUT', asked.body.put_url);
      for (const [k, v] of Object.entries(asked.body.headers || {})) xhr.setRequestHeader(k, v);
      xhr.send(file);
    });
    if (!current(it, run)) return;
    run.kick();
    if (put === 0) return fail(it, `${quoted(file.name || 'pasted file')} was not uploaded: the file storage could not be reached.`, 0);
    if (put < 200 || put > 299) {
      const again = retryable(put) ? '; try again' : '';
      return fail(it, `${quoted(file.name || 'pasted file')} was not uploaded: the file storage refused it (${put})${again}.`, put);
    }
    // The complete holds the upload (a DELETE meanwhile finds nothing); only
    // nothing stored yet (409) or a storage error (5xx) leaves it waiting.
    it.giveUp = null;
    // Not cut short by a removal, nor by a stall: only its answer tells
    // whether the upload still waits (then it is given up below).
    it.abort = () => {};
    const completed = await post(asked.body.complete_url);
    run.stop();
    // Nothing stored yet (409) or a storage error (5xx): the upload waits
    // again, so a file removed meanwhile is given up now.
    const waiting = completed.res.status === 409 || completed.res.status >= 500;
    if (!current(it, run)) return waiting ? release() : undefined;
    if (completed.res.status === 200 && typeof completed.body?.url === 'string') return done(completed.body);
    if (waiting) it.giveUp = release;
    fail(it, ...refused(completed));
  } catch (e) {
    run.stop();
    if (e?.name !== 'AbortError' && current(it, run)) fail(it, unreachable(file), 0);
  }
}

/** DELETE /api/uploads/{id}: a presigned upload not completed is given up,
 *  so its place and bytes come back now, not when it expires. Fire and
 *  forget: at worst it waits out its time. */
function giveUp(id, headers) {
  if (typeof id !== 'string') return;
  fetch(`${config.presign_path}/${encodeURIComponent(id)}`, { method: 'DELETE', headers, keepalive: true })
    .catch(() => {});
}

function parse(text) {
  try { return JSON.parse(text); } catch { return null; }
}

/** One sentence naming the file, from the status (the server's own words are for developers). */
function refusal(file, status, header, body) {
  const name = quoted(file.name || 'pasted file');
  switch (status) {
    case 413: return `${name} is too large; the limit is ${formatBytes(config.max_upload_bytes)}.`;
    case 415: return `${name} can’t be shared here: only images, video, audio, PDF and plain text files are allowed.`;
    case 429: {
      if (body?.error === 'too_many_pending') return `${name} was not uploaded: too many of your uploads are still unfinished; wait for them, then try again.`;
      const secs = Number(header('Retry-After'));
      // Too many uploads a minute, or too many bytes an hour (a longer wait).
      const wait = !(secs > 0) ? 'a minute' : secs < 120 ? `${secs} s` : `${Math.ceil(secs / 60)} minutes`;
      return `${name} was not uploaded: you have uploaded too much for now; try again in ${wait}.`;
    }
    case 408: return `${name} took too long to upload; try again on a steadier connection.`;
    case 422: return `${name} can’t be shared: its content is not what its type says (only images, video, audio, PDF and plain text files are allowed).`;
    case 503: return `${name} was not uploaded: the file storage is unavailable right now; try again in a minute.`;
    case 401: return `${name} was not uploaded: this server needs a valid invitation (yours is missing or expired); ask for a new invite link.`;
    default: return `${name} was not uploaded (the server answered ${status}).`;
  }
}

/**
 * Answers worth trying again: none (the network), a timeout, too much for
 * now (429), the server's or the storage's trouble (5xx). Other refusals
 * (too large, a type not allowed, content not what its type says, no
 * invitation) would only be refused again.
 */
const retryable = (status) => status === 0 || status === 408 || status === 429 || status >= 500;

/**
 * The upload of `it` failed (`status` 0: no answer). Worth trying again:
 * the file stays in the box, saying why, with its Retry (as a stall does);
 * else it leaves the box, the sentence under the composer.
 */
function fail(it, sentence, status) {
  if (!items.includes(it)) return;
  const keep = retryable(status);
  if (keep) hold(it, sentence);
  else drop(it);
  // Its room was left meanwhile: said wherever the person is now.
  if (it.key !== keyOf()) { toast(`In #${it.room}: ${sentence}`); return; }
  if (keep) return;
  const shown = [...els.composerError.querySelectorAll('.error-line')].map((e) => e.textContent);
  composerError([...shown, sentence]);
}

function drop(it) {
  const i = items.indexOf(it);
  if (i < 0) return;
  items.splice(i, 1);
  if (!it.result) { it.run?.stop(); it.abort(); it.giveUp?.(); }
  if (it.preview) URL.revokeObjectURL(it.preview);
  it.el.remove();
  els.uploadBox.hidden = here().length === 0;
  updateSendState();
}

/** After sending: the room's ready files went with the message (a stalled one stays for its Retry). */
export function clearUploads() {
  for (const it of here()) if (it.result) drop(it);
  els.attachInput.value = '';
}

/**
 * Leaving the room (navigation.js, before the session's room changes): its
 * files leave the box and wait for it, uploads under way going on. Past
 * STASH_ROOMS rooms, those of the room left longest ago are dropped.
 */
export function stashUploads() {
  // The files shown, under the key they were added with: the name may be
  // gone from the session already ("Change name" clears it).
  const shown = items.filter((it) => it.el.parentNode === els.uploadBox);
  for (const it of shown) it.el.remove();
  els.uploadBox.hidden = true;
  els.attachInput.value = '';
  for (const it of shown) {
    left.delete(it.key);
    left.set(it.key, it.room);
  }
  // Rooms whose files all failed or went meanwhile hold no place.
  for (const k of left.keys()) if (!items.some((it) => it.key === k)) left.delete(k);
  while (left.size > STASH_ROOMS) {
    const [oldest, room] = left.entries().next().value;
    left.delete(oldest);
    const lost = items.filter((it) => it.key === oldest);
    for (const it of lost) drop(it);
    const n = lost.length;
    toast(`${n} file${n === 1 ? '' : 's'} waiting to be sent in #${room} ${n === 1 ? 'was' : 'were'} dropped: files are kept for at most ${STASH_ROOMS} rooms left.`);
  }
}

/** Entering a room (the session's room and name set): its files come back to the box. */
export function restoreUploads() {
  left.delete(keyOf());
  const mine = here();
  els.uploadBox.append(...mine.map((it) => it.el));
  els.uploadBox.hidden = mine.length === 0;
  updateSendState();
}

export function initUploads() {
  els.attachInput.addEventListener('change', () => {
    addFiles([...els.attachInput.files]);
    els.attachInput.value = '';
  });
  els.input.addEventListener('paste', (e) => {
    const files = [...(e.clipboardData?.files || [])];
    if (files.length) { e.preventDefault(); addFiles(files); }
  });
  // Drag-and-drop anywhere on the chat column. dragenter/leave fire for every
  // child, so count them to know when the pointer really left.
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes('Files');
  els.chat.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    els.dropOverlay.hidden = false;
  });
  els.chat.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
  els.chat.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) els.dropOverlay.hidden = true;
  });
  els.chat.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    els.dropOverlay.hidden = true;
    composerError('');
    addFiles([...e.dataTransfer.files]);
  });
}
