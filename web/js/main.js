// The entry point: restores the session (this browser profile is one device; its tabs share it),
// shows the sign-in screen or the app, routes `#/c/<id>` to a conversation, redraws what
// changed once per frame, and notifies: from the page while a tab is open but hidden, through
// Web Push (push.js, sw.js) while none is.

import { Api } from './api.js';
import { ChatState } from './state.js';
import { Push } from './push.js';
import { h } from './dom.js';
import { icon } from './icons.js';
import { snippet } from './format.js';
import { mediaLabel } from './media.js';
import { showAuth } from './ui/auth.js';
import { Sidebar } from './ui/sidebar.js';
import { ChatView } from './ui/chat.js';
import { InfoPanel } from './ui/groupinfo.js';
import { confirmDialog } from './ui/dialogs.js';
import { notificationSettings } from './ui/settings.js';

/** @typedef {import('./types.js').Session} Session */
/** @typedef {import('./state.js').Conv} Conv */
/** @typedef {import('./types.js').Message} Message */

const SESSION_KEY = 'parley.session';
const root = /** @type {HTMLElement} */ (document.getElementById('app'));

/** @returns {Session | null} */
function loadSession() {
  try {
    const raw = localStorage.getItem(SESSION_KEY);
    const s = raw ? JSON.parse(raw) : null;
    return s && typeof s.token === 'string' && typeof s.user_id === 'string' ? s : null;
  } catch {
    return null;
  }
}

/** @type {Session | null} */
let session = loadSession();
/** @type {App | null} */
let app = null;
const api = new Api(
  () => session?.token ?? null,
  () => endSession('You were signed out. Sign in again.'),
);

// Another tab signed in or out: follow it.
window.addEventListener('storage', (e) => {
  if (e.key === SESSION_KEY && (e.newValue ?? null) !== (session ? JSON.stringify(session) : null)) location.reload();
});

/** @param {Session} s */
function startSession(s) {
  session = s;
  localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  app = new App(s);
}

/** Forgets the session here (the server already did, or is told by the caller). @param {string} [notice] */
function endSession(notice) {
  if (!session) return;
  const userId = session.user_id;
  session = null;
  app?.stop();
  // No pushes, cached names, notifications or files waiting to be sent of this account stay behind.
  void app?.push.forget();
  void app?.state.uploads.wipe();
  app = null;
  localStorage.removeItem(SESSION_KEY);
  for (const k of [`parley.outbox.${userId}`, `parley.cache.${userId}`, `parley.drafts.${userId}`]) localStorage.removeItem(k);
  history.replaceState(null, '', '/');
  document.title = 'Parley';
  showAuth(root, api, startSession, notice);
}

class App {
  /** @param {Session} s */
  constructor(s) {
    this.state = new ChatState(s, api, {
      changed: (what, id) => this.changed(what, id),
      notify: (conv, m) => this.notify(conv, m),
      revoked: () => {
        if (!this.signingOut) endSession('This device was signed out. Sign in again.');
      },
      pushInvalidated: () => this.push.renew(),
    });
    this.push = new Push(api, s.user_id, {
      changed: () => this.changed('status'),
      route: () => (document.visibilityState === 'visible' ? this.openId : null),
      open: (id) => this.navigate(id),
    });
    /** Views outside the app's frame that redraw with it (an open settings dialog). @type {Set<() => void>} */
    this.watchers = new Set();
    /** @type {Set<string>} */
    this.dirty = new Set();
    this.frame = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.hiddenTimer = undefined;
    this.infoOpen = false;
    /** @type {string | null} */
    this.openId = null;
    /** Set while the user signs out (the server's 4010 close is then expected). */
    this.signingOut = false;

    this.sidebar = new Sidebar({
      state: this.state,
      navigate: (id) => this.navigate(id),
      signOut: () => this.signOut(),
      enableNotifications: () => this.enableNotifications(),
      canAskNotifications: () => 'Notification' in window && Notification.permission === 'default',
      openSettings: () =>
        notificationSettings({
          state: this.state,
          push: this.push,
          watch: (fn) => {
            this.watchers.add(fn);
            return () => this.watchers.delete(fn);
          },
        }),
    });
    this.chat = new ChatView(
      this.state,
      (id) => this.navigate(id),
      () => this.toggleInfo(),
    );
    this.info = new InfoPanel(
      this.state,
      () => this.toggleInfo(false),
      () => this.navigate(null),
    );
    this.bannerText = h('span');
    this.bannerRetry = h(
      'button',
      { class: 'link-btn', attrs: { type: 'button' }, on: { click: () => this.state.conn.retryNow() } },
      'Retry now',
    );
    this.banner = h('div', { class: 'banner', attrs: { role: 'status', hidden: true } }, icon('wifiOff'), this.bannerText, this.bannerRetry);
    this.shell = h('div', { class: 'shell' }, this.sidebar.el, this.chat.el, this.info.el);
    root.replaceChildren(h('div', { class: 'app' }, this.banner, this.shell));

    this.onHash = () => this.route();
    window.addEventListener('hashchange', this.onHash);
    this.onKey = (/** @type {KeyboardEvent} */ e) => {
      if (e.key === 'Escape' && this.infoOpen && !document.querySelector('dialog[open], .menu')) this.toggleInfo(false);
    };
    document.addEventListener('keydown', this.onKey);
    this.onVisible = () => {
      if (document.visibilityState === 'visible') this.schedule();
    };
    document.addEventListener('visibilitychange', this.onVisible);
    this.onHide = () => this.chat.composer.saveDraft();
    window.addEventListener('pagehide', this.onHide);
    this.bannerTimer = setInterval(() => this.renderBanner(), 1_000);
    // "last seen 5 minutes ago" and the list's times age: redraw now and then.
    this.clockTimer = setInterval(() => this.schedule(), 30_000);
    this.startedAt = Date.now();

    this.state.start();
    this.push.start();
    this.route();
    this.schedule();
    // Refresh who we are (display name, do not disturb); a revoked token signs out through the
    // API hook.
    api
      .me()
      .then((me) => {
        if (!session) return;
        session.display_name = me.display_name;
        session.username = me.username;
        localStorage.setItem(SESSION_KEY, JSON.stringify(session));
        this.state.dndUntil = me.dnd_until ?? null;
        this.changed('me');
      })
      .catch(() => {});
  }

