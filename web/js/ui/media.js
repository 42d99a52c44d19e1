// Media in the message list: pictures and videos inline (the blurhash first, painted on a
// canvas, then the thumbnail the message carries, then the file itself once the bubble comes
// near the screen), voice messages and sounds with a player (a scrubber bound to the position),
// other files as a card that downloads with the file's name, and the full-screen viewer for
// pictures. Upload progress, with a cancel, is drawn over the sender's own pending bubbles.
//
// Files are fetched from short-lived URLs (`GET /v1/media/{id}`, cached by state.mediaUrls);
// an element whose URL expired while it was open asks for a new one and carries on.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { fullDateTime } from '../format.js';
import { decode as decodeBlurhash, isValid as validBlurhash } from '../blurhash.js';
import { duration, essence, extension, fallbackName, fileSize, mediaKind, thumbnailType } from '../media.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../state.js').Bubble} Bubble */
/** @typedef {import('../types.js').MessageBody} MessageBody */
/** @typedef {import('../types.js').OutboxItem} OutboxItem */

/**
 * A picture the viewer can show: a bubble's media and who sent it when.
 * @typedef {object} Viewable
 * @property {MessageBody} body
 * @property {string} senderId
 * @property {number} ts
 * @property {string | null} clientId
 */

/** The largest a picture or video is drawn in a bubble (CSS px); smaller screens shrink it. */
const TILE_MAX_W = 300;
const TILE_MAX_H = 340;
const TILE_MIN_W = 150;
/** Bubbles start loading their file this far before they scroll into view. */
const LAZY_MARGIN = '400px 0px';

// ------------------------------------------------------------------------------------------
// Loading when near the screen
// ------------------------------------------------------------------------------------------

/** @type {WeakMap<Element, () => void>} */
const onVisible = new WeakMap();
/** @type {IntersectionObserver | null} */
let lazyObserver = null;

/**
 * Runs `fn` once, when `el` comes within the margin of the screen (scroll containers clip it:
 * an element of a scrolled-away message is not visible).
 * @param {Element} el @param {() => void} fn
 */
function whenNear(el, fn) {
  if (!lazyObserver) {
    lazyObserver = new IntersectionObserver(
      (entries) => {
        for (const e of entries) {
          if (!e.isIntersecting) continue;
          const run = onVisible.get(e.target);
          onVisible.delete(e.target);
          /** @type {IntersectionObserver} */ (lazyObserver).unobserve(e.target);
          run?.();
        }
      },
      { rootMargin: LAZY_MARGIN },
    );
  }
  onVisible.set(el, fn);
  lazyObserver.observe(el);
}

// ------------------------------------------------------------------------------------------
// Upload progress
// ------------------------------------------------------------------------------------------

/** Redrawers of progress views, by client_id. @type {Map<string, Set<() => boolean>>} */
const progressViews = new Map();
/** @type {WeakSet<ChatState>} */
const watchedStates = new WeakSet();

/**
 * Calls `draw` whenever the upload of `clientId` moves (progress, a phase, an error), until it
 * returns false (its element left the page).
 * @param {ChatState} state @param {string} clientId @param {() => boolean} draw
 */
function watchUpload(state, clientId, draw) {
  if (!watchedStates.has(state)) {
    watchedStates.add(state);
    /** @param {string} id */
    const redraw = (id) => {
      const views = progressViews.get(id);
      if (!views) return;
      for (const fn of views) if (!fn()) views.delete(fn);
      if (!views.size) progressViews.delete(id);
    };
    state.uploads.subscribe(redraw);
    state.outbox.subscribe(() => {
      for (const id of Array.from(progressViews.keys())) redraw(id);
    });
  }
  let set = progressViews.get(clientId);
  if (!set) progressViews.set(clientId, (set = new Set()));
  set.add(draw);
}

/**
 * The progress of an own attachment not sent yet: a ring with the share sent and a cancel
 * button (or, once failed, a retry button), and a line of text ("1.2 MB of 3.4 MB").
 * @param {ChatState} state @param {string} clientId @param {'ring' | 'bar'} style
 */
