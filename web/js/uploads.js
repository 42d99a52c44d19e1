// Sending files: each attachment becomes a `media` item in the outbox at once (so its bubble
// shows, with progress), and goes through these steps before the outbox may send it:
//
//   preparing  the thumbnail (≤ 8 KiB), blurhash and dimensions of a picture or video, the length
//              of a sound, and the SHA-256 of the bytes;
//   uploading  `POST /v1/media` announces it, the bytes go to the URL it answers with
//              (XMLHttpRequest, for progress events), `POST /v1/media/{id}/complete` checks them;
//   done       `body.media_id` is set and the outbox sends the message with its `client_id`, so
//              a retry never makes a second message.
//
// Where an item is (`upload` in the outbox record, in localStorage) survives a reload, and the
// file itself is kept in IndexedDB until the message is sent, so an interrupted upload carries
// on (after a reload too) and a retry starts from what the server already has: an upload the
// server completed is never sent again. The tab that works on an upload holds a Web Lock named
// after its client_id; another tab of the profile takes over only when that lock is free (the
// tab was closed).
//
// Failures end as the item's `error`: `fatal` ones (too large, the file is gone) only allow
// deleting it, `auto` ones (no network, rate limited) retry by themselves, the rest wait for
// the user's Retry.

import { encode as blurhashEncode } from './blurhash.js';
import { ApiError } from './api.js';
import { cutUtf8, essence, fileSize, toBase64 } from './media.js';

/** @typedef {import('./types.js').OutboxItem} OutboxItem */
/** @typedef {import('./types.js').MessageBody} MessageBody */
/** @typedef {import('./types.js').Upload} Upload */
/** @typedef {import('./state.js').ChatState} ChatState */

/** The largest thumbnail a message may carry, decoded (PROTOCOL.md). */
export const MAX_THUMBNAIL_BYTES = 8 * 1024;
/** The longest file name sent along (the server's limit). */
const MAX_NAME_BYTES = 255;
/** Where the server's upload limit is remembered once it said it (a 413's `max_bytes`). */
const LIMIT_KEY = 'parley.media.max_bytes';
/** Offline: how often to try again even if the browser never says it is back online. */
const OFFLINE_RETRY_MS = 15_000;
/** How often a tab looks for uploads another tab abandoned (it was closed mid-way). */
const ORPHAN_CHECK_MS = 5_000;
/** An upload URL is reused on a retry only if it stays valid at least this long. */
const URL_REUSE_MARGIN_MS = 60_000;
/** Object URLs of files this tab sent, kept so their bubbles show at once; the oldest go. */
const LOCAL_URLS_KEPT = 40;

/** Headers a page may not set (the browser sets them itself); the rest are sent as given. */
const FORBIDDEN_HEADERS = new Set([
  'accept-charset', 'accept-encoding', 'access-control-request-headers', 'access-control-request-method', 'connection',
  'content-length', 'cookie', 'cookie2', 'date', 'dnt', 'expect', 'host', 'keep-alive', 'origin', 'referer',
  'set-cookie', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'via',
]);

/** An upload that failed: what to tell the user and what may be done about it. */
export class UploadError extends Error {
  /**
   * @param {string} message
   * @param {{fatal?: boolean, auto?: boolean, retryInMs?: number, resetMedia?: boolean}} [opts]
   */
  constructor(message, opts = {}) {
    super(message);
    this.name = 'UploadError';
    this.fatal = !!opts.fatal;
    this.auto = !!opts.auto;
    this.retryInMs = opts.retryInMs;
    /** The server no longer has a usable upload: the next attempt announces a new one. */
    this.resetMedia = !!opts.resetMedia;
  }
}

/** A PUT of the bytes that did not succeed. */
class PutError extends Error {
  /** @param {number} status 0: no answer; -1: cancelled */
  constructor(status) {
    super(status === -1 ? 'cancelled' : `PUT failed with ${status}`);
    this.status = status;
  }
}

/**
 * What this tab is doing for one upload.
 * @typedef {object} Job
 * @property {number} loaded bytes sent
 * @property {number} total
 * @property {boolean} cancelled
 * @property {XMLHttpRequest | null} xhr
 */

/**
 * @typedef {object} SendOptions
 * @property {string} [name] the file name (none for a voice message)
 * @property {string} [caption]
 * @property {number} [duration_ms] known already (a recording)
 * @property {number} [reply_to_seq]
 * @property {string[]} [mentions]
 */

