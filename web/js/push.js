// Web Push for this browser (one device): the service worker (`/sw.js`), the browser's push
// subscription and its registration with the server, and the names the worker may show.
//
// Push is set up after sign-in when notifications are already allowed, or when the user turns
// them on; every failure (no push service, a server that refuses the endpoint, a browser that
// will not start the worker) ends in a state the settings show, never in an error: while a tab
// is open the page still notifies by itself. A push carries no text or names (the push service
// could read them), so the worker shows what the page cached here: conversation titles and,
// for the last message, who wrote it.

import { ApiError } from './api.js';

/** @typedef {import('./api.js').Api} Api */

/** Where the worker finds the names (the same constants are in sw.js). */
export const NOTIFY_CACHE = 'parley-notify-v1';
export const NOTIFY_KEY = '/parley-notify/state';
const SW_URL = '/sw.js';
/** How long the service worker may take to become active. */
const READY_TIMEOUT_MS = 10_000;
/** After a renewal, other tabs of this device leave it alone for this long (they got the same frame). */
const RENEW_QUIET_MS = 30_000;
/** The names are written at most this often. */
const CACHE_WRITE_DELAY_MS = 500;

/**
 * `unsupported`: this browser has no Push API (notifications show while a tab is open, if at
 * all); `off`: notifications are not allowed yet; `denied`: the user blocked them; `working`:
 * being set up; `on`: the server has this browser's subscription; `failed`: push could not be
 * set up (`reason` says why).
 * @typedef {'unsupported' | 'off' | 'denied' | 'working' | 'on' | 'failed'} PushState
 */

/**
 * What the worker knows of a conversation.
 * @typedef {object} CachedConversation
 * @property {string} title
 * @property {'direct' | 'group'} kind
 * @property {number} last_seq
 * @property {string | null} last_sender
 */

/**
 * @typedef {object} Hooks
 * @property {() => void} changed the state changed
 * @property {() => string | null} route the conversation on screen, for the worker's question
 * @property {(id: string) => void} open a notification was clicked
 */

/** Whether this browser can receive pushes at all. */
export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

export class Push {
  /** @param {Api} api @param {string} userId @param {Hooks} hooks */
  constructor(api, userId, hooks) {
    this.api = api;
    this.hooks = hooks;
    this.renewKey = `parley.push.renewed.${userId}`;
    this.userId = userId;
    /** @type {PushState} */
    this.state = 'off';
    this.reason = '';
    /** The active registration of the worker, once it runs. @type {ServiceWorkerRegistration | null} */
    this.registration = null;
    /** Set-ups run one after another. @type {Promise<void>} */
    this.queue = Promise.resolve();
    this.stopped = false;
    this.cachedJson = '';
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.cacheTimer = undefined;
    this.onMessage = (/** @type {MessageEvent} */ e) => this.onWorkerMessage(e);
  }