function uploadProgress(state, clientId, style) {
  const arc = document.createElementNS('http://www.w3.org/2000/svg', 'circle');
  arc.setAttribute('class', 'ring-arc');
  arc.setAttribute('cx', '24');
  arc.setAttribute('cy', '24');
  arc.setAttribute('r', '21');
  arc.setAttribute('pathLength', '100');
  const track = document.createElementNS('http://www.w3.org/2000/svg', 'circle');
  track.setAttribute('class', 'ring-track');
  track.setAttribute('cx', '24');
  track.setAttribute('cy', '24');
  track.setAttribute('r', '21');
  const ring = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  ring.setAttribute('viewBox', '0 0 48 48');
  ring.setAttribute('class', 'ring');
  ring.setAttribute('aria-hidden', 'true');
  ring.append(track, arc);
  const cancel = h(
    'button',
    { class: 'upload-cancel', attrs: { type: 'button', 'aria-label': 'Cancel upload', title: 'Cancel upload' }, on: { click: (e) => { e.stopPropagation(); state.uploads.cancel(clientId); } } },
    ring,
    icon('close'),
  );
  const retry = h(
    'button',
    { class: 'upload-retry', attrs: { type: 'button', 'aria-label': 'Retry upload', title: 'Retry upload', hidden: true }, on: { click: (e) => { e.stopPropagation(); state.retry(clientId); } } },
    icon('upload'),
  );
  const label = h('span', { class: 'upload-label' });
  const bar = h('progress', { class: 'upload-bar', attrs: { max: 100, 'aria-label': 'Upload progress' } });
  const el = h('div', { class: `upload-progress ${style}`, data: { clientId } }, cancel, retry, style === 'bar' ? bar : null, label);
  let seen = false;
  const draw = () => {
    if (el.isConnected) seen = true;
    else if (seen) return false;
    const item = state.outbox.get(clientId);
    if (!item || !item.upload || item.upload.phase === 'done') {
      el.hidden = true;
      return !!item;
    }
    el.hidden = false;
    const p = state.uploads.progress(clientId);
    const failed = !!item.error;
    cancel.hidden = failed;
    retry.hidden = !failed || !!item.upload.fatal;
    const total = p?.total || item.body.size || 0;
    if (failed) {
      label.textContent = fileSize(total);
      el.classList.remove('busy');
    } else if (p && item.upload.phase === 'uploading') {
      const share = total ? Math.min(1, p.loaded / total) : 0;
      arc.style.strokeDashoffset = String(100 - Math.max(2, share * 100));
      bar.value = share * 100;
      label.textContent = `${fileSize(p.loaded)} of ${fileSize(total)}`;
      el.classList.remove('busy');
    } else {
      // Preparing (thumbnail, hashing), or running in another tab.
      arc.style.strokeDashoffset = '75';
      bar.removeAttribute('value');
      label.textContent = p ? `Preparing… ${fileSize(total)}` : `Sending… ${fileSize(total)}`;
      el.classList.add('busy');
    }
    el.dataset.phase = failed ? 'failed' : item.upload.phase;
    return true;
  };
  draw();
  watchUpload(state, clientId, draw);
  return el;
}

// ------------------------------------------------------------------------------------------
// A media bubble
// ------------------------------------------------------------------------------------------

/**
 * What a bubble of a media message shows above its caption.
 * @param {ChatState} state
 * @param {Bubble} b
 * @param {(b: Bubble) => void} openViewer
 * @returns {HTMLElement}
 */
export function mediaContent(state, b, openViewer) {
  const body = /** @type {MessageBody} */ (b.media);
  const kind = mediaKind(body);
  const pending = b.pending && b.pending.upload && b.pending.upload.phase !== 'done' ? b.pending : null;
  if (kind === 'image') return imageTile(state, b, body, pending, openViewer);
  if (kind === 'video' && canPlay('video', body.content_type)) return videoTile(state, b, body, pending);
  if ((kind === 'voice' || kind === 'audio') && canPlay('audio', body.content_type)) return audioPlayer(state, b, body, pending, kind);
  return fileCard(state, b, body, pending);
}

