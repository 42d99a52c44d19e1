// The service worker: shows a notification for a Web Push message unless a tab of Parley shows
// the conversation, and opens the conversation when the notification is clicked.
// It has no `fetch` handler (the app is not cached for offline use), so a new version can take
// over at once without breaking an open tab.
//
// A push payload carries no text and no names (the push service could read them): only
// `{"v": 1, "type": "message", "conversation_id", "seq", "unread_count"}`. What a notification
// says beyond "New message" comes from what the page itself cached here (`js/push.js` writes
// it whenever the conversation list changes), never from the payload.
//
// A classic script (not a module), checked by `tsc -p web/test/tsconfig.sw.json` with the
// worker's types.

const sw = /** @type {ServiceWorkerGlobalScope} */ (/** @type {unknown} */ (self));

/** Where the page keeps the names (same constants as `NOTIFY_CACHE` and `NOTIFY_KEY` in js/push.js). */
const NOTIFY_CACHE = 'parley-notify-v1';
const NOTIFY_KEY = '/parley-notify/state';
const TITLE = 'New message';
/** How long a window may take to say which conversation it shows. */
const ROUTE_ANSWER_MS = 500;

/**
 * What the page cached about one conversation.
 * @typedef {object} CachedConversation
 * @property {string} title
 * @property {'direct' | 'group'} kind
 * @property {number} last_seq
 * @property {string | null} last_sender the name of who wrote `last_seq`, when not the user
 */

/**
 * A push payload that passed the checks.
 * @typedef {object} Payload
 * @property {string} conversation_id
 * @property {number} seq
 * @property {number} unread_count
 */

sw.addEventListener('install', () => {
  // Nothing to cache, nothing an older version could still need: take over at once.
  void sw.skipWaiting();
});

sw.addEventListener('push', (event) => {
  // Whatever goes wrong, a push shows something (browsers require it, and it did come).
  keepAlive(event, onPush(event.data).catch(() => generic()));
});

sw.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const data = event.notification.data;
  const id = data && typeof data.conversation_id === 'string' ? data.conversation_id : null;
  keepAlive(event, openApp(id));
});

/**
 * Keeps the worker alive until `work` is done. A synthetic event (the browser tests dispatch
 * one to check where a click leads) cannot be extended; the work still runs.
 * @param {ExtendableEvent} event @param {Promise<void>} work
 */
function keepAlive(event, work) {
  try {
    event.waitUntil(work);
  } catch {
    // Not a trusted event.
  }
}

/** @param {PushMessageData | null} data */
async function onPush(data) {
  const payload = parse(data);
  // Something we cannot read (a newer server, a broken message): still say something came.
  if (!payload) return generic();
  const id = payload.conversation_id;
  if (await lookingAt(id)) return;
  const conv = (await cached())[id];
  await serially(async () => {
    // A tab in the background may have shown this message already, with its text (the page
    // knows it); keep that one.
    const shown = await sw.registration.getNotifications({ tag: id });
    if (shown.some((n) => n.data && typeof n.data.seq === 'number' && n.data.seq >= payload.seq)) return;
    await sw.registration.showNotification(
      TITLE,
      /** @type {NotificationOptions} */ ({
        body: describe(conv, payload),
        tag: id,
        // A newer message replaces the conversation's notification, and alerts again.
        renotify: true,
        icon: '/favicon.svg',
        data: { conversation_id: id, seq: payload.seq },
      }),
    );
  });
}

/** "New message" and nothing else, for a push the worker cannot say more about. */
function generic() {
  return serially(() => sw.registration.showNotification(TITLE, { tag: 'parley', icon: '/favicon.svg', data: {} }));
}

/**
 * The worker's reads and writes of notifications, one after another. In Chromium, a
 * `getNotifications()` that runs while a notification is being shown (stored, not yet on screen)
 * drops that notification from the browser's records: it stays on screen, but is never listed
 * again and a click on it reaches no worker. Pushes handled at once (several conversations while
 * the device was away) would do that to each other.
 */
