// Media messages without the page: what kind of attachment a body is, how it is named in a
// preview ("📷 Photo", "🎤 Voice message 0:07"), sizes and durations as people read them, and
// the short-lived download URLs (`GET /v1/media/{id}`), cached until shortly before they expire.

/** @typedef {import('./types.js').MessageBody} MessageBody */
/** @typedef {import('./api.js').Api} Api */

/** Pictures every browser shows inline (anything else is a file to download). */
const INLINE_IMAGES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/avif', 'image/bmp', 'image/apng']);
/** Videos and sounds a browser may play (checked with `canPlayType` where it matters). */
const PLAYABLE_VIDEO = /^video\/(mp4|webm|ogg|quicktime)$/u;

/**
 * The kind of an attachment: `image` and `video` shown inline, `voice` (a recording, with no file
 * name) and `audio` with a player, `file` for everything else.
 * @typedef {'image' | 'video' | 'voice' | 'audio' | 'file'} MediaKind
 */

/** The MIME type without parameters, lower case ("audio/webm; codecs=opus" → "audio/webm"). @param {string | undefined} type */
export function essence(type) {
  return (type || '').split(';')[0].trim().toLowerCase();
}

/**
 * What kind of attachment a media body is.
 * @param {MessageBody} body
 * @returns {MediaKind}
 */
export function mediaKind(body) {
  const type = essence(body.content_type);
  if (INLINE_IMAGES.has(type)) return 'image';
  if (PLAYABLE_VIDEO.test(type)) return 'video';
  if (type.startsWith('audio/')) return body.name ? 'audio' : 'voice';
  return 'file';
}

/**
 * The short description of a media message, for the conversation list, replies and
 * notifications: its caption after an emoji, or what it is.
 * @param {MessageBody} body
 */
export function mediaLabel(body) {
  const kind = mediaKind(body);
  const caption = (body.caption || '').trim();
  switch (kind) {
    case 'image':
      return `📷 ${caption || (essence(body.content_type) === 'image/gif' ? 'GIF' : 'Photo')}`;
    case 'video':
      return `🎥 ${caption || 'Video'}`;
    case 'voice':
      return `🎤 ${caption || `Voice message${body.duration_ms ? ` (${duration(body.duration_ms)})` : ''}`}`;
    case 'audio':
      return `🎵 ${caption || body.name || 'Audio'}`;
    default:
      return `📎 ${caption || body.name || 'File'}`;
  }
}

/**
 * "850 B", "12 KB", "1.5 MB", "2 GB" (1 KB = 1,024 bytes, as file managers count).
 * @param {number} bytes
 */
export function fileSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = bytes / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const digits = v < 10 && Math.round(v * 10) % 10 !== 0 ? 1 : 0;
  return `${v.toFixed(digits)} ${units[u]}`;
}

/**
 * "0:07", "12:30", "1:02:03".
 * @param {number} ms
 */
export function duration(ms) {
  const total = Math.max(0, Math.round((Number.isFinite(ms) ? ms : 0) / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** What a file's name ends with, for its icon ("PDF"); empty when nothing sensible. @param {string} name */
export function extension(name) {
  const m = /\.([a-z0-9]{1,5})$/iu.exec(name);
  return m ? m[1].toUpperCase() : '';
}

/** A file name for an attachment that has none, from its type ("photo.jpg", "voice-message.webm"). @param {MessageBody} body @param {number} ts */
export function fallbackName(body, ts) {
  const type = essence(body.content_type);
  const sub = type.split('/')[1] || 'bin';
  const ext = { jpeg: 'jpg', 'svg+xml': 'svg', quicktime: 'mov', 'x-matroska': 'mkv', mpeg: type.startsWith('audio/') ? 'mp3' : 'mpg' }[sub] || sub.replace(/[^a-z0-9]/gu, '') || 'bin';
  const d = new Date(ts);
  const stamp = `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  const kind = mediaKind(body);
  const base = kind === 'image' ? 'photo' : kind === 'video' ? 'video' : kind === 'voice' ? 'voice-message' : 'file';
  return `${base}-${stamp}.${ext}`;
}

/** The MIME type of a base64 thumbnail, from its first bytes (JPEG, WebP or PNG). @param {string} b64 */
export function thumbnailType(b64) {
  if (b64.startsWith('/9j/')) return 'image/jpeg';
  if (b64.startsWith('UklGR')) return 'image/webp';
  if (b64.startsWith('iVBOR')) return 'image/png';
  return null;
}

/** Standard base64 of bytes. @param {Uint8Array} bytes */
export function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Cuts a string to at most `max` UTF-8 bytes without splitting a character. @param {string} s @param {number} max */
export function cutUtf8(s, max) {
  const enc = new TextEncoder();
  if (enc.encode(s).length <= max) return s;
  let out = '';
  let n = 0;
  for (const ch of s) {
    const len = enc.encode(ch).length;
    if (n + len > max) break;
    out += ch;
    n += len;
  }
  return out;
}

/**
 * @typedef {object} Download
 * @property {string} url absolute, short-lived
 * @property {number} expiresAt server ms
 */

/** A download URL is used until this long before it expires (a video may take a while). */
const URL_MARGIN_MS = 90_000;

/**
 * Download URLs of media, fetched when first needed and kept until shortly before they expire;
 * concurrent askers share one request.
 */
export class MediaUrls {
  /**
   * @param {Api} api
   * @param {() => number} now the server's clock
   */
  constructor(api, now) {
    this.api = api;
    this.now = now;
    /** @type {Map<string, Download>} */
    this.cache = new Map();
    /** @type {Map<string, Promise<Download>>} */
    this.inflight = new Map();
  }

  /**
   * A download URL for a media id; rejects with the API's error (404: gone or not ours to see).
   * @param {string} mediaId
   * @returns {Promise<Download>}
   */
  get(mediaId) {
    const cached = this.cache.get(mediaId);
    if (cached && cached.expiresAt - URL_MARGIN_MS > this.now()) return Promise.resolve(cached);
    let p = this.inflight.get(mediaId);
    if (!p) {
      p = this.api
        .media(mediaId)
        .then((r) => {
          const d = { url: r.download.url, expiresAt: r.download.expires_at };
          this.cache.set(mediaId, d);
          return d;
        })
        .finally(() => this.inflight.delete(mediaId));
      this.inflight.set(mediaId, p);
    }
    return p;
  }

  /** Forgets a URL that stopped working (expired early, refused). @param {string} mediaId */
  drop(mediaId) {
    this.cache.delete(mediaId);
  }
}