/** Whether this browser may play a type (it says "maybe" for most it can). @param {'audio' | 'video'} tag @param {string | undefined} type */
function canPlay(tag, type) {
  const el = document.createElement(tag);
  return el.canPlayType(type || '') !== '' || el.canPlayType(essence(type)) !== '';
}

/**
 * The size a picture or video is drawn at: its aspect ratio (bounded), at most 300 × 340.
 * @param {HTMLElement} el @param {MessageBody} body
 */
function sizeTile(el, body) {
  let w = body.width || 0;
  let h = body.height || 0;
  if (!w || !h) {
    w = 4;
    h = 3;
  }
  const ratio = Math.min(2.4, Math.max(0.42, w / h));
  let dw = Math.min(TILE_MAX_W, w, TILE_MAX_H * ratio);
  dw = Math.max(TILE_MIN_W, dw);
  el.style.width = `${Math.round(dw)}px`;
  el.style.aspectRatio = `${ratio}`;
}

/**
 * The blurhash, drawn small (CSS scales it up), and the thumbnail over it.
 * @param {MessageBody} body
 * @returns {HTMLElement[]}
 */
function placeholders(body) {
  /** @type {HTMLElement[]} */
  const out = [];
  if (validBlurhash(body.blurhash)) {
    const ratio = body.width && body.height ? body.width / body.height : 4 / 3;
    const cw = ratio >= 1 ? 32 : Math.max(4, Math.round(32 * ratio));
    const ch = ratio >= 1 ? Math.max(4, Math.round(32 / ratio)) : 32;
    const canvas = h('canvas', { class: 'blurhash', attrs: { width: cw, height: ch, 'aria-hidden': 'true' }, data: { blurhash: body.blurhash } });
    try {
      const ctx = canvas.getContext('2d');
      if (ctx) {
        const img = ctx.createImageData(cw, ch);
        img.data.set(decodeBlurhash(body.blurhash, cw, ch));
        ctx.putImageData(img, 0, 0);
      }
      out.push(canvas);
    } catch {
      // A hash that does not decode: no placeholder.
    }
  }
  const type = body.thumbnail ? thumbnailType(body.thumbnail) : null;
  if (body.thumbnail && type) {
    const thumb = h('img', { class: 'thumb', attrs: { alt: '', 'aria-hidden': 'true', src: `data:${type};base64,${body.thumbnail}`, decoding: 'async' } });
    thumb.addEventListener('error', () => thumb.remove(), { once: true });
    out.push(thumb);
  }
  return out;
}

/**
 * Points a media element at a file: the local copy when this browser sent it, else a download
 * URL (fetched when needed). An element whose URL stopped working (it expired) gets a new one
 * once; after that it shows that it failed, with a retry.
 * @param {ChatState} state @param {Bubble} b @param {MessageBody} body
 * @param {HTMLImageElement | HTMLMediaElement} el
 * @param {(state: 'loading' | 'failed' | 'gone') => void} onState
 */
async function loadInto(state, b, body, el, onState) {
  const local = b.clientId ? state.uploads.localUrl(b.clientId, body.media_id) : null;
  if (local) {
    el.src = local;
    return;
  }
  if (!body.media_id) return;
  const mediaId = body.media_id;
  let refreshed = false;
  el.addEventListener('error', async () => {
    if (refreshed || !el.getAttribute('src')) {
      onState('failed');
      return;
    }
    refreshed = true;
    state.mediaUrls.drop(mediaId);
    try {
      const d = await state.mediaUrls.get(mediaId);
      const at = el instanceof HTMLMediaElement ? el.currentTime : 0;
      el.src = d.url;
      if (el instanceof HTMLMediaElement && at) el.currentTime = at;
    } catch (e) {
      onState(isGone(e) ? 'gone' : 'failed');
    }
  });
  onState('loading');
  try {
    const d = await state.mediaUrls.get(mediaId);
    el.src = d.url;
  } catch (e) {
    onState(isGone(e) ? 'gone' : 'failed');
  }
}

/** Whether a media lookup failed because it is gone (deleted, expired, not ours to see). @param {unknown} e */
function isGone(e) {
  const status = /** @type {{status?: number}} */ (e).status;
  return status === 404 || status === 403;
}