  stop() {
    this.state.stop();
    this.push.stop();
    window.removeEventListener('hashchange', this.onHash);
    document.removeEventListener('keydown', this.onKey);
    document.removeEventListener('visibilitychange', this.onVisible);
    window.removeEventListener('pagehide', this.onHide);
    clearInterval(this.bannerTimer);
    clearInterval(this.clockTimer);
    cancelAnimationFrame(this.frame);
    clearTimeout(this.hiddenTimer);
  }

  /** @param {string | null} id */
  navigate(id) {
    const hash = id ? `#/c/${encodeURIComponent(id)}` : '#/';
    if (location.hash !== hash) location.hash = hash;
    else this.route();
  }

  route() {
    const m = /^#\/c\/([^/]+)$/u.exec(location.hash);
    const id = m ? decodeURIComponent(m[1]) : null;
    if (id === this.openId) return;
    this.openId = id;
    root.querySelector('.app')?.classList.toggle('chat-open', !!id);
    if (!id) this.toggleInfo(false);
    this.sidebar.select(id);
    this.chat.show(id);
    this.info.show(this.infoOpen ? id : null);
    this.state.open(id).catch(() => {
      // Not a conversation of ours (any more): back to the list.
      if (this.openId === id && !this.state.convs.has(/** @type {string} */ (id))) this.navigate(null);
    });
    this.schedule();
  }

  /** @param {boolean} [open] */
  toggleInfo(open = !this.infoOpen) {
    this.infoOpen = open && !!this.openId;
    root.querySelector('.app')?.classList.toggle('info-open', this.infoOpen);
    this.chat.setInfoOpen(this.infoOpen);
    this.info.show(this.infoOpen ? this.openId : null);
  }

  /** @param {string} what @param {string} [id] */
  changed(what, id) {
    this.dirty.add(id ? `${what}:${id}` : what);
    this.schedule();
  }

  /** Redraws on the next frame (or soon, when the tab is hidden and frames do not come). */
  schedule() {
    if (this.frame) return;
    if (document.visibilityState === 'visible') {
      this.frame = requestAnimationFrame(() => this.render());
    } else if (!this.hiddenTimer) {
      this.hiddenTimer = setTimeout(() => {
        this.hiddenTimer = undefined;
        this.render();
      }, 500);
    }
  }

  render() {
    this.frame = 0;
    clearTimeout(this.hiddenTimer);
    this.hiddenTimer = undefined;
    const listChanged = this.dirty.has('list');
    this.dirty.clear();
    this.sidebar.render();
    this.chat.render();
    if (this.infoOpen) this.info.render();
    this.renderBanner();
    const unread = this.state.totalUnread();
    const conv = this.openId ? this.state.convs.get(this.openId) : undefined;
    const base = conv ? `${this.state.title(conv)} · Parley` : 'Parley';
    document.title = unread ? `(${unread}) ${base}` : base;
    if (listChanged) this.push.remember(this.notifyNames());
    for (const fn of this.watchers) fn();
  }

