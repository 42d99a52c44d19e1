// Dates, times and short texts as people read them, in the browser's locale.

const time = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const weekday = new Intl.DateTimeFormat(undefined, { weekday: 'long' });
const weekdayShort = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const dayMonth = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const fullDate = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' });
const shortDate = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'numeric', year: '2-digit' });
const full = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });

/** Midnight of the day of `ms`, local time. @param {number} ms */
export function dayStart(ms) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** Whole days from the day of `ms` to today (0 today, 1 yesterday). @param {number} ms */
function daysAgo(ms) {
  return Math.round((dayStart(Date.now()) - dayStart(ms)) / 86_400_000);
}

/** "14:05". @param {number} ms */
export function clock(ms) {
  return time.format(ms);
}

/**
 * When something set for later ends: "14:05" today, "tomorrow, 08:00", "Tue, 14:05" within a
 * week, "12 Mar, 14:05" after that.
 * @param {number} ms
 */
export function untilTime(ms) {
  const n = -daysAgo(ms);
  if (n <= 0) return time.format(ms);
  if (n === 1) return `tomorrow, ${time.format(ms)}`;
  if (n < 7) return `${weekdayShort.format(ms)}, ${time.format(ms)}`;
  return `${dayMonth.format(ms)}, ${time.format(ms)}`;
}

/** A long date and time, for tooltips. @param {number} ms */
export function fullDateTime(ms) {
  return full.format(ms);
}

/** The label of a day separator: "Today", "Yesterday", "Monday", "12 March 2025". @param {number} ms */
export function dayLabel(ms) {
  const n = daysAgo(ms);
  if (n === 0) return 'Today';
  if (n === 1) return 'Yesterday';
  if (n > 1 && n < 7) return weekday.format(ms);
  return fullDate.format(ms);
}

/** The time of the last activity in the conversation list. @param {number} ms */
export function listTime(ms) {
  const n = daysAgo(ms);
  if (n === 0) return time.format(ms);
  if (n === 1) return 'Yesterday';
  if (n > 1 && n < 7) return weekdayShort.format(ms);
  return shortDate.format(ms);
}

/**
 * "last seen …" for someone offline.
 * @param {number | null} ms
 * @param {number} [now]
 */
export function lastSeen(ms, now = Date.now()) {
  if (ms === null) return 'last seen recently';
  const ago = now - ms;
  if (ago < 60_000) return 'last seen just now';
  if (ago < 3_600_000) {
    const m = Math.floor(ago / 60_000);
    return `last seen ${m} ${m === 1 ? 'minute' : 'minutes'} ago`;
  }
  const n = daysAgo(ms);
  if (n === 0) return `last seen today at ${time.format(ms)}`;
  if (n === 1) return `last seen yesterday at ${time.format(ms)}`;
  if (n < 7) return `last seen ${weekday.format(ms)} at ${time.format(ms)}`;
  return `last seen ${dayMonth.format(ms)}`;
}

/**
 * The first line of a text, cut to about `max` characters, for previews.
 * @param {string} text
 * @param {number} [max]
 */
export function snippet(text, max = 90) {
  const line = text.replace(/\s+/gu, ' ').trim();
  const chars = Array.from(line);
  return chars.length > max ? `${chars.slice(0, max - 1).join('')}…` : line;
}

/** UTF-8 length of a string, which is what the server's limits count. @param {string} s */
export function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

/** "3 members". @param {number} n @param {string} one @param {string} [many] */
export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}