/**
 * A notice over a tile whose file did not load: "Not available", or a retry.
 * @param {HTMLElement} tile @param {'failed' | 'gone'} why @param {() => void} retry
 */
function tileProblem(tile, why, retry) {
  tile.querySelector('.tile-problem')?.remove();
  const note =
    why === 'gone'
      ? h('span', { class: 'tile-problem' }, icon('alert'), h('span', null, 'No longer available'))
      : h(
          'button',
          {
            class: 'tile-problem',
            attrs: { type: 'button' },
            on: {
              click: (e) => {
                e.stopPropagation();
                note.remove();
                retry();
              },
            },
          },
          icon('alert'),
          h('span', null, 'Could not load. Retry'),
        );
  tile.append(note);
}

/**
 * @param {ChatState} state @param {Bubble} b @param {MessageBody} body @param {OutboxItem | null} pending
 * @param {(b: Bubble) => void} openViewer
 */
function imageTile(state, b, body, pending, openViewer) {
  const full = h('img', { class: 'full', attrs: { alt: body.caption || 'Photo', decoding: 'async' } });
  const tile = h(
    'button',
    {
      class: 'media-tile image',
      attrs: { type: 'button', 'aria-label': 'Open photo', title: body.name || 'Photo' },
      on: { click: () => openViewer(b) },
    },
    ...placeholders(body),
    full,
  );
  sizeTile(tile, body);
  full.addEventListener('load', () => {
    full.classList.add('loaded');
    tile.classList.add('loaded');
  });
  const start = () =>
    loadInto(state, b, body, full, (s) => {
      if (s === 'loading') return;
      tileProblem(tile, s, () => {
        state.mediaUrls.drop(/** @type {string} */ (body.media_id));
        full.removeAttribute('src');
        const again = h('img', { class: 'full', attrs: { alt: body.caption || 'Photo', decoding: 'async' } });
        again.addEventListener('load', () => {
          again.classList.add('loaded');
          tile.classList.add('loaded');
        });
        full.replaceWith(again);
        void loadInto(state, b, body, again, (s2) => s2 !== 'loading' && tileProblem(tile, s2, () => {}));
      });
    });
  if (b.clientId && state.uploads.localUrl(b.clientId, body.media_id)) void start();
  else whenNear(tile, () => void start());
  if (pending) tile.append(uploadProgress(state, pending.client_id, 'ring'));
  return tile;
}

/**
 * A video: its poster (blurhash, thumbnail) and length until it comes near the screen, then the
 * player with the browser's controls (full screen included).
 * @param {ChatState} state @param {Bubble} b @param {MessageBody} body @param {OutboxItem | null} pending
 */
function videoTile(state, b, body, pending) {
  const badge = h('span', { class: 'media-badge' }, icon('video'), body.duration_ms ? duration(body.duration_ms) : 'Video');
  const tile = h('div', { class: 'media-tile video', attrs: { role: 'group', 'aria-label': 'Video' } }, ...placeholders(body), badge);
  sizeTile(tile, body);
  const start = () => {
    const video = h('video', { class: 'full', attrs: { controls: true, playsinline: true, preload: 'metadata', 'aria-label': body.caption || 'Video' } });
    video.addEventListener('loadeddata', () => {
      video.classList.add('loaded');
      tile.classList.add('loaded');
      // The player's own controls say how long it is.
      badge.remove();
    });
    tile.insertBefore(video, badge);
    void loadInto(state, b, body, video, (s) => s !== 'loading' && tileProblem(tile, s, () => { video.remove(); start(); }));
  };
  if (pending) {
    tile.append(uploadProgress(state, pending.client_id, 'ring'));
    const local = b.clientId ? state.uploads.localUrl(b.clientId) : null;
    if (local) start();
  } else {
    whenNear(tile, start);
  }
  return tile;
}

/** The one sound playing now: starting another pauses it. @type {HTMLAudioElement | null} */
let playing = null;

/**
 * A voice message or a sound: play / pause, a scrubber bound to the position, the time, and
 * (voice) the playback speed.
 * @param {ChatState} state @param {Bubble} b @param {MessageBody} body @param {OutboxItem | null} pending
 * @param {'voice' | 'audio'} kind
 */