let notifying = Promise.resolve();

/** Runs `work` once the earlier ones are done. @template T @param {() => Promise<T>} work @returns {Promise<T>} */
function serially(work) {
  const run = notifying.then(work);
  notifying = run.then(() => undefined, () => undefined);
  return run;
}

/** The payload, if it is one this version understands. @param {PushMessageData | null} data @returns {Payload | null} */
function parse(data) {
  /** @type {any} */
  let p;
  try {
    p = data ? data.json() : null;
  } catch {
    return null;
  }
  if (!p || p.v !== 1 || p.type !== 'message' || typeof p.conversation_id !== 'string' || !p.conversation_id) return null;
  if (!Number.isSafeInteger(p.seq)) return null;
  return {
    conversation_id: p.conversation_id,
    seq: p.seq,
    unread_count: Number.isSafeInteger(p.unread_count) && p.unread_count > 0 ? p.unread_count : 1,
  };
}

/**
 * The notification's text: the conversation's title and, when the page saw who wrote this very
 * message, their name; how many are unread when more than one.
 * @param {CachedConversation | undefined} conv @param {Payload} payload
 */
function describe(conv, payload) {
  const more = payload.unread_count > 1 ? `${payload.unread_count} unread messages` : '';
  if (!conv) return more;
  const sender = conv.kind === 'group' && conv.last_seq === payload.seq ? conv.last_sender : null;
  const where = sender ? `${sender} in ${conv.title}` : conv.title;
  return more ? `${where}\n${more}` : where;
}

/** @returns {Promise<Record<string, CachedConversation>>} */
async function cached() {
  try {
    const cache = await caches.open(NOTIFY_CACHE);
    const response = await cache.match(NOTIFY_KEY);
    const state = response ? await response.json() : null;
    return state && state.v === 1 && state.conversations && typeof state.conversations === 'object' ? state.conversations : {};
  } catch {
    // No cache (storage cleared, private mode): the notification says less.
    return {};
  }
}

/**
 * Whether a window of the app shows this conversation to the user: visible, as the page counts
 * what is on a visible screen as read. Each visible window is asked which conversation it shows
 * (a window's URL as the worker sees it keeps the hash it was opened with, not the route it is
 * on now); one that does not answer in time (the sign-in screen, an older version) counts as
 * elsewhere.
 * @param {string} id
 */
async function lookingAt(id) {
  const windows = await sw.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const front = windows.filter((w) => w.visibilityState === 'visible');
  const routes = await Promise.all(front.map((w) => routeOf(w)));
  return routes.includes(id);
}

/** The conversation a window shows, as it answers a `route` message. @param {WindowClient} win @returns {Promise<string | null>} */
function routeOf(win) {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    const timer = setTimeout(() => resolve(null), ROUTE_ANSWER_MS);
    channel.port1.onmessage = (e) => {
      clearTimeout(timer);
      resolve(e.data && typeof e.data.conversation_id === 'string' ? e.data.conversation_id : null);
    };
    win.postMessage({ type: 'route' }, [channel.port2]);
  });
}

/**
 * Brings the app to the front on a conversation: an open window is told where to go (it routes
 * without reloading) and focused; with none, a new one opens there.
 * @param {string | null} id
 */
async function openApp(id) {
  const url = id ? `/#/c/${encodeURIComponent(id)}` : '/';
  const windows = await sw.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const win = windows.find((w) => w.focused) ?? windows.find((w) => w.visibilityState === 'visible') ?? windows[0];
  if (!win) {
    await sw.clients.openWindow(url);
    return;
  }
  if (id) win.postMessage({ type: 'open', conversation_id: id });
  try {
    await win.focus();
  } catch {
    // Focusing is only allowed right after a click; the window has its route anyway.
  }
}
