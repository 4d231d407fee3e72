// Message text to DOM without ever parsing HTML: fenced code blocks,
// `inline code`, http(s) links, and @mentions of the reader. Everything
// else stays literal text. No Markdown library: these four are what a chat
// needs, and each is a few lines.

import { h } from './dom.js';

const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const INLINE_CODE_RE = /`([^`\n]+)`/g;
const FENCE_OPEN = /^\s*```\s*([\w+#.-]*)\s*$/;
const FENCE_CLOSE = /^\s*```\s*$/;
// Pictographs, skin tones, flags, keycaps, joiners and variation selectors.
const EMOJI_ONLY = /^(?:\p{Extended_Pictographic}|\p{Emoji_Modifier}|\p{Regional_Indicator}|[#*0-9]\uFE0F?\u20E3|\u200D|\uFE0F|\s)+$/u;
const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/**
 * Appends `text` to `parent`. Returns what the caller may style on the
 * message: `mentionsMe` (it names `me` as @me) and `emojiCount` (1–6 when the
 * text is only emoji, else 0).
 */
export function renderText(parent, text, me) {
  const info = { mentionsMe: false, emojiCount: emojiCount(text) };
  const mention = me ? mentionPattern(me) : null;
  for (const part of splitFences(text)) {
    if (part.code !== undefined) {
      parent.append(h('pre', { cls: 'code-block', attrs: { dir: 'ltr' } }, [h('code', { text: part.code })]));
    } else {
      appendInline(parent, part.text, mention, info);
    }
  }
  return info;
}

/** Splits on ``` fences that open and close on their own lines; an unclosed fence is text. */
function splitFences(text) {
  const lines = text.split('\n');
  const parts = [];
  let buf = [];
  for (let i = 0; i < lines.length; i++) {
    if (FENCE_OPEN.test(lines[i])) {
      let end = i + 1;
      while (end < lines.length && !FENCE_CLOSE.test(lines[end])) end++;
      if (end < lines.length) {
        if (buf.length) parts.push({ text: buf.join('\n') });
        buf = [];
        parts.push({ code: lines.slice(i + 1, end).join('\n') });
        i = end;
        // The line break after a block is the block's own end.
        if (lines[i + 1] === '') i++;
        continue;
      }
    }
    buf.push(lines[i]);
  }
  if (buf.length) parts.push({ text: buf.join('\n') });
  return parts;
}

function appendInline(parent, text, mention, info) {
  let last = 0;
  for (const m of text.matchAll(INLINE_CODE_RE)) {
    appendLinks(parent, text.slice(last, m.index), mention, info);
    parent.append(h('code', { cls: 'code-inline', text: m[1] }));
    last = m.index + m[0].length;
  }
  appendLinks(parent, text.slice(last), mention, info);
}

function appendLinks(parent, text, mention, info) {
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    const url = trimUrl(match[0]);
    let parsed = null;
    try { parsed = new URL(url); } catch { /* not a URL after all */ }
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) continue;
    appendMentions(parent, text.slice(last, match.index), mention, info);
    parent.append(h('a', {
      text: url, attrs: { href: parsed.href, target: '_blank', rel: 'noopener noreferrer', dir: 'ltr' },
    }));
    last = match.index + url.length;
  }
  appendMentions(parent, text.slice(last), mention, info);
}

/**
 * Trailing punctuation belongs to the sentence, not the URL; a closing
 * bracket stays only when it closes one opened inside the URL, so
 * `(see https://x/Rust_(lang)).` links `https://x/Rust_(lang)`.
 */
export function trimUrl(url) {
  const opener = { ')': '(', ']': '[', '}': '{' };
  const count = (s, c) => s.split(c).length - 1;
  for (;;) {
    const last = url.at(-1);
    if ('.,;:!?*'.includes(last)) url = url.slice(0, -1);
    else if (opener[last] && count(url, last) > count(url, opener[last])) url = url.slice(0, -1);
    else return url;
  }
}

function mentionPattern(me) {
  const escaped = me.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // `@name` not followed by more of a word (`@ann` is not `@anna`).
  return new RegExp(`@${escaped}(?![\\p{L}\\p{N}_])`, 'giu');
}

function appendMentions(parent, text, mention, info) {
  if (!text) return;
  let last = 0;
  if (mention) {
    for (const m of text.matchAll(mention)) {
      parent.append(text.slice(last, m.index), h('mark', { cls: 'mention', text: m[0], testid: 'mention' }));
      info.mentionsMe = true;
      last = m.index + m[0].length;
    }
  }
  parent.append(text.slice(last));
}

function emojiCount(text) {
  if (!text.trim() || !EMOJI_ONLY.test(text)) return 0;
  let n = 0;
  for (const { segment } of graphemes.segment(text)) if (segment.trim()) n++;
  return n <= 6 ? n : 0;
}

/** Long texts are folded; the reader unfolds them with "Show more". */
export function isLong(text, maxChars, maxLines) {
  return text.length > maxChars || text.split('\n').length > maxLines;
}