function audioPlayer(state, b, body, pending, kind) {
  const audio = h('audio', { attrs: { preload: 'metadata' } });
  const label = kind === 'voice' ? 'voice message' : body.name || 'audio';
  const known = body.duration_ms ? body.duration_ms / 1000 : 0;
  const play = h('button', { class: 'audio-play', attrs: { type: 'button', 'aria-label': `Play ${label}` } }, icon('play'));
  const scrub = h('input', {
    class: 'audio-scrub',
    attrs: { type: 'range', min: 0, max: known || 1, step: 'any', value: 0, 'aria-label': 'Position', 'aria-valuetext': '0:00' },
  });
  const time = h('span', { class: 'audio-time' }, known ? duration(known * 1000) : '0:00');
  const speed = h('button', { class: 'audio-speed', attrs: { type: 'button', 'aria-label': 'Playback speed', hidden: kind !== 'voice' } }, '1×');
  const title = kind === 'audio' ? h('span', { class: 'audio-title' }, body.name || 'Audio') : null;
  const el = h(
    'div',
    { class: `audio-player ${kind}`, attrs: { role: 'group', 'aria-label': kind === 'voice' ? 'Voice message' : `Audio: ${body.name || ''}` } },
    h('span', { class: 'audio-icon', attrs: { 'aria-hidden': 'true' } }, icon(kind === 'voice' ? 'mic' : 'music')),
    play,
    h('span', { class: 'audio-main' }, title, scrub, h('span', { class: 'audio-row' }, time, speed)),
    audio,
  );

  /** Seconds in all: the element's when it knows, else what the message says. */
  const total = () => (Number.isFinite(audio.duration) && audio.duration > 0 ? audio.duration : known);
  let fixing = false;
  let dragging = false;
  let frame = 0;
  const draw = () => {
    const t = total();
    scrub.max = String(t || 1);
    if (!dragging && !fixing) scrub.value = String(Math.min(audio.currentTime, t || 0));
    const now = fixing ? 0 : audio.currentTime;
    time.textContent = audio.paused && now === 0 ? duration(t * 1000) : duration(now * 1000);
    scrub.setAttribute('aria-valuetext', `${duration(now * 1000)} of ${duration(t * 1000)}`);
    scrub.style.setProperty('--pos', t ? `${(Math.min(now, t) / t) * 100}%` : '0%');
  };
  const tick = () => {
    draw();
    frame = audio.paused ? 0 : requestAnimationFrame(tick);
  };
  let loading = /** @type {Promise<void> | null} */ (null);
  const load = () => {
    if (!loading) {
      loading = loadInto(state, b, body, audio, (s) => {
        if (s === 'loading') return;
        el.classList.add('failed');
        play.setAttribute('aria-label', s === 'gone' ? 'No longer available' : 'Could not load');
      });
    }
    return loading;
  };
  audio.addEventListener('loadedmetadata', () => {
    // A recording straight from MediaRecorder (WebM) does not say how long it is: seeking to
    // the end makes the browser find out.
    if (audio.duration === Infinity) {
      fixing = true;
      audio.currentTime = 1e101;
      const done = () => {
        if (!Number.isFinite(audio.duration)) return;
        audio.removeEventListener('durationchange', done);
        audio.currentTime = 0;
        fixing = false;
        draw();
      };
      audio.addEventListener('durationchange', done);
    }
    draw();
  });
  audio.addEventListener('play', () => {
    if (playing && playing !== audio) playing.pause();
    playing = audio;
    play.replaceChildren(icon('pause'));
    play.setAttribute('aria-label', `Pause ${label}`);
    el.classList.add('playing');
    if (!frame) frame = requestAnimationFrame(tick);
  });
  audio.addEventListener('pause', () => {
    play.replaceChildren(icon('play'));
    play.setAttribute('aria-label', `Play ${label}`);
    el.classList.remove('playing');
    draw();
  });
  audio.addEventListener('ended', () => {
    audio.currentTime = 0;
    draw();
  });
  audio.addEventListener('timeupdate', () => {
    if (audio.paused) draw();
  });
  play.addEventListener('click', async () => {
    if (!audio.paused) {
      audio.pause();
      return;
    }
    await load();
    if (fixing) await new Promise((r) => audio.addEventListener('seeked', r, { once: true }));
    audio.play().catch(() => {});
  });
  scrub.addEventListener('pointerdown', () => (dragging = true));
  scrub.addEventListener('pointerup', () => (dragging = false));
  scrub.addEventListener('input', async () => {
    await load();
    if (fixing) return;
    audio.currentTime = Number(scrub.value);
    draw();
  });
  speed.addEventListener('click', () => {
    const next = audio.playbackRate === 1 ? 1.5 : audio.playbackRate === 1.5 ? 2 : 1;
    audio.playbackRate = next;
    speed.textContent = `${next}×`;
  });
  if (pending) {
    el.append(uploadProgress(state, pending.client_id, 'bar'));
    void load();
  } else {
    whenNear(el, () => void load());
  }
  return el;
}