export class Uploads {
  /** @param {ChatState} state */
  constructor(state) {
    this.state = state;
    this.outbox = state.outbox;
    /** Files of uploads not sent yet, by client_id (IndexedDB keeps them across reloads). @type {Map<string, Blob>} */
    this.files = new Map();
    /** Uploads this tab is working on. @type {Map<string, Job>} */
    this.jobs = new Map();
    /** Object URLs of files, by client_id, and by media_id once sent. @type {Map<string, string>} */
    this.urls = new Map();
    /** @type {Map<string, string>} */
    this.sentUrls = new Map();
    /** Automatic retries waiting. @type {Map<string, ReturnType<typeof setTimeout>>} */
    this.retryTimers = new Map();
    /** @type {Set<(clientId: string) => void>} */
    this.listeners = new Set();
    this.store = new FileStore(`parley.uploads.${state.me.user_id}`);
    this.stopped = false;
    this.abort = new AbortController();

    this.onOnline = () => this.resume();
    window.addEventListener('online', this.onOnline);
    this.outbox.subscribe(() => this.sweep());
    this.orphanTimer = setInterval(() => this.adoptOrphans(), ORPHAN_CHECK_MS);
    // After a reload: carry on with what this profile was uploading, drop files already sent.
    queueMicrotask(() => {
      this.adoptOrphans();
      this.store
        .keys()
        .then((keys) => {
          const live = new Set(this.outbox.items.map((i) => i.client_id));
          for (const k of keys) if (!live.has(k)) this.store.delete(k);
        })
        .catch(() => {});
    });
  }

  stop() {
    this.stopped = true;
    this.abort.abort();
    window.removeEventListener('online', this.onOnline);
    clearInterval(this.orphanTimer);
    for (const t of this.retryTimers.values()) clearTimeout(t);
    for (const job of this.jobs.values()) {
      job.cancelled = true;
      job.xhr?.abort();
    }
    for (const url of [...this.urls.values(), ...this.sentUrls.values()]) URL.revokeObjectURL(url);
    this.urls.clear();
    this.sentUrls.clear();
    this.listeners.clear();
  }

  /** Forgets every file kept for this account (sign-out). */
  async wipe() {
    this.stop();
    await this.store.destroy().catch(() => {});
  }

  /** @param {(clientId: string) => void} fn called on progress of an upload */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** @param {string} clientId */
  emit(clientId) {
    for (const fn of this.listeners) fn(clientId);
  }

  /** The largest upload the server accepts, once it has said so (a 413). @returns {number | null} */
  limit() {
    const v = Number(localStorage.getItem(LIMIT_KEY));
    return Number.isFinite(v) && v > 0 ? v : null;
  }

  /** @param {number} bytes */
  rememberLimit(bytes) {
    try {
      localStorage.setItem(LIMIT_KEY, String(bytes));
    } catch {
      // Only a convenience.
    }
  }

  /**
   * Where an upload this tab works on is: bytes sent of all, or null when not running here.
   * @param {string} clientId
   */
  progress(clientId) {
    const job = this.jobs.get(clientId);
    return job ? { loaded: job.loaded, total: job.total } : null;
  }

  /**
   * An object URL of an attachment this browser has the file of (its own pending or just sent
   * ones), so its bubble shows the picture at once.
   * @param {string} clientId
   * @param {string} [mediaId]
   * @returns {string | null}
   */
  localUrl(clientId, mediaId) {
    if (mediaId) {
      const sent = this.sentUrls.get(mediaId);
      if (sent) return sent;
    }
    let url = this.urls.get(clientId);
    if (url) return url;
    const file = this.files.get(clientId);
    if (!file) return null;
    url = URL.createObjectURL(file);
    this.urls.set(clientId, url);
    return url;
  }

