// How numbers, times and names look: sizes, local times, avatar colours.

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10 * 1024 ? 1 : 0)} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit',
});
export const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

/** Time in the reader's locale; the date too when it is not today. */
export function formatTime(date) {
  return date.toDateString() === new Date().toDateString() ? timeFmt.format(date) : dateTimeFmt.format(date);
}

/** A stable colour class for a name, so people are recognisable at a glance. */
export function hueClass(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hue-${hash % 12}`;
}

export function initials(name) {
  return (Array.from(name.trim())[0] || '?').toUpperCase();
}

/** 96 random bits as hex (crypto.randomUUID needs a secure context). */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** “name” in typographic quotes, for sentences about files and people. */
export const quoted = (s) => `“${s}”`;