/**
 * Any other file: its type, name and size; a click downloads it with its name.
 * @param {ChatState} state @param {Bubble} b @param {MessageBody} body @param {OutboxItem | null} pending
 */
function fileCard(state, b, body, pending) {
  const name = body.name || fallbackName(body, b.ts);
  const ext = extension(name) || (essence(body.content_type).split('/')[1] || '').slice(0, 4).toUpperCase();
  const meta = [fileSize(body.size ?? 0), ext].filter(Boolean).join(' · ');
  const status = h('span', { class: 'file-status', attrs: { role: 'status' } });
  const card = h(
    'div',
    { class: 'file-card' },
    h('span', { class: 'file-icon', attrs: { 'aria-hidden': 'true' } }, icon('file'), h('span', { class: 'file-ext' }, ext.slice(0, 4))),
    h('span', { class: 'file-info' }, h('span', { class: 'file-name', attrs: { title: name } }, name), h('span', { class: 'file-meta' }, meta), status),
  );
  if (pending) {
    card.append(uploadProgress(state, pending.client_id, 'bar'));
  } else if (body.media_id) {
    const button = h(
      'button',
      {
        class: 'icon-btn file-download',
        attrs: { type: 'button', 'aria-label': `Download ${name}`, title: 'Download' },
        on: {
          click: async () => {
            button.disabled = true;
            status.textContent = 'Downloading…';
            try {
              await downloadMedia(state, body, b.ts, b.clientId);
              status.textContent = '';
            } catch (e) {
              status.textContent = isGone(e) ? 'No longer available.' : 'Download failed. Try again.';
            } finally {
              button.disabled = false;
            }
          },
        },
      },
      icon('download'),
    );
    card.append(button);
  }
  return card;
}

/**
 * Saves an attachment under its name. A same-origin URL downloads straight (the browser streams
 * it to disk); an object store elsewhere is fetched first, because browsers ignore `download`
 * names on other origins.
 * @param {ChatState} state @param {MessageBody} body @param {number} ts @param {string | null} clientId
 */