  /**
   * Queues a file to be sent to a conversation; returns the outbox item (shown at once).
   * @param {string} conversationId
   * @param {Blob} file
   * @param {SendOptions} [opts]
   */
  add(conversationId, file, opts = {}) {
    const clientId = newClientId();
    const type = file.type || 'application/octet-stream';
    /** @type {MessageBody} */
    const body = { content_type: type, size: file.size };
    // The server takes a name of 1 to 255 bytes without control characters.
    const name = opts.name ? cutUtf8(opts.name.replace(/\p{Cc}/gu, ' ').trim(), MAX_NAME_BYTES) : '';
    if (name) body.name = name;
    if (opts.caption) body.caption = opts.caption;
    if (opts.duration_ms) body.duration_ms = Math.round(opts.duration_ms);
    if (opts.reply_to_seq) body.reply_to_seq = opts.reply_to_seq;
    if (opts.mentions && opts.mentions.length) body.mentions = opts.mentions;
    this.files.set(clientId, file);
    this.store.put(clientId, file).catch(() => {});
    /** @type {OutboxItem} */
    const item = {
      client_id: clientId,
      conversation_id: conversationId,
      kind: 'media',
      body,
      created_at: Date.now(),
      upload: { phase: 'preparing' },
    };
    // Hold the lock from the start, so no other tab thinks this upload was abandoned.
    this.run(clientId, () => this.outbox.add(item));
    return item;
  }

  /**
   * Starts (or continues) an upload under its lock; does nothing when another tab has it.
   * @param {string} clientId
   * @param {() => void} [first] run once the lock is held, before the work
   */
  run(clientId, first) {
    if (this.jobs.has(clientId) || this.stopped) return;
    /** @type {Job} */
    const job = { loaded: 0, total: 0, cancelled: false, xhr: null };
    this.jobs.set(clientId, job);
    const work = async () => {
      try {
        first?.();
        await this.pipeline(clientId, job);
      } finally {
        this.jobs.delete(clientId);
        this.emit(clientId);
      }
    };
    if (!navigator.locks) {
      void work();
      return;
    }
    navigator.locks
      .request(lockName(clientId), { ifAvailable: true }, async (lock) => {
        if (lock) await work();
        else this.jobs.delete(clientId); // another tab is on it
      })
      .catch(() => {
        // Locks refused (an odd browser state): work without one.
        if (this.jobs.get(clientId) === job) void work();
      });
  }

  /** Tries a failed upload again, from where it stopped. @param {string} clientId */
  retry(clientId) {
    const item = this.outbox.get(clientId);
    if (!item || item.kind !== 'media' || !item.upload) return;
    clearTimeout(this.retryTimers.get(clientId));
    this.retryTimers.delete(clientId);
    // Uploaded but the send was refused (the upload may be gone): the steps check with the
    // server again (`GET /v1/media/{id}`) and upload only if it no longer has it.
    const phase = item.upload.phase === 'done' ? 'preparing' : item.upload.phase;
    this.outbox.update(clientId, { error: undefined, upload: { ...item.upload, phase, auto: undefined, fatal: undefined } });
    this.run(clientId);
  }

  /** Stops an upload; it stays as a failed message that can be retried or deleted. @param {string} clientId */
  cancel(clientId) {
    const job = this.jobs.get(clientId);
    clearTimeout(this.retryTimers.get(clientId));
    this.retryTimers.delete(clientId);
    if (job) {
      job.cancelled = true;
      job.xhr?.abort();
      return;
    }
    const item = this.outbox.get(clientId);
    if (item && item.upload && item.upload.phase !== 'done') {
      this.outbox.update(clientId, { error: 'Upload cancelled.', upload: { ...item.upload, auto: undefined } });
    }
  }

  /** Deletes a media message that was not sent: stops its upload, drops the server's copy. @param {string} clientId */
  discard(clientId) {
    const item = this.outbox.get(clientId);
    const job = this.jobs.get(clientId);
    if (job) {
      job.cancelled = true;
      job.xhr?.abort();
    }
    clearTimeout(this.retryTimers.get(clientId));
    this.retryTimers.delete(clientId);
    this.outbox.remove(clientId);
    this.forgetFile(clientId);
    // The server keeps an unreferenced upload a day; say we do not need it. (A message already
    // sent by another tab references it, and the server then refuses: nothing lost.)
    const mediaId = item?.upload?.media_id;
    if (mediaId) this.state.api.deleteMedia(mediaId).catch(() => {});
  }

  /** The connection is back: retries every upload waiting for the network, takes over abandoned ones. */
  resume() {
    for (const item of this.outbox.items) {
      if (item.kind === 'media' && item.upload?.auto && item.error) this.retry(item.client_id);
    }
    this.adoptOrphans();
  }

  /** After the outbox changed (here or in another tab): files of sent messages go. */
  sweep() {
    const live = new Map(this.outbox.items.map((i) => [i.client_id, i]));
    for (const clientId of Array.from(this.files.keys())) {
      if (live.has(clientId) || this.jobs.has(clientId)) continue;
      this.forgetFile(clientId);
    }
  }