  /** What the service worker may show of each conversation when a push comes (see push.js). */
  notifyNames() {
    const state = this.state;
    /** @type {Record<string, import('./push.js').CachedConversation>} */
    const names = {};
    for (const conv of state.convs.values()) {
      if (conv.left) continue;
      const last = conv.c.last_message;
      names[conv.c.conversation_id] = {
        title: state.title(conv),
        kind: conv.c.kind,
        last_seq: last ? last.seq : 0,
        last_sender: last && last.sender_id !== state.me.user_id ? state.userName(last.sender_id) : null,
      };
    }
    return names;
  }

  renderBanner() {
    const conn = this.state.conn;
    const status = conn.status;
    // A first connection gets a moment before "Connecting…" shows.
    const quiet = status === 'connecting' && Date.now() - this.startedAt < 1_500;
    const show = status !== 'online' && status !== 'syncing' && !quiet;
    this.banner.hidden = !show;
    if (!show) return;
    const pending = this.state.outbox.unsent().length;
    const queued = pending ? ` ${pending === 1 ? '1 message' : `${pending} messages`} will be sent when you reconnect.` : '';
    let text;
    if (status === 'offline') text = `You are offline.${queued}`;
    else if (status === 'waiting') {
      const s = Math.max(1, Math.ceil((conn.retryAt - Date.now()) / 1_000));
      text = `Not connected. Retrying in ${s} s.${queued}`;
    } else text = `Connecting…${queued}`;
    this.bannerText.textContent = text;
    this.bannerRetry.hidden = status === 'connecting';
  }

  async signOut() {
    const pending = this.state.outbox.unsent().length;
    if (pending) {
      const ok = await confirmDialog(
        'Sign out?',
        `${pending === 1 ? 'A message has' : `${pending} messages have`} not been sent yet and will be lost.`,
        'Sign out',
      );
      if (!ok) return;
    }
    this.signingOut = true;
    // While the token still works: the server stops pushing to this browser.
    await this.push.unregister();
    try {
      await api.signOut();
    } catch {
      // Offline or already revoked: forget the token here anyway.
    }
    endSession();
  }

  enableNotifications() {
    this.push.turnOn().finally(() => this.schedule());
  }

  /**
   * A system notification for a message that arrived while the tab was hidden, unless the user
   * does not want one (do not disturb, a mute, mentions only).
   * @param {Conv} conv @param {Message} m
   */
  notify(conv, m) {
    if (document.visibilityState === 'visible') return;
    if (!('Notification' in window) || Notification.permission !== 'granted') return;
    if (!this.state.wantsNotification(conv, m)) return;
    const convId = conv.c.conversation_id;
    const title = this.state.title(conv);
    const who = conv.c.kind === 'group' ? `${this.state.userName(m.sender_id)}: ` : '';
    const text = m.kind === 'media' ? mediaLabel(m.body || {}) : m.body.text || 'New message';
    const body = `${who}${snippet(text, 140)}`;
    const reg = this.push.registration;
    if (reg) void this.notifyFromWorker(reg, title, body, convId, m.seq);
    else this.notifyFromPage(title, body, convId);
  }

  /**
   * Through the service worker, so that it and a push for the same conversation replace each
   * other (one tag) and a click is handled the same way. A push may have shown this message
   * already, as "New message": the page's version, with the text, replaces it quietly.
   * @param {ServiceWorkerRegistration} reg @param {string} title @param {string} body @param {string} convId @param {number} seq
   */
  async notifyFromWorker(reg, title, body, convId, seq) {
    try {
      const shown = await reg.getNotifications({ tag: convId });
      const known = shown.some((n) => n.data && typeof n.data.seq === 'number' && n.data.seq >= seq);
      const options = { body, tag: convId, renotify: !known, icon: '/favicon.svg', data: { conversation_id: convId, seq } };
      await reg.showNotification(title, /** @type {NotificationOptions} */ (options));
    } catch {
      this.notifyFromPage(title, body, convId);
    }
  }

  /** @param {string} title @param {string} body @param {string} convId */
  notifyFromPage(title, body, convId) {
    try {
      const n = new Notification(title, { body, tag: convId, icon: '/favicon.svg' });
      n.onclick = () => {
        window.focus();
        this.navigate(convId);
        n.close();
      };
    } catch {
      // Some browsers only allow notifications from a service worker.
    }
  }
}

if (session) app = new App(session);
else showAuth(root, api, startSession);