export async function downloadMedia(state, body, ts, clientId) {
  const name = body.name || fallbackName(body, ts);
  const local = clientId ? state.uploads.localUrl(clientId, body.media_id) : null;
  if (local) {
    clickLink(local, name);
    return;
  }
  const { url } = await state.mediaUrls.get(/** @type {string} */ (body.media_id));
  if (new URL(url, location.href).origin === location.origin) {
    clickLink(url, name);
    return;
  }
  try {
    const response = await fetch(url, { cache: 'no-store', referrerPolicy: 'no-referrer' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const blobUrl = URL.createObjectURL(await response.blob());
    clickLink(blobUrl, name);
    setTimeout(() => URL.revokeObjectURL(blobUrl), 60_000);
  } catch {
    // The store does not allow reading it from here (CORS): let the browser open it.
    window.open(url, '_blank', 'noopener,noreferrer');
  }
}

/** @param {string} href @param {string} name */
function clickLink(href, name) {
  const a = h('a', { attrs: { href, download: name, rel: 'noopener', hidden: true } });
  document.body.append(a);
  a.click();
  a.remove();
}

// ------------------------------------------------------------------------------------------
// The viewer
// ------------------------------------------------------------------------------------------

/**
 * The full-screen viewer of a conversation's pictures, from `index`: arrows (and ← →) go to
 * the previous and next, Escape, the close button or a click beside the picture closes it.
 * @param {ChatState} state @param {Viewable[]} items @param {number} index
 */
export function openViewer(state, items, index) {
  if (!items.length) return;
  let at = Math.max(0, Math.min(index, items.length - 1));
  const spinner = h('div', { class: 'spinner', attrs: { role: 'progressbar', 'aria-label': 'Loading photo' } });
  const who = h('strong', { class: 'viewer-who' });
  const when = h('span', { class: 'viewer-when muted' });
  const caption = h('p', { class: 'viewer-caption', attrs: { dir: 'auto' } });
  const problem = h('p', { class: 'viewer-problem', attrs: { role: 'alert', hidden: true } });
  const prev = h('button', { class: 'viewer-nav prev icon-btn', attrs: { type: 'button', 'aria-label': 'Previous photo' }, on: { click: () => go(-1) } }, icon('back'));
  const next = h('button', { class: 'viewer-nav next icon-btn', attrs: { type: 'button', 'aria-label': 'Next photo' }, on: { click: () => go(1) } }, icon('forward'));
  const save = h(
    'button',
    {
      class: 'icon-btn',
      attrs: { type: 'button', 'aria-label': 'Download', title: 'Download' },
      on: {
        click: () => {
          const it = items[at];
          downloadMedia(state, it.body, it.ts, it.clientId).catch(() => {
            problem.textContent = 'Download failed.';
            problem.hidden = false;
          });
        },
      },
    },
    icon('download'),
  );
  const close = h('button', { class: 'icon-btn', attrs: { type: 'button', 'aria-label': 'Close', title: 'Close (Esc)' }, on: { click: () => dialog.close() } }, icon('close'));
  const stage = h('div', { class: 'viewer-stage' }, prev, spinner, problem, next);
  const dialog = h(
    'dialog',
    { class: 'viewer', attrs: { 'aria-label': 'Photo' } },
    h('header', { class: 'viewer-bar' }, h('div', { class: 'viewer-meta' }, who, when), save, close),
    stage,
    caption,
  );
  stage.addEventListener('click', (e) => {
    if (e.target === stage) dialog.close();
  });
  dialog.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft') go(-1);
    else if (e.key === 'ArrowRight') go(1);
  });
  dialog.addEventListener('close', () => dialog.remove());

  let token = 0;
  /** @type {HTMLImageElement} */
  let img = h('img', { class: 'viewer-img', attrs: { alt: '' } });
  stage.insertBefore(img, problem);
  const show = () => {
    const it = items[at];
    const mine = ++token;
    who.textContent = state.userName(it.senderId);
    when.textContent = fullDateTime(it.ts);
    caption.textContent = it.body.caption || '';
    caption.hidden = !it.body.caption;
    prev.hidden = at === 0;
    next.hidden = at === items.length - 1;
    problem.hidden = true;
    spinner.hidden = false;
    // A new element per picture: a late answer for the previous one cannot land here.
    const fresh = h('img', { class: 'viewer-img', attrs: { alt: it.body.caption || 'Photo' } });
    img.replaceWith(fresh);
    img = fresh;
    fresh.addEventListener('load', () => {
      if (mine !== token) return;
      spinner.hidden = true;
      fresh.classList.add('loaded');
    });
    const bubble = /** @type {Bubble} */ ({ clientId: it.clientId, media: it.body, ts: it.ts });
    void loadInto(state, bubble, it.body, fresh, (s) => {
      if (s === 'loading' || mine !== token) return;
      spinner.hidden = true;
      problem.textContent = s === 'gone' ? 'This photo is no longer available.' : 'The photo could not be loaded.';
      problem.hidden = false;
    });
  };
  /** @param {number} step */
  const go = (step) => {
    const to = at + step;
    if (to < 0 || to >= items.length) return;
    at = to;
    show();
  };
  document.body.append(dialog);
  dialog.showModal();
  close.focus();
  show();
}