  /** @param {string} clientId */
  forgetFile(clientId) {
    this.files.delete(clientId);
    this.store.delete(clientId).catch(() => {});
    const url = this.urls.get(clientId);
    if (url) {
      this.urls.delete(clientId);
      // A sent picture keeps its URL under its media id (see `finish`); others go.
      if (!Array.from(this.sentUrls.values()).includes(url)) URL.revokeObjectURL(url);
    }
  }

  /** Takes over uploads whose tab is gone (closed mid-way, or this is a reload). */
  adoptOrphans() {
    if (this.stopped) return;
    for (const item of this.outbox.items) {
      if (item.kind !== 'media' || !item.upload || item.upload.phase === 'done' || item.error) continue;
      if (this.jobs.has(item.client_id)) continue;
      this.run(item.client_id);
    }
  }

  /**
   * The steps of one upload, from wherever the item is.
   * @param {string} clientId @param {Job} job
   */
  async pipeline(clientId, job) {
    // Fresh from storage: another tab may have finished or given up on it a moment ago.
    let item = this.outbox.load().find((i) => i.client_id === clientId);
    if (!item || item.kind !== 'media' || !item.upload || item.upload.phase === 'done' || item.error) return;
    try {
      /** @param {Partial<Upload>} patch @param {Partial<MessageBody>} [body] */
      const save = (patch, body) => {
        const cur = /** @type {OutboxItem} */ (this.outbox.get(clientId) ?? item);
        item = { ...cur, upload: { .../** @type {Upload} */ (cur.upload), ...patch }, body: body ? { ...cur.body, ...body } : cur.body };
        this.outbox.update(clientId, { upload: item.upload, body: item.body });
      };
      const check = () => {
        if (job.cancelled) throw new PutError(-1);
        if (!this.outbox.get(clientId)) throw new PutError(-1);
      };
      const upload = () => /** @type {Upload} */ (/** @type {OutboxItem} */ (item).upload);

      let file = this.files.get(clientId) ?? (await this.store.get(clientId).catch(() => null)) ?? null;
      if (file) this.files.set(clientId, file);
      job.total = file ? file.size : item.body.size ?? 0;
      this.emit(clientId);

      // What the server has from an earlier attempt: when it is complete, the message can go
      // without the file (it may be gone from here).
      const earlier = upload().media_id;
      if (earlier) {
        const known = await this.state.api.media(earlier).catch((e) => {
          if (e instanceof ApiError && (e.status === 404 || e.status === 403)) return null;
          throw e;
        });
        check();
        if (known && known.media.state === 'ready') {
          this.finish(clientId, earlier, file);
          return;
        }
        const stillValid = known && upload().url && (upload().expires_at ?? 0) - URL_REUSE_MARGIN_MS > this.state.now();
        if (known && known.upload && known.upload.url) {
          // Still pending on the server, with a fresh URL to PUT to: the same upload goes on.
          save({ url: known.upload.url, headers: known.upload.headers || {}, expires_at: known.upload.expires_at });
        } else if (!stillValid) {
          if (known) this.state.api.deleteMedia(earlier).catch(() => {});
          save({ media_id: undefined, url: undefined, headers: undefined, expires_at: undefined });
        }
      }

      if (!file) throw new UploadError('The file is no longer available here. Attach it again.', { fatal: true });
      const limit = this.limit();
      if (limit !== null && file.size > limit) throw tooLarge(file.size, limit);

      if (!upload().described) {
        const meta = await describe(file, item.body.content_type || file.type);
        check();
        /** @type {Partial<MessageBody>} */
        const body = { ...meta };
        if (item.body.duration_ms) delete body.duration_ms;
        save({ described: true }, body);
      }
      if (!upload().sha256) {
        const sha256 = await sha256Base64(file);
        check();
        save({ sha256 });
      }
      if (!upload().media_id) {
        const created = await this.state.api.createMedia({
          size: file.size,
          content_type: /** @type {string} */ (item.body.content_type),
          sha256: /** @type {string} */ (upload().sha256),
        });
        check();
        save({
          media_id: created.media_id,
          url: created.upload.url,
          headers: created.upload.headers || {},
          expires_at: created.upload.expires_at,
        });
      }

      save({ phase: 'uploading' });
      const target = upload();
      await put(/** @type {string} */ (target.url), target.headers || {}, file, job, () => this.emit(clientId));
      check();
      try {
        await this.state.api.completeMedia(/** @type {string} */ (target.media_id));
      } catch (e) {
        if (e instanceof ApiError && e.status === 400) {
          throw new UploadError('The file did not arrive intact. Try again.', { resetMedia: true });
        }
        throw e;
      }
      this.finish(clientId, /** @type {string} */ (target.media_id), file);
    } catch (e) {
      this.fail(clientId, job, e);
    }
  }