  /** After sign-in: listens to the worker, and sets push up if notifications are allowed. */
  start() {
    if (!pushSupported()) {
      this.set('unsupported');
      return;
    }
    navigator.serviceWorker.addEventListener('message', this.onMessage);
    navigator.serviceWorker.startMessages();
    const permission = Notification.permission;
    if (permission === 'granted') void this.enable();
    else this.set(permission === 'denied' ? 'denied' : 'off');
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.cacheTimer);
    if ('serviceWorker' in navigator) navigator.serviceWorker.removeEventListener('message', this.onMessage);
  }

  /** The user turned notifications on: asks for permission, then sets push up. */
  async turnOn() {
    if (!('Notification' in window)) return;
    const permission = await Notification.requestPermission().catch(() => Notification.permission);
    if (permission !== 'granted') this.set(permission === 'denied' ? 'denied' : 'off');
    else if (!pushSupported()) this.set('unsupported');
    else await this.enable();
  }

  /**
   * Registers the worker, subscribes (reusing a subscription made with the server's current
   * key, unless `fresh`) and gives the subscription to the server.
   * @param {boolean} [fresh] the old subscription is dead: make a new one
   */
  enable(fresh = false) {
    this.queue = this.queue.then(() => this.setUp(fresh)).catch(() => this.fail('Something went wrong; try again.'));
    return this.queue;
  }

  /** @param {boolean} fresh */
  async setUp(fresh) {
    if (this.stopped) return;
    this.set('working');
    /** @type {ServiceWorkerRegistration | null} */
    let reg = null;
    try {
      reg = await this.serviceWorker();
    } catch {
      // Refused (the page's security policy, a browser setting): said below.
    }
    if (!reg) return this.fail('This browser would not start the service worker.');
    this.registration = reg;
    let key;
    try {
      key = base64url(await this.api.vapidKey());
    } catch (e) {
      return this.fail(e instanceof ApiError && e.network ? 'The server could not be reached.' : 'The server does not offer push notifications.');
    }
    let sub;
    try {
      sub = await this.subscribe(reg, key, fresh);
    } catch (e) {
      return this.fail(`This browser has no push service it can use (${e instanceof Error ? e.message : String(e)}).`);
    }
    const json = sub.toJSON();
    if (!json.endpoint || !json.keys || !json.keys.p256dh || !json.keys.auth) return this.fail('The browser gave an incomplete subscription.');
    try {
      await this.api.registerPush({ endpoint: json.endpoint, keys: { p256dh: json.keys.p256dh, auth: json.keys.auth } });
    } catch (e) {
      if (e instanceof ApiError && e.status === 400) return this.fail(`The server refused this browser's push service: ${e.message}.`);
      return this.fail(e instanceof ApiError && e.network ? 'The server could not be reached.' : 'The server could not register this browser.');
    }
    if (!this.stopped) this.set('on');
  }

  /**
   * The worker's registration once it is active, or null when the browser will not run it.
   * @returns {Promise<ServiceWorkerRegistration | null>}
   */
  async serviceWorker() {
    const reg = await navigator.serviceWorker.register(scriptURL(), { scope: '/', updateViaCache: 'none' });
    // Some environments (test browsers that block workers) resolve without a registration.
    if (!reg) return null;
    /** @type {Promise<null>} */
    const timeout = new Promise((resolve) => setTimeout(() => resolve(null), READY_TIMEOUT_MS));
    return Promise.race([navigator.serviceWorker.ready, timeout]);
  }

  /** @param {ServiceWorkerRegistration} reg @param {Uint8Array<ArrayBuffer>} key @param {boolean} fresh */
  async subscribe(reg, key, fresh) {
    const existing = await reg.pushManager.getSubscription();
    if (existing && !fresh && sameBytes(existing.options.applicationServerKey, key)) return existing;
    // Made with another key (the server's changed) or dead: the push service wants a new one.
    await existing?.unsubscribe().catch(() => false);
    return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  }

  /**
   * The server says this device's subscription is dead (`push_invalidated`): subscribe again.
   * Every tab of the device gets the frame; the first one renews, the others see it done.
   */
  renew() {
    if (!pushSupported() || Notification.permission !== 'granted' || this.stopped) return;
    const run = async () => {
      const last = Number(localStorage.getItem(this.renewKey) || 0);
      if (Date.now() - last < RENEW_QUIET_MS) return;
      localStorage.setItem(this.renewKey, String(Date.now()));
      await this.enable(true);
    };
    if (navigator.locks) navigator.locks.request(`parley.push.${this.userId}`, run).catch(() => {});
    else void run();
  }

  /** Signing out, while the token still works: the server forgets this browser's subscription. */
  async unregister() {
    try {
      const reg = pushSupported() ? await navigator.serviceWorker.getRegistration('/') : undefined;
      const sub = reg ? await reg.pushManager.getSubscription() : null;
      if (this.state === 'on' || sub) await this.api.unregisterPush();
    } catch {
      // Offline or already gone: the server drops it with the device anyway.
    }
  }

  /** The session ended: no more pushes here, no names left behind, no notifications of it. */
  async forget() {
    this.stop();
    localStorage.removeItem(this.renewKey);
    try {
      const reg = pushSupported() ? await navigator.serviceWorker.getRegistration('/') : undefined;
      if (reg) {
        const sub = await reg.pushManager.getSubscription();
        await sub?.unsubscribe();
        for (const n of await reg.getNotifications()) n.close();
      }
    } catch {
      // The browser's push service is out of reach: the server no longer sends anything anyway.
    }
    if ('caches' in window) await caches.delete(NOTIFY_CACHE).catch(() => false);
  }

  /**
   * Keeps what the worker may show up to date: called on every change of the conversation list,
   * written when it differs, at most every CACHE_WRITE_DELAY_MS.
   * @param {Record<string, CachedConversation>} conversations
   */
  remember(conversations) {
    const json = JSON.stringify({ v: 1, user_id: this.userId, conversations });
    if (json === this.cachedJson || this.stopped) return;
    this.cachedJson = json;
    if (this.cacheTimer) return;
    this.cacheTimer = setTimeout(() => {
      this.cacheTimer = undefined;
      void this.writeCache();
    }, CACHE_WRITE_DELAY_MS);
  }

  async writeCache() {
    if (this.stopped || !('caches' in window)) return;
    try {
      const cache = await caches.open(NOTIFY_CACHE);
      await cache.put(NOTIFY_KEY, new Response(this.cachedJson, { headers: { 'Content-Type': 'application/json' } }));
    } catch {
      // Storage full or disabled: notifications say less.
    }
  }

  /** What the settings say about push on this browser, and what the user can do about it. */
  describe() {
    switch (this.state) {
      case 'unsupported':
        return { text: 'This browser cannot notify you while Parley is closed.', action: null };
      case 'off':
        return { text: 'Off. Turn notifications on to hear about new messages while Parley is closed.', action: 'Turn on notifications' };
      case 'denied':
        return { text: 'Blocked. Allow notifications for this site in your browser’s settings.', action: null };
      case 'working':
        return { text: 'Turning on…', action: null };
      case 'on':
        return { text: 'On for this browser.', action: null };
      case 'failed':
        return { text: `Only while Parley is open. ${this.reason}`, action: 'Try again' };
    }
  }

  // --- internals ---

  /** @param {PushState} state */
  set(state) {
    if (this.state === state && state !== 'failed') return;
    this.state = state;
    if (state !== 'failed') this.reason = '';
    this.hooks.changed();
  }

  /** @param {string} reason */
  fail(reason) {
    this.reason = reason;
    this.set('failed');
  }

  /** The worker asks which conversation is on screen, or says a notification was clicked. @param {MessageEvent} e */
  onWorkerMessage(e) {
    const data = e.data;
    if (!data || typeof data !== 'object') return;
    if (data.type === 'route') e.ports[0]?.postMessage({ conversation_id: this.hooks.route() });
    else if (data.type === 'open' && typeof data.conversation_id === 'string') this.hooks.open(data.conversation_id);
  }
}