  /**
   * The server has the bytes: the message may go.
   * @param {string} clientId @param {string} mediaId @param {Blob | null} file
   */
  finish(clientId, mediaId, file) {
    const cur = this.outbox.get(clientId);
    if (!cur || !cur.upload) return;
    // Keep a picture's local copy under its media id, so the sent bubble needs no download.
    const url = this.urls.get(clientId) ?? (file && /^(image|video|audio)\//u.test(file.type) ? URL.createObjectURL(file) : null);
    if (url) {
      this.urls.set(clientId, url);
      this.sentUrls.set(mediaId, url);
      while (this.sentUrls.size > LOCAL_URLS_KEPT) {
        const [oldest, old] = /** @type {[string, string]} */ (this.sentUrls.entries().next().value);
        this.sentUrls.delete(oldest);
        if (!Array.from(this.urls.values()).includes(old)) URL.revokeObjectURL(old);
      }
    }
    this.outbox.update(clientId, {
      error: undefined,
      upload: { ...cur.upload, phase: 'done', media_id: mediaId, url: undefined, headers: undefined, auto: undefined },
      body: { ...cur.body, media_id: mediaId },
    });
  }

  /**
   * Records why an upload stopped, and schedules the retry of one that heals by itself.
   * @param {string} clientId @param {Job} job @param {unknown} e
   */
  fail(clientId, job, e) {
    const cur = this.outbox.get(clientId);
    if (!cur || !cur.upload || this.stopped) return;
    const err = job.cancelled ? new UploadError('Upload cancelled.') : this.explain(e, cur);
    /** @type {Upload} */
    const upload = { ...cur.upload, fatal: err.fatal || undefined, auto: err.auto || undefined };
    if (upload.phase === 'uploading') upload.phase = 'preparing';
    if (err.resetMedia) {
      upload.media_id = undefined;
      upload.url = undefined;
      upload.headers = undefined;
      upload.expires_at = undefined;
    }
    this.outbox.update(clientId, { error: err.message, upload });
    if (err.auto) {
      const wait = err.retryInMs ?? OFFLINE_RETRY_MS;
      clearTimeout(this.retryTimers.get(clientId));
      this.retryTimers.set(
        clientId,
        setTimeout(() => {
          this.retryTimers.delete(clientId);
          const now = this.outbox.get(clientId);
          if (now && now.error && now.upload?.auto) this.retry(clientId);
        }, wait),
      );
    }
  }

  /**
   * What a failure means to the user.
   * @param {unknown} e @param {OutboxItem} item
   * @returns {UploadError}
   */
  explain(e, item) {
    if (e instanceof UploadError) return e;
    const size = item.body.size ?? 0;
    if (e instanceof ApiError) {
      if (e.status === 413 || e.code === 'payload_too_large') {
        if (e.maxBytes) this.rememberLimit(e.maxBytes);
        return e.maxBytes ? tooLarge(size, e.maxBytes) : new UploadError(`The file is too large to send (${fileSize(size)}).`, { fatal: true });
      }
      if (e.status === 429) {
        const wait = Math.max(1_000, e.retryAfterMs ?? 5_000);
        return new UploadError(`Too many uploads right now. Trying again in ${Math.ceil(wait / 1000)} s.`, { auto: true, retryInMs: wait });
      }
      if (e.network) return new UploadError('No connection. The upload continues when you are back online.', { auto: true });
      if (e.status === 503 || e.status >= 500) return new UploadError('The server could not take the file right now. Trying again shortly.', { auto: true, retryInMs: 10_000 });
      return new UploadError(e.message || 'The upload failed.');
    }
    if (e instanceof PutError) {
      if (e.status === 0) return new UploadError('No connection. The upload continues when you are back online.', { auto: true });
      if (e.status === 413) return new UploadError(`The file is too large to send (${fileSize(size)}).`, { fatal: true });
      // An expired or refused upload URL: the next attempt asks for a new one.
      if (e.status === 403 || e.status === 400 || e.status === 404) {
        return new UploadError(`The upload was refused (HTTP ${e.status}). Try again.`, { resetMedia: true });
      }
      return new UploadError(`The upload failed (HTTP ${e.status}). Try again.`, { auto: e.status >= 500, retryInMs: 10_000 });
    }
    console.warn('parley: upload failed', e);
    return new UploadError('The upload failed. Try again.');
  }
}

/** @param {number} size @param {number} limit */
function tooLarge(size, limit) {
  return new UploadError(`The file is too large to send (${fileSize(size)}). The limit is ${fileSize(limit)}.`, { fatal: true });
}

/** @param {string} clientId */
function lockName(clientId) {
  return `parley.upload.${clientId}`;
}

/** A fresh client_id (as state.js makes them). */
function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/**
 * PUTs the bytes with exactly the headers the server gave (but those a page may not set, such
 * as `content-length`, which the browser sets itself), reporting progress.
 * @param {string} url @param {Record<string, string>} headers @param {Blob} file @param {Job} job
 * @param {() => void} onProgress
 * @returns {Promise<void>}
 */
function put(url, headers, file, job, onProgress) {
  return new Promise((resolve, reject) => {
    if (job.cancelled) {
      reject(new PutError(-1));
      return;
    }
    const xhr = new XMLHttpRequest();
    job.xhr = xhr;
    xhr.open('PUT', url);
    let typed = false;
    for (const [name, value] of Object.entries(headers)) {
      const n = name.toLowerCase();
      if (FORBIDDEN_HEADERS.has(n) || n.startsWith('proxy-') || n.startsWith('sec-')) continue;
      if (n === 'content-type') typed = true;
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (e) => {
      job.loaded = e.loaded;
      if (e.lengthComputable) job.total = e.total;
      onProgress();
    };
    xhr.onload = () => {
      job.xhr = null;
      if (xhr.status >= 200 && xhr.status < 300) {
        job.loaded = job.total;
        onProgress();
        resolve();
      } else reject(new PutError(xhr.status));
    };
    xhr.onerror = () => {
      job.xhr = null;
      reject(new PutError(0));
    };
    xhr.onabort = () => {
      job.xhr = null;
      reject(new PutError(-1));
    };
    // Without a `content-type` from the server, send none (a Blob's own type would add one).
    xhr.send(typed ? file : file.slice(0, file.size, ''));
  });
}

// ------------------------------------------------------------------------------------------
// Describing a file: dimensions, duration, thumbnail, blurhash
// ------------------------------------------------------------------------------------------

/**
 * What a media body says about a file besides its type and size; whatever cannot be worked out
 * (an image the browser cannot decode, a video it cannot play) is left out.
 * @param {Blob} file @param {string} type
 * @returns {Promise<Partial<MessageBody>>}
 */
export async function describe(file, type) {
  const kind = essence(type);
  try {
    if (kind.startsWith('image/') && kind !== 'image/svg+xml') return await describeImage(file);
    if (kind.startsWith('video/')) return await withTimeout(describeVideo(file), 15_000);
    if (kind.startsWith('audio/')) return await withTimeout(describeAudio(file), 10_000);
  } catch {
    // Sent without a preview.
  }
  return {};
}

/** @template T @param {Promise<T>} p @param {number} ms @returns {Promise<T>} */
function withTimeout(p, ms) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timed out')), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/** @param {Blob} file */
async function describeImage(file) {
  const bitmap = await createImageBitmap(file);
  try {
    return { width: bitmap.width, height: bitmap.height, ...(await preview(bitmap, bitmap.width, bitmap.height)) };
  } finally {
    bitmap.close();
  }
}

/** @param {Blob} file */
async function describeVideo(file) {
  const url = URL.createObjectURL(file);
  const video = document.createElement('video');
  video.muted = true;
  video.preload = 'auto';
  video.playsInline = true;
  try {
    video.src = url;
    await once(video, 'loadedmetadata');
    const length = await mediaLength(video);
    /** @type {Partial<MessageBody>} */
    const out = {};
    if (video.videoWidth && video.videoHeight) {
      out.width = video.videoWidth;
      out.height = video.videoHeight;
    }
    if (length) out.duration_ms = Math.round(length * 1000);
    if (out.width && out.height) {
      // A frame a little in (the very first is often black).
      const at = length ? Math.min(1, length / 4) : 0;
      if (at > 0) {
        video.currentTime = at;
        await once(video, 'seeked');
      } else if (video.readyState < 2) {
        await once(video, 'loadeddata');
      }
      const bitmap = await createImageBitmap(video);
      try {
        Object.assign(out, await preview(bitmap, out.width, out.height));
      } finally {
        bitmap.close();
      }
    }
    return out;
  } finally {
    video.removeAttribute('src');
    video.load();
    URL.revokeObjectURL(url);
  }
}

/** @param {Blob} file */
async function describeAudio(file) {
  const url = URL.createObjectURL(file);
  const audio = document.createElement('audio');
  audio.preload = 'metadata';
  try {
    audio.src = url;
    await once(audio, 'loadedmetadata');
    const length = await mediaLength(audio);
    return length ? { duration_ms: Math.round(length * 1000) } : {};
  } finally {
    audio.removeAttribute('src');
    audio.load();
    URL.revokeObjectURL(url);
  }
}

/**
 * How long a loaded video or sound is, in seconds (0 when unknown). A WebM straight from a
 * MediaRecorder does not say: seeking far past the end makes the browser find out.
 * @param {HTMLMediaElement} el
 */
async function mediaLength(el) {
  if (Number.isFinite(el.duration)) return el.duration > 0 ? el.duration : 0;
  if (el.duration !== Infinity) return 0;
  await withTimeout(
    new Promise((resolve) => {
      const done = () => {
        if (!Number.isFinite(el.duration)) return;
        el.removeEventListener('durationchange', done);
        resolve(undefined);
      };
      el.addEventListener('durationchange', done);
      el.currentTime = 1e101;
    }),
    5_000,
  ).catch(() => {});
  const length = Number.isFinite(el.duration) && el.duration > 0 ? el.duration : 0;
  const back = new Promise((resolve) => el.addEventListener('seeked', resolve, { once: true }));
  el.currentTime = 0;
  await withTimeout(back, 2_000).catch(() => {});
  return length;
}

/**
 * Resolves on `event`, rejects on `error`.
 * @param {HTMLMediaElement} el @param {string} event
 * @returns {Promise<void>}
 */
function once(el, event) {
  return new Promise((resolve, reject) => {
    const ok = () => {
      el.removeEventListener('error', bad);
      resolve();
    };
    const bad = () => {
      el.removeEventListener(event, ok);
      reject(new Error('media error'));
    };
    el.addEventListener(event, ok, { once: true });
    el.addEventListener('error', bad, { once: true });
  });
}

/**
 * The thumbnail (WebP, or JPEG where the browser cannot write WebP, ≤ 8 KiB: the longest side
 * 96 px, smaller and lower quality until it fits) and blurhash of a picture.
 * @param {CanvasImageSource} source @param {number} width @param {number} height
 * @returns {Promise<{thumbnail?: string, blurhash?: string}>}
 */
export async function preview(source, width, height) {
  /** @type {{thumbnail?: string, blurhash?: string}} */
  const out = {};
  try {
    const small = scaled(source, width, height, 32);
    const ctx = /** @type {CanvasRenderingContext2D} */ (small.getContext('2d'));
    const data = ctx.getImageData(0, 0, small.width, small.height).data;
    const landscape = width >= height;
    out.blurhash = blurhashEncode(data, small.width, small.height, landscape ? 4 : 3, landscape ? 3 : 4);
  } catch {
    // No blurhash: the thumbnail alone.
  }
  for (const side of [96, 80, 64, 48]) {
    const canvas = scaled(source, width, height, side);
    for (const quality of [0.72, 0.55, 0.4, 0.28]) {
      let blob = await toBlob(canvas, 'image/webp', quality);
      if (!blob || blob.type !== 'image/webp') {
        const flat = scaled(source, width, height, side, '#ffffff');
        blob = await toBlob(flat, 'image/jpeg', quality);
      }
      if (blob && blob.size <= MAX_THUMBNAIL_BYTES) {
        out.thumbnail = toBase64(new Uint8Array(await blob.arrayBuffer()));
        return out;
      }
    }
  }
  return out;
}

/**
 * `source` drawn with its longest side `side` px (never enlarged).
 * @param {CanvasImageSource} source @param {number} width @param {number} height @param {number} side
 * @param {string} [background] painted first (JPEG has no transparency)
 */
function scaled(source, width, height, side, background) {
  const f = Math.min(1, side / Math.max(width, height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(1, Math.round(width * f));
  canvas.height = Math.max(1, Math.round(height * f));
  const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d', { willReadFrequently: true }));
  if (background) {
    ctx.fillStyle = background;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  return canvas;
}

/** @param {HTMLCanvasElement} canvas @param {string} type @param {number} quality @returns {Promise<Blob | null>} */
function toBlob(canvas, type, quality) {
  return new Promise((resolve) => canvas.toBlob(resolve, type, quality));
}

// ------------------------------------------------------------------------------------------
// SHA-256
// ------------------------------------------------------------------------------------------

/** The SHA-256 of a file, standard base64 (Web Crypto; a script fallback where it is missing: plain http). @param {Blob} file */
export async function sha256Base64(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (crypto.subtle) return toBase64(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
  return toBase64(sha256(bytes));
}

/** @type {Uint32Array | null} */
let K = null;

/**
 * SHA-256 in script (FIPS 180-4), for pages without Web Crypto (it needs a secure context).
 * @param {Uint8Array} data
 * @returns {Uint8Array}
 */
export function sha256(data) {
  if (!K) {
    K = new Uint32Array(64);
    for (let n = 2, i = 0; i < 64; n++) {
      let prime = true;
      for (let d = 2; d * d <= n; d++) if (n % d === 0) prime = false;
      if (prime) K[i++] = ((Math.cbrt(n) % 1) * 2 ** 32) >>> 0;
    }
  }
  const k = K;
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const len = data.length;
  const blocks = Math.ceil((len + 9) / 64);
  const buf = new Uint8Array(blocks * 64);
  buf.set(data);
  buf[len] = 0x80;
  const view = new DataView(buf.buffer);
  view.setUint32(buf.length - 8, Math.floor(len / 2 ** 29));
  view.setUint32(buf.length - 4, (len << 3) >>> 0);
  const w = new Uint32Array(64);
  for (let b = 0; b < blocks; b++) {
    for (let t = 0; t < 16; t++) w[t] = view.getUint32(b * 64 + t * 4);
    for (let t = 16; t < 64; t++) {
      const x = w[t - 15];
      const y = w[t - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) >>> 0;
    }
    let [a, bb, c, d, e, f, g, hh] = h;
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + k[t] + w[t]) >>> 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & bb) ^ (a & c) ^ (bb & c);
      const t2 = (S0 + maj) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = bb;
      bb = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) ov.setUint32(i * 4, h[i]);
  return out;
}

// ------------------------------------------------------------------------------------------
// IndexedDB: the files of uploads not sent yet
// ------------------------------------------------------------------------------------------

/** Files by client_id in one IndexedDB database; every failure is the caller's to ignore. */
class FileStore {
  /** @param {string} name */
  constructor(name) {
    this.name = name;
    /** @type {Promise<IDBDatabase> | null} */
    this.db = null;
  }

  /** @returns {Promise<IDBDatabase>} */
  open() {
    if (!this.db) {
      this.db = new Promise((resolve, reject) => {
        if (!('indexedDB' in window)) {
          reject(new Error('no IndexedDB'));
          return;
        }
        const req = indexedDB.open(this.name, 1);
        req.onupgradeneeded = () => req.result.createObjectStore('files');
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
        req.onblocked = () => reject(new Error('IndexedDB blocked'));
      });
      this.db.catch(() => {
        this.db = null;
      });
    }
    return this.db;
  }

  /**
   * @template T
   * @param {IDBTransactionMode} mode
   * @param {(store: IDBObjectStore) => IDBRequest<T>} fn
   * @returns {Promise<T>}
   */
  async tx(mode, fn) {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const t = db.transaction('files', mode);
      const req = fn(t.objectStore('files'));
      t.oncomplete = () => resolve(req.result);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  }

  /** @param {string} key @param {Blob} blob */
  put(key, blob) {
    return this.tx('readwrite', (s) => s.put(blob, key));
  }

  /** @param {string} key @returns {Promise<Blob | null>} */
  async get(key) {
    const v = await this.tx('readonly', (s) => s.get(key));
    return v instanceof Blob ? v : null;
  }

  /** @param {string} key */
  delete(key) {
    return this.tx('readwrite', (s) => s.delete(key));
  }

  /** @returns {Promise<string[]>} */
  async keys() {
    const keys = await this.tx('readonly', (s) => s.getAllKeys());
    return keys.map(String);
  }

  async destroy() {
    const db = await this.open().catch(() => null);
    db?.close();
    this.db = null;
    await new Promise((resolve) => {
      const req = indexedDB.deleteDatabase(this.name);
      req.onsuccess = req.onerror = req.onblocked = () => resolve(undefined);
    });
  }
}