/** @type {{createScriptURL: (url: string) => unknown} | null} */
let policy = null;

/**
 * The worker's URL as the page's Content-Security-Policy wants it: with Trusted Types enforced,
 * `register` takes only a TrustedScriptURL, made by the one policy the server allows
 * (`parley-sw`), which vouches for nothing but this script.
 * @returns {string}
 */
function scriptURL() {
  const tt = /** @type {any} */ (window).trustedTypes;
  if (!tt) return SW_URL;
  policy ??= tt.createPolicy('parley-sw', {
    createScriptURL: (/** @type {string} */ url) => {
      if (url !== SW_URL) throw new TypeError(`parley-sw: not the service worker: ${url}`);
      return url;
    },
  });
  return /** @type {string} */ (/** @type {{createScriptURL: (url: string) => unknown}} */ (policy).createScriptURL(SW_URL));
}

/** Bytes of a base64url string (no padding), as VAPID keys are given. @param {string} s */
function base64url(s) {
  const b64 = s.replace(/-/gu, '+').replace(/_/gu, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** @param {ArrayBuffer | null} a @param {Uint8Array} b */
function sameBytes(a, b) {
  if (!a || a.byteLength !== b.length) return false;
  const x = new Uint8Array(a);
  return x.every((v, i) => v === b[i]);
}
