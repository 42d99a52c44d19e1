// What the client knows and how it stays in step with the server: conversations, the loaded
// part of each conversation's log, members and their receipt pointers, presence, typing, and
// the outbox. The UI reads from here and calls the actions; this module never touches the DOM.
//
// Staying in step (docs/PROTOCOL.md): live `message` frames extend a conversation's log when
// they are the next seq, are dropped when already there (de-duplication by seq), and a gap is
// filled from REST history. Every (re)connection replays the device's backlog, then (`synced`)
// the client refreshes the conversation list, fills the open conversation from its highest
// known seq, and resends the outbox with each item's original `client_id`.

import { Outbox } from './outbox.js';
import { Connection } from './socket.js';
import { Uploads } from './uploads.js';
import { MediaUrls, mediaLabel } from './media.js';

/** @typedef {import('./types.js').Session} Session */
/** @typedef {import('./types.js').User} User */
/** @typedef {import('./types.js').Member} Member */
/** @typedef {import('./types.js').Message} Message */
/** @typedef {import('./types.js').MessageBody} MessageBody */
/** @typedef {import('./types.js').Conversation} Conversation */
/** @typedef {import('./types.js').ConversationSettings} ConversationSettings */
/** @typedef {import('./types.js').Presence} Presence */
/** @typedef {import('./types.js').OutboxItem} OutboxItem */
/** @typedef {import('./types.js').ServerFrame} ServerFrame */
/** @typedef {import('./socket.js').Status} Status */
/** @typedef {import('./api.js').Api} Api */

/**
 * A conversation as the client holds it: the server's object plus what it learnt since.
 * @typedef {object} Conv
 * @property {Conversation} c
 * @property {number} activity when something last happened in it (ms), for the list order
 * @property {number} accounted the highest seq already reflected in `c` (unread count, preview)
 * @property {boolean} left the user is no longer a member
 * @property {Map<string, number>} typing user id → when their typing indicator expires
 * @property {Map<string, {delivered: number, read: number}>} pointers other members' receipts
 * @property {number} seenAt when the server last told us about it (ms, local clock)
 */

/**
 * The loaded part of a conversation's log: every entry from `oldest` to `newest` (the server's
 * visible window of it), plus live entries past a gap that is being filled.
 * @typedef {object} Log
 * @property {Map<number, Message>} entries
 * @property {number} oldest
 * @property {number} newest
 * @property {boolean} complete nothing older to load
 * @property {boolean} loadingOlder
 * @property {Promise<void> | null} filling
 */

/**
 * One line of the message view, after edits, deletes and reactions are applied.
 * @typedef {object} Bubble
 * @property {'bubble'} type
 * @property {string} key
 * @property {number} seq 0 while pending
 * @property {string} senderId
 * @property {number} ts
 * @property {string} kind
 * @property {string} text
 * @property {boolean} edited
 * @property {boolean} deleted
 * @property {number | undefined} replyTo
 * @property {string[]} mentions user ids the text names
 * @property {Map<string, string>} reactions user id → emoji
 * @property {OutboxItem | null} pending
 * @property {string | null} clientId
 * @property {MessageBody | null} media of a `media` message: its body (caption, type, size, preview)
 */

/**
 * @typedef {object} SystemLine
 * @property {'system'} type
 * @property {string} key
 * @property {number} seq
 * @property {number} ts
 * @property {Message} m
 */

/** @typedef {Bubble | SystemLine} Line */

/**
 * @typedef {object} Hooks
 * @property {(what: 'list' | 'log' | 'presence' | 'status' | 'conv' | 'me', id?: string) => void} changed
 * @property {(conv: Conv, message: Message) => void} notify a new message arrived live
 * @property {() => void} revoked the session ended on the server
 * @property {() => void} pushInvalidated the push service dropped this device's subscription
 */

/**
 * How a conversation notifies now: every message, only those that mention the user, or none
 * (`until`: when a timed mute ends; null when muted until unmuted).
 * @typedef {{mode: 'all'} | {mode: 'mentions'} | {mode: 'muted', until: number | null}} NotifyMode
 */

/** Kinds that are messages people wrote (the ones `unread_count` counts). */
const CONTENT_KINDS = new Set(['text', 'media', 'encrypted']);
/** Kinds that change another entry. */
const CHANGE_KINDS = new Set(['edit', 'delete', 'reaction']);
/** Typing indicators expire this long after the last `active: true` (PROTOCOL.md). */
const TYPING_TTL_MS = 6_000;
/** A page of history. */
const PAGE = 50;

export class ChatState {
  /**
   * @param {Session} session
   * @param {Api} api
   * @param {Hooks} hooks
   */
  constructor(session, api, hooks) {
    this.me = session;
    this.api = api;
    this.hooks = hooks;
    /** @type {Map<string, Conv>} */
    this.convs = new Map();
    /** @type {Map<string, Log>} */
    this.logs = new Map();
    /** @type {Map<string, User>} */
    this.users = new Map();
    /** @type {Map<string, Presence>} */
    this.presence = new Map();
    /** Users whose presence this connection has subscribed to. @type {Set<string>} */
    this.watching = new Set();
    /** Conversations the user left or was removed from, not to be fetched again. @type {Set<string>} */
    this.gone = new Set();
    /** @type {string | null} */
    this.openId = null;
    /** Conversations being opened. @type {Map<string, Promise<void>>} */
    this.opening = new Map();
    /** Whether the conversation list has been loaded once. */
    this.listLoaded = false;
    /** Sends written on the current connection, not answered yet. @type {Set<string>} */
    this.inflight = new Set();
    /** @type {Map<string, number>} */
    this.pendingAcks = new Map();
    /** @type {Map<string, number>} */
    this.pendingReads = new Map();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.ackTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.readTimer = undefined;
    /** @type {Map<string, ReturnType<typeof setTimeout>>} */
    this.refreshTimers = new Map();
    /** @type {Map<string, ReturnType<typeof setTimeout>>} */
    this.gapTimers = new Map();
    /** Whether the backlog replay of the current connection is running. */
    this.replaying = false;
    /** Offset to add to Date.now() to get the server's clock. */
    this.clockSkew = 0;
    /** Typing we announced: conversation → when `active: true` was last sent. @type {Map<string, number>} */
    this.typingSent = new Map();
    /** Direct conversation → the other user. @type {Map<string, string>} */
    this.peers = new Map();
    /** Do not disturb until then (server ms), or null: the user's, from `GET /v1/me`. @type {number | null} */
    this.dndUntil = null;

    this.outbox = new Outbox(session.user_id);
    /** Files being sent (see uploads.js). */
    this.uploads = new Uploads(this);
    /** Download URLs of media. */
    this.mediaUrls = new MediaUrls(api, () => this.now());
    this.outbox.subscribe(() => {
      for (const id of new Set(this.outbox.items.map((i) => i.conversation_id))) this.hooks.changed('log', id);
      this.hooks.changed('list');
      this.flushOutbox();
    });
    this.loadCache();
    this.users.set(session.user_id, {
      user_id: session.user_id,
      username: session.username,
      display_name: session.display_name,
    });

    // Other tabs of this browser profile are the same device: the server does not echo our own
    // sends to them, so tabs tell each other.
    this.channel = 'BroadcastChannel' in window ? new BroadcastChannel(`parley.${session.user_id}`) : null;
    if (this.channel) {
      this.channel.onmessage = (e) => this.onTabMessage(e.data);
    }

    this.conn = new Connection({
      token: () => this.me.token,
      onFrame: (f) => this.onFrame(f),
      onReady: (f) => this.onReady(f),
      onSynced: () => this.onSynced(),
      onStatus: (status) => {
        // Without a connection nobody's presence or typing is known: show none rather than stale.
        if (status !== 'online' && status !== 'syncing') {
          this.presence.clear();
          for (const conv of this.convs.values()) conv.typing.clear();
          this.hooks.changed('presence');
          this.hooks.changed('list');
        }
        this.hooks.changed('status');
      },
      onRevoked: () => this.hooks.revoked(),
    });
    this.typingSweep = setInterval(() => this.sweepTyping(), 1_000);
  }

  start() {
    this.conn.start();
    // Show the list at once from REST; the socket's sync refreshes it again.
    this.refreshConversations().catch(() => {});
  }

  stop() {
    this.conn.stop();
    this.uploads.stop();
    this.outbox.close();
    this.channel?.close();
    clearInterval(this.typingSweep);
    clearTimeout(this.ackTimer);
    clearTimeout(this.readTimer);
    for (const t of this.refreshTimers.values()) clearTimeout(t);
    for (const t of this.gapTimers.values()) clearTimeout(t);
  }

  // ------------------------------------------------------------------------------------------
  // Names
  // ------------------------------------------------------------------------------------------

  /** @param {string} userId */
  userName(userId) {
    if (userId === this.me.user_id) return 'You';
    const u = this.users.get(userId);
    return u ? u.display_name || u.username : 'Someone';
  }

  /** The other member of a direct conversation (yourself for a chat with yourself). @param {Conv} conv */
  peer(conv) {
    if (conv.c.kind !== 'direct') return null;
    const members = conv.c.members;
    if (members && members.length) {
      const other = members.find((m) => m.user_id !== this.me.user_id);
      return other ? other.user_id : this.me.user_id;
    }
    return this.peers.get(conv.c.conversation_id) ?? null;
  }

  /** @param {Conv} conv */
  title(conv) {
    if (conv.c.kind === 'group') return conv.c.title || 'Group';
    const peer = this.peer(conv);
    if (!peer) return 'Direct chat';
    if (peer === this.me.user_id) return `${this.me.display_name || this.me.username} (you)`;
    return this.userName(peer);
  }

  /** Conversations, most recent activity first (a message waiting to be sent counts). */
  sortedConvs() {
    /** @type {Map<string, number>} */
    const pending = new Map();
    for (const item of this.outbox.items) pending.set(item.conversation_id, item.created_at);
    /** @param {Conv} c */
    const when = (c) => Math.max(c.activity, pending.get(c.c.conversation_id) ?? 0);
    return Array.from(this.convs.values()).sort((a, b) => when(b) - when(a) || b.c.created_at - a.c.created_at);
  }

  /** The newest message (text or attachment) waiting in the outbox for a conversation. @param {string} id */
  pendingText(id) {
    const items = this.outbox.of(id).filter((i) => i.kind === 'text' || i.kind === 'media');
    return items.length ? items[items.length - 1] : null;
  }

  /** The members of a conversation other than the user. @param {Conv} conv */
  others(conv) {
    return (conv.c.members || []).filter((m) => m.user_id !== this.me.user_id);
  }

  /** @param {Conv} conv */
  isAdmin(conv) {
    return (conv.c.members || []).some((m) => m.user_id === this.me.user_id && m.role === 'admin');
  }

  /** Who is typing in a conversation now, oldest first. @param {string} id */
  typists(id) {
    const conv = this.convs.get(id);
    if (!conv) return [];
    const now = Date.now();
    return Array.from(conv.typing.entries())
      .filter(([, until]) => until > now)
      .map(([user]) => user);
  }

  /** The total of unread counts, for the tab title. */
  totalUnread() {
    let n = 0;
    for (const conv of this.convs.values()) n += conv.c.unread_count;
    return n;
  }

  /** The server's clock, as far as we know it (mutes and do not disturb are in its time). */
  now() {
    return Date.now() + this.clockSkew;
  }

  /** @param {Conv} conv @returns {NotifyMode} */
  notifyMode(conv) {
    const s = conv.c.settings;
    if (!s) return { mode: 'all' };
    if (s.notify === 'none') return { mode: 'muted', until: null };
    if (s.muted_until !== null && s.muted_until > this.now()) return { mode: 'muted', until: s.muted_until };
    return { mode: s.notify === 'mentions' ? 'mentions' : 'all' };
  }

  /** Whether do not disturb is on now. */
  dnd() {
    return this.dndUntil !== null && this.dndUntil > this.now();
  }

  /**
   * Whether a message that just arrived should notify the user here: the server decides the
   * same for pushes (do not disturb, mutes, mentions only).
   * @param {Conv} conv @param {Message} m
   */
  wantsNotification(conv, m) {
    if (this.dnd()) return false;
    const { mode } = this.notifyMode(conv);
    if (mode === 'muted') return false;
    return mode === 'all' || mentionsOf(m.body).includes(this.me.user_id);
  }

  /**
   * The members of a conversation a text names with `@username`, as user ids (not the user).
   * @param {string} id @param {string} text
   */
  mentionedIds(id, text) {
    const conv = this.convs.get(id);
    if (!conv) return [];
    /** @type {Map<string, string>} */
    const byName = new Map();
    for (const m of conv.c.members || []) {
      if (m.user_id !== this.me.user_id) byName.set(m.username.toLowerCase(), m.user_id);
    }
    /** @type {Set<string>} */
    const ids = new Set();
    for (const token of mentionTokens(text)) {
      const name = token.names.find((n) => byName.has(n));
      if (name) ids.add(/** @type {string} */ (byName.get(name)));
    }
    return Array.from(ids);
  }

  // ------------------------------------------------------------------------------------------
  // A small cache so names show at once after a reload (refreshed from the server anyway).
  // ------------------------------------------------------------------------------------------

  loadCache() {
    try {
      const raw = localStorage.getItem(`parley.cache.${this.me.user_id}`);
      if (!raw) return;
      const cache = JSON.parse(raw);
      for (const u of cache.users || []) this.users.set(u.user_id, u);
      for (const [c, u] of cache.peers || []) this.peers.set(c, u);
    } catch {
      // A broken cache is only a slower start.
    }
  }

  saveCache() {
    try {
      const cache = { users: Array.from(this.users.values()).slice(-500), peers: Array.from(this.peers.entries()) };
      localStorage.setItem(`parley.cache.${this.me.user_id}`, JSON.stringify(cache));
    } catch {
      // Storage full or disabled.
    }
  }

  // ------------------------------------------------------------------------------------------
  // Conversations
  // ------------------------------------------------------------------------------------------

  async refreshConversations() {
    const started = Date.now();
    const list = await this.api.conversations();
    const seen = new Set();
    for (const c of list) {
      seen.add(c.conversation_id);
      this.upsert(c);
    }
    for (const [id, conv] of this.convs) {
      // Learnt of since the request left: the list is older than what we know.
      if (seen.has(id) || conv.seenAt >= started) continue;
      // Not in the list any more: we left or were removed.
      if (id === this.openId) conv.left = true;
      else this.convs.delete(id);
    }
    this.listLoaded = true;
    this.hooks.changed('list');
    // Direct conversations need their other member for a title and a presence dot.
    const missing = list.filter((c) => c.kind === 'direct' && !this.peers.has(c.conversation_id));
    await this.fetchDetails(missing.map((c) => c.conversation_id));
    this.watchPresence();
  }

  /** Fetches conversations with their members, a few at a time. @param {string[]} ids */
  async fetchDetails(ids) {
    const queue = [...ids];
    const worker = async () => {
      for (let id = queue.shift(); id; id = queue.shift()) {
        await this.fetchConversation(id).catch(() => {});
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  /** @param {string} id */
  async fetchConversation(id) {
    try {
      const c = await this.api.conversation(id);
      this.upsert(c);
      this.hooks.changed('list');
      this.hooks.changed('conv', id);
      this.hooks.changed('log', id);
      this.watchPresence();
      return this.convs.get(id) ?? null;
    } catch (e) {
      if (/** @type {{status?: number}} */ (e).status === 404) this.forget(id);
      throw e;
    }
  }

  /** Refetches a conversation soon (coalesced): its preview or counts need the server. @param {string} id */
  refreshSoon(id, delay = 300) {
    if (this.refreshTimers.has(id)) return;
    this.refreshTimers.set(
      id,
      setTimeout(() => {
        this.refreshTimers.delete(id);
        this.fetchConversation(id).catch(() => {});
      }, delay),
    );
  }

  /** The user is no longer in a conversation. @param {string} id */
  forget(id) {
    const conv = this.convs.get(id);
    if (!conv) return;
    if (id === this.openId) {
      conv.left = true;
    } else {
      this.convs.delete(id);
      this.logs.delete(id);
      this.gone.add(id);
    }
    this.hooks.changed('list');
    this.hooks.changed('conv', id);
  }

  /** Merges a conversation object from the server. @param {Conversation} c */
  upsert(c) {
    const id = c.conversation_id;
    this.gone.delete(id);
    let conv = this.convs.get(id);
    const members = c.members ?? conv?.c.members;
    if (conv) conv.seenAt = Date.now();
    if (!conv) {
      conv = {
        c: { ...c, members },
        activity: c.last_message ? c.last_message.ts : c.created_at,
        accounted: c.last_seq,
        left: false,
        typing: new Map(),
        pointers: new Map(),
        seenAt: Date.now(),
      };
      this.convs.set(id, conv);
    } else if (c.last_seq >= conv.accounted) {
      // The server's snapshot is at least as new as what we saw live: take its counts, but never
      // move our own read pointer back (a read may still be on its way).
      const readSeq = Math.max(c.read_seq, conv.c.read_seq);
      conv.c = {
        ...c,
        members,
        settings: c.settings ?? conv.c.settings,
        read_seq: readSeq,
        delivered_seq: Math.max(c.delivered_seq, conv.c.delivered_seq),
      };
      conv.accounted = c.last_seq;
      conv.activity = Math.max(conv.activity, c.last_message ? c.last_message.ts : c.created_at);
      if (readSeq > c.read_seq) this.recount(conv);
    } else {
      conv.c = { ...conv.c, title: c.title, members, members_count: c.members_count, settings: c.settings ?? conv.c.settings };
    }
    if (c.members) {
      let cacheChanged = false;
      for (const m of c.members) {
        const known = this.users.get(m.user_id);
        if (!known || known.display_name !== m.display_name || known.username !== m.username) {
          this.users.set(m.user_id, { user_id: m.user_id, username: m.username, display_name: m.display_name });
          cacheChanged = true;
        }
        if (m.user_id !== this.me.user_id) this.raisePointers(conv, m.user_id, m.delivered_seq, m.read_seq);
      }
      if (c.kind === 'direct') {
        const other = c.members.find((m) => m.user_id !== this.me.user_id);
        const peer = other ? other.user_id : this.me.user_id;
        if (this.peers.get(id) !== peer) {
          this.peers.set(id, peer);
          cacheChanged = true;
        }
      }
      if (cacheChanged) this.saveCache();
      if (!c.members.some((m) => m.user_id === this.me.user_id)) conv.left = true;
      else conv.left = false;
    }
    return conv;
  }

  /**
   * @param {Conv} conv @param {string} userId @param {number} delivered @param {number} read
   */
  raisePointers(conv, userId, delivered, read) {
    const p = conv.pointers.get(userId) ?? { delivered: 0, read: 0 };
    p.delivered = Math.max(p.delivered, delivered, read);
    p.read = Math.max(p.read, read);
    conv.pointers.set(userId, p);
  }

  /** Recomputes the unread count after our read pointer moved. @param {Conv} conv */
  recount(conv) {
    const c = conv.c;
    if (c.read_seq >= c.last_seq) {
      c.unread_count = 0;
      return;
    }
    const log = this.logs.get(c.conversation_id);
    if (log && log.oldest <= c.read_seq + 1 && log.newest >= c.last_seq) {
      let n = 0;
      for (const [seq, m] of log.entries) {
        if (seq > c.read_seq && seq <= log.newest && CONTENT_KINDS.has(m.kind) && m.sender_id !== this.me.user_id) n++;
      }
      c.unread_count = n;
    } else {
      this.refreshSoon(c.conversation_id);
    }
  }

  // ------------------------------------------------------------------------------------------
  // The log of a conversation
  // ------------------------------------------------------------------------------------------

  /**
   * Makes `id` the open conversation and loads what it needs: the newest page of its log (and
   * back to the first unread, within reason), its members. Rejects when it is not a
   * conversation of ours.
   * @param {string | null} id
   */
  open(id) {
    this.openId = id;
    if (!id) return Promise.resolve();
    this.watchPresence();
    let loading = this.opening.get(id);
    if (!loading) {
      loading = this.load(id).finally(() => this.opening.delete(id));
      this.opening.set(id, loading);
    }
    return loading;
  }

  /** @param {string} id */
  async load(id) {
    const details = this.fetchConversation(id).catch(() => null);
    // Straight into a chat (a reload, a link): its metadata first, so the log can be counted.
    if (!this.convs.has(id)) await details;
    if (!this.convs.has(id)) throw new Error('not a conversation of ours');
    let log = this.logs.get(id);
    if (!log) {
      const page = await this.api.history(id, { limit: PAGE });
      const conv = this.convs.get(id);
      const newest = page.length ? page[page.length - 1].seq : conv ? conv.c.last_seq : 0;
      log = {
        entries: new Map(),
        oldest: page.length ? page[0].seq : newest + 1,
        newest,
        complete: page.length < PAGE,
        loadingOlder: false,
        filling: null,
      };
      for (const m of page) {
        log.entries.set(m.seq, m);
        this.account(m, 'history');
        this.dropSent(m);
      }
      this.logs.set(id, log);
      // Load back to the first unread message, so the "new messages" divider can be shown.
      for (let i = 0; i < 4 && conv && !log.complete && log.oldest > conv.c.read_seq + 1; i++) {
        await this.loadOlder(id);
      }
      this.hooks.changed('log', id);
    }
    const conv = this.convs.get(id);
    if (conv && conv.c.last_seq > log.newest) await this.fillNewer(id);
    await details;
  }

  /** Loads the page before the oldest loaded entry. @param {string} id */
  async loadOlder(id) {
    const log = this.logs.get(id);
    if (!log || log.complete || log.loadingOlder) return;
    log.loadingOlder = true;
    try {
      const page = await this.api.history(id, { before: log.oldest, limit: PAGE });
      for (const m of page) {
        if (!log.entries.has(m.seq)) log.entries.set(m.seq, m);
        this.dropSent(m);
      }
      if (page.length) log.oldest = Math.min(log.oldest, page[0].seq);
      if (page.length < PAGE) log.complete = true;
    } finally {
      log.loadingOlder = false;
      this.hooks.changed('log', id);
    }
  }

  /** Fetches everything after the newest contiguous entry (after a reconnect or a gap). @param {string} id */
  fillNewer(id) {
    const log = this.logs.get(id);
    if (!log) return Promise.resolve();
    if (log.filling) return log.filling;
    const run = async () => {
      for (;;) {
        const page = await this.api.history(id, { after: log.newest, limit: 200 });
        for (const m of page) {
          if (!log.entries.has(m.seq)) log.entries.set(m.seq, m);
          this.account(m, 'history');
          this.dropSent(m);
        }
        // What the server returns after `newest` is all we may see after it (a member's window
        // can skip a range), so the log is contiguous up to the page's end.
        if (page.length) log.newest = Math.max(log.newest, page[page.length - 1].seq);
        while (log.entries.has(log.newest + 1)) log.newest++;
        if (page.length < 200) break;
      }
    };
    log.filling = run().finally(() => {
      log.filling = null;
      const conv = this.convs.get(id);
      if (conv) this.recount(conv);
      this.hooks.changed('log', id);
      this.hooks.changed('list');
    });
    return log.filling;
  }

  /**
   * The lines of a conversation's view: every loaded entry with edits, deletes and reactions
   * applied, then what the outbox still holds for it (shown as pending).
   * @param {string} id
   * @returns {{lines: Line[], bubbles: Map<number, Bubble>}}
   */
  view(id) {
    /** @type {Line[]} */
    const lines = [];
    /** @type {Map<number, Bubble>} */
    const bubbles = new Map();
    const log = this.logs.get(id);
    if (log) {
      const seqs = Array.from(log.entries.keys())
        .filter((s) => s >= log.oldest && s <= log.newest)
        .sort((a, b) => a - b);
      for (const seq of seqs) {
        const m = /** @type {Message} */ (log.entries.get(seq));
        if (CONTENT_KINDS.has(m.kind)) {
          /** @type {Bubble} */
          const b = {
            type: 'bubble',
            key: `m${seq}`,
            seq,
            senderId: m.sender_id,
            ts: m.ts,
            kind: m.kind,
            text: contentText(m),
            edited: false,
            deleted: false,
            replyTo: typeof m.body?.reply_to_seq === 'number' ? m.body.reply_to_seq : undefined,
            mentions: mentionsOf(m.body),
            reactions: new Map(),
            pending: null,
            clientId: m.client_id,
            media: m.kind === 'media' ? m.body || {} : null,
          };
          lines.push(b);
          bubbles.set(seq, b);
        } else if (CHANGE_KINDS.has(m.kind)) {
          applyChange(bubbles, m.kind, m.body || {}, m.sender_id);
        } else {
          lines.push({ type: 'system', key: `s${seq}`, seq, ts: m.ts, m });
        }
      }
    }
    for (const item of this.outbox.of(id)) {
      if (item.kind === 'text' || item.kind === 'media') {
        /** @type {Bubble} */
        const b = {
          type: 'bubble',
          key: `p${item.client_id}`,
          seq: 0,
          senderId: this.me.user_id,
          ts: item.created_at,
          kind: item.kind,
          text: item.kind === 'media' ? mediaLabel(item.body) : item.body.text ?? '',
          edited: false,
          deleted: false,
          replyTo: item.body.reply_to_seq,
          mentions: mentionsOf(item.body),
          reactions: new Map(),
          pending: item,
          clientId: item.client_id,
          media: item.kind === 'media' ? item.body : null,
        };
        lines.push(b);
      } else {
        applyChange(bubbles, item.kind, item.body, this.me.user_id);
      }
    }
    return { lines, bubbles };
  }

  /**
   * The delivery state of one of the user's own messages.
   * @param {string} id
   * @param {Bubble} b
   * @returns {'Sending' | 'Not sent' | 'Sent' | 'Delivered' | 'Read'}
   */
  status(id, b) {
    // An upload waiting for the network (or a rate limit) is still on its way.
    if (b.pending) return b.pending.error && !b.pending.upload?.auto ? 'Not sent' : 'Sending';
    const conv = this.convs.get(id);
    if (!conv) return 'Sent';
    const others = this.others(conv);
    if (!others.length) return 'Sent';
    let delivered = true;
    let read = true;
    for (const m of others) {
      const p = conv.pointers.get(m.user_id);
      if (!p || p.read < b.seq) read = false;
      if (!p || p.delivered < b.seq) delivered = false;
    }
    return read ? 'Read' : delivered ? 'Delivered' : 'Sent';
  }

  // ------------------------------------------------------------------------------------------
  // Incoming
  // ------------------------------------------------------------------------------------------

  /** @param {ServerFrame} f */
  onReady(f) {
    if (typeof f.server_time === 'number') this.clockSkew = f.server_time - Date.now();
    this.replaying = true;
    this.inflight.clear();
    this.typingSent.clear();
    // Subscriptions belong to a connection: a new one starts with none.
    this.watching.clear();
    this.watchPresence();
  }

  onSynced() {
    this.replaying = false;
    this.uploads.resume();
    this.flushOutbox();
    this.flushAcks();
    this.flushReads();
    this.refreshConversations()
      .then(() => {
        const id = this.openId;
        if (!id) return undefined;
        // Opening may have failed while offline; otherwise fetch what the replay did not bring.
        return this.logs.has(id) ? this.fillNewer(id) : this.open(id);
      })
      .catch(() => {});
  }

  /** @param {ServerFrame} f */
  onFrame(f) {
    switch (f.type) {
      case 'message':
        this.ingest(/** @type {Message} */ (/** @type {unknown} */ (f)), this.replaying ? 'replay' : 'live');
        break;
      case 'sent':
        this.onSent(f);
        break;
      case 'receipt':
        this.onReceipt(f);
        break;
      case 'typing':
        this.onTyping(f);
        break;
      case 'presence':
        if (f.user_id) {
          this.presence.set(f.user_id, { user_id: f.user_id, online: !!f.online, last_seen: f.last_seen ?? null });
          this.hooks.changed('presence');
        }
        break;
      case 'conversation':
        this.onConversation(/** @type {Conversation} */ (/** @type {unknown} */ (f)));
        break;
      case 'push_invalidated':
        this.hooks.pushInvalidated();
        break;
      case 'error':
        this.onError(f);
        break;
    }
  }

  /**
   * Takes one log entry from anywhere (live, replay, history, another tab, our own `sent`).
   * @param {Message} m
   * @param {'live' | 'replay' | 'history' | 'tab' | 'sent'} origin
   */
  ingest(m, origin) {
    const id = m.conversation_id;
    if (!this.convs.has(id)) {
      // A conversation we do not know yet (the `conversation` frame may still be coming).
      if (!this.gone.has(id)) this.refreshSoon(id, 50);
      return;
    }
    const conv = /** @type {Conv} */ (this.convs.get(id));
    this.account(m, origin);
    this.dropSent(m);
    const log = this.logs.get(id);
    if (log && m.seq >= log.oldest && !log.entries.has(m.seq)) {
      log.entries.set(m.seq, m);
      while (log.entries.has(log.newest + 1)) log.newest++;
      if (m.seq > log.newest + 1) this.fillGapSoon(id);
      this.hooks.changed('log', id);
    }
    if (origin === 'live' || origin === 'replay') this.ack(id, m.seq);
    if (origin === 'live' && m.sender_id !== this.me.user_id && CONTENT_KINDS.has(m.kind)) {
      this.hooks.notify(conv, m);
    }
  }

  /**
   * Reflects an entry in the conversation's counters, preview and members, once per seq.
   * @param {Message} m
   * @param {'live' | 'replay' | 'history' | 'tab' | 'sent'} origin
   */
  account(m, origin) {
    const conv = this.convs.get(m.conversation_id);
    if (!conv) return;
    const c = conv.c;
    const me = this.me.user_id;
    if (m.sender_id !== me) conv.typing.delete(m.sender_id);
    if (m.seq <= conv.accounted) return;
    conv.accounted = m.seq;
    c.last_seq = Math.max(c.last_seq, m.seq);
    conv.activity = Math.max(conv.activity, m.ts);
    const body = m.body || {};
    if (CONTENT_KINDS.has(m.kind)) {
      if (m.sender_id !== me && m.seq > c.read_seq) c.unread_count++;
      if (!c.last_message || c.last_message.seq < m.seq) c.last_message = m;
    } else if (m.kind === 'edit' && c.last_message && c.last_message.seq === body.target_seq) {
      c.last_message = { ...c.last_message, body: { ...c.last_message.body, text: body.text, edited: true } };
    } else if (m.kind === 'delete') {
      if (c.last_message && c.last_message.seq === body.target_seq) this.refreshSoon(c.conversation_id);
    } else if (m.kind === 'title_changed' && typeof body.title === 'string') {
      c.title = body.title;
    } else if ((m.kind === 'member_removed' || m.kind === 'member_left') && body.user_id === me) {
      conv.left = true;
      this.hooks.changed('conv', c.conversation_id);
    } else if (m.kind === 'members_added' || m.kind === 'member_removed' || m.kind === 'member_left' || m.kind === 'role_changed') {
      if (!conv.left && origin !== 'history') this.refreshSoon(c.conversation_id);
    }
    this.hooks.changed('list');
    void origin;
  }

  /** Our own message came back from the server (history, another tab): its send is done. @param {Message} m */
  dropSent(m) {
    if (m.sender_id === this.me.user_id && m.client_id && this.outbox.get(m.client_id)) {
      this.inflight.delete(m.client_id);
      this.outbox.remove(m.client_id);
    }
  }

  /** @param {string} id */
  fillGapSoon(id) {
    if (this.gapTimers.has(id)) return;
    // Live frames right behind usually close the gap themselves; give them a moment.
    this.gapTimers.set(
      id,
      setTimeout(() => {
        this.gapTimers.delete(id);
        const log = this.logs.get(id);
        if (!log) return;
        const ahead = Array.from(log.entries.keys()).some((s) => s > log.newest + 1);
        if (ahead) this.fillNewer(id).catch(() => this.fillGapSoon(id));
      }, 400),
    );
  }

  /** @param {ServerFrame} f */
  onSent(f) {
    const clientId = f.client_id || f.ref || '';
    this.inflight.delete(clientId);
    const item = this.outbox.get(clientId);
    if (!f.conversation_id || typeof f.seq !== 'number') return;
    if (!item) {
      // Another tab finished this send first; it tells us the message, or history will.
      const id = f.conversation_id;
      const log = this.logs.get(id);
      if (log && !log.entries.has(f.seq)) setTimeout(() => this.fillNewer(id).catch(() => {}), 500);
      return;
    }
    /** @type {Message} */
    const m = {
      conversation_id: f.conversation_id,
      seq: f.seq,
      message_id: f.message_id || '',
      sender_id: this.me.user_id,
      sender_device_id: this.me.device_id,
      client_id: clientId,
      ts: f.ts || Date.now(),
      kind: item.kind,
      body: item.body,
    };
    this.ingest(m, 'sent');
    this.outbox.remove(clientId);
    this.channel?.postMessage({ t: 'message', m });
  }

  /** @param {ServerFrame} f */
  onReceipt(f) {
    const conv = f.conversation_id ? this.convs.get(f.conversation_id) : undefined;
    if (!conv || !f.user_id) return;
    const delivered = f.delivered_seq ?? 0;
    const read = f.read_seq ?? 0;
    if (f.user_id === this.me.user_id) {
      // Another device of ours read or received: keep the unread count in step.
      conv.c.delivered_seq = Math.max(conv.c.delivered_seq, delivered);
      if (read > conv.c.read_seq) {
        conv.c.read_seq = read;
        this.recount(conv);
      }
      this.hooks.changed('list');
    } else {
      this.raisePointers(conv, f.user_id, delivered, read);
    }
    this.hooks.changed('log', conv.c.conversation_id);
  }

  /** @param {ServerFrame} f */
  onTyping(f) {
    const conv = f.conversation_id ? this.convs.get(f.conversation_id) : undefined;
    if (!conv || !f.user_id || f.user_id === this.me.user_id) return;
    if (f.active) conv.typing.set(f.user_id, Date.now() + TYPING_TTL_MS);
    else conv.typing.delete(f.user_id);
    this.hooks.changed('conv', conv.c.conversation_id);
    this.hooks.changed('list');
  }

  sweepTyping() {
    const now = Date.now();
    for (const conv of this.convs.values()) {
      let changed = false;
      for (const [user, until] of conv.typing) {
        if (until <= now) {
          conv.typing.delete(user);
          changed = true;
        }
      }
      if (changed) {
        this.hooks.changed('conv', conv.c.conversation_id);
        this.hooks.changed('list');
      }
    }
  }

  /** @param {Conversation} c */
  onConversation(c) {
    const known = this.convs.has(c.conversation_id);
    const conv = this.upsert(c);
    if (!known) conv.activity = Math.max(conv.activity, Date.now() + this.clockSkew);
    this.hooks.changed('list');
    this.hooks.changed('conv', c.conversation_id);
    this.hooks.changed('log', c.conversation_id);
    this.watchPresence();
  }

  /** @param {ServerFrame} f */
  onError(f) {
    const item = f.ref ? this.outbox.get(f.ref) : undefined;
    if (!item) {
      console.warn('parley: server error', f.code, f.message);
      return;
    }
    this.inflight.delete(item.client_id);
    if (f.code === 'rate_limited' || f.code === 'internal' || f.code === 'unavailable') {
      setTimeout(() => this.flushOutbox(), Math.max(250, f.retry_after_ms ?? 1_000));
      return;
    }
    const reasons = /** @type {Record<string, string>} */ ({
      not_member: 'You are not a member of this conversation.',
      payload_too_large: item.kind === 'media' ? 'The caption is too long.' : 'The message is too long.',
      forbidden: 'Not allowed.',
      not_found: 'The message it refers to is gone.',
    });
    this.outbox.update(item.client_id, { error: reasons[f.code || ''] || f.message || 'The server refused it.' });
  }

  /** @param {any} data */
  onTabMessage(data) {
    if (!data || typeof data !== 'object') return;
    if (data.t === 'message' && data.m) this.ingest(data.m, 'tab');
    if (data.t === 'read' && typeof data.c === 'string' && typeof data.s === 'number') {
      const conv = this.convs.get(data.c);
      if (conv && data.s > conv.c.read_seq) {
        conv.c.read_seq = data.s;
        this.recount(conv);
        this.hooks.changed('list');
        this.hooks.changed('log', data.c);
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Outgoing
  // ------------------------------------------------------------------------------------------

  /**
   * Queues a send; it goes out now if connected, else on the next connection.
   * @param {string} conversationId
   * @param {OutboxItem['kind']} kind
   * @param {MessageBody} body
   */
  enqueue(conversationId, kind, body) {
    /** @type {OutboxItem} */
    const item = { client_id: newClientId(), conversation_id: conversationId, kind, body, created_at: Date.now() };
    this.outbox.add(item);
    if (kind === 'text') this.typingSent.delete(conversationId);
    return item;
  }

  /**
   * @param {string} id @param {string} text @param {number} [replyTo]
   * @param {string[]} [mentions] members the text names (they may be notified when others are not)
   */
  sendText(id, text, replyTo, mentions) {
    /** @type {MessageBody} */
    const body = { text };
    if (replyTo) body.reply_to_seq = replyTo;
    if (mentions && mentions.length) body.mentions = mentions;
    return this.enqueue(id, 'text', body);
  }

  /** @param {string} id @param {number} seq @param {string} text */
  edit(id, seq, text) {
    return this.enqueue(id, 'edit', { target_seq: seq, text });
  }

  /** @param {string} id @param {number} seq */
  remove(id, seq) {
    return this.enqueue(id, 'delete', { target_seq: seq });
  }

  /** @param {string} id @param {number} seq @param {string} emoji empty to remove */
  react(id, seq, emoji) {
    return this.enqueue(id, 'reaction', { target_seq: seq, emoji });
  }

  /**
   * Queues a file for a conversation: it is uploaded, then sent (see uploads.js).
   * @param {string} id @param {Blob} file @param {import('./uploads.js').SendOptions} [opts]
   */
  sendMedia(id, file, opts) {
    return this.uploads.add(id, file, opts);
  }

  /**
   * Tries a refused send again (same client_id); an attachment's upload continues from where it
   * stopped (not uploaded again when the server has it).
   * @param {string} clientId
   */
  retry(clientId) {
    const item = this.outbox.get(clientId);
    if (item && item.kind === 'media' && item.upload) this.uploads.retry(clientId);
    else this.outbox.update(clientId, { error: undefined });
  }

  /** @param {string} clientId */
  discard(clientId) {
    this.inflight.delete(clientId);
    const item = this.outbox.get(clientId);
    if (item && item.kind === 'media') this.uploads.discard(clientId);
    else this.outbox.remove(clientId);
  }

  /** Writes every queued send not yet written on this connection, oldest first. */
  flushOutbox() {
    if (!this.conn.ready) return;
    for (const item of this.outbox.pending()) {
      if (this.inflight.has(item.client_id)) continue;
      const ok = this.conn.send({
        type: 'send',
        ref: item.client_id,
        conversation_id: item.conversation_id,
        client_id: item.client_id,
        kind: item.kind,
        body: item.body,
      });
      if (!ok) return;
      this.inflight.add(item.client_id);
    }
  }

  /** @param {string} id @param {number} seq */
  ack(id, seq) {
    this.pendingAcks.set(id, Math.max(seq, this.pendingAcks.get(id) ?? 0));
    if (!this.ackTimer) this.ackTimer = setTimeout(() => this.flushAcks(), 50);
  }

  flushAcks() {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    for (const [id, seq] of this.pendingAcks) {
      if (!this.conn.send({ type: 'ack', conversation_id: id, seq })) return;
      this.pendingAcks.delete(id);
    }
  }

  /**
   * The user has seen everything up to `seq` (an entry became visible on screen).
   * @param {string} id @param {number} seq
   */
  markRead(id, seq) {
    const conv = this.convs.get(id);
    if (!conv || conv.left || seq <= conv.c.read_seq) return;
    conv.c.read_seq = seq;
    conv.c.delivered_seq = Math.max(conv.c.delivered_seq, seq);
    this.recount(conv);
    this.pendingReads.set(id, Math.max(seq, this.pendingReads.get(id) ?? 0));
    if (!this.readTimer) this.readTimer = setTimeout(() => this.flushReads(), 150);
    this.channel?.postMessage({ t: 'read', c: id, s: seq });
    this.hooks.changed('list');
  }

  flushReads() {
    clearTimeout(this.readTimer);
    this.readTimer = undefined;
    for (const [id, seq] of this.pendingReads) {
      if (!this.conn.send({ type: 'read', conversation_id: id, seq })) return;
      this.pendingReads.delete(id);
    }
  }

  /**
   * The user is (or stopped) typing in a conversation. `active: true` goes out at most every
   * 2 s (the server thins it further), `false` only after a `true`.
   * @param {string} id @param {boolean} active
   */
  typing(id, active) {
    const last = this.typingSent.get(id);
    if (active) {
      if (last && Date.now() - last < 2_000) return;
      if (this.conn.send({ type: 'typing', conversation_id: id, active: true })) this.typingSent.set(id, Date.now());
    } else if (last) {
      this.typingSent.delete(id);
      this.conn.send({ type: 'typing', conversation_id: id, active: false });
    }
  }

  /** Subscribes to the presence of every direct peer and of the open group's members. */
  watchPresence() {
    const want = new Set();
    for (const conv of this.convs.values()) {
      const peer = this.peer(conv);
      if (peer && peer !== this.me.user_id) want.add(peer);
    }
    const open = this.openId ? this.convs.get(this.openId) : undefined;
    if (open && open.c.kind === 'group') for (const m of this.others(open)) want.add(m.user_id);
    const add = Array.from(want).filter((u) => !this.watching.has(u));
    if (!add.length || !this.conn.ready) return;
    for (let i = 0; i < add.length; i += 256) {
      const ids = add.slice(i, i + 256);
      if (this.conn.send({ type: 'presence_subscribe', user_ids: ids })) for (const u of ids) this.watching.add(u);
    }
  }

  // ------------------------------------------------------------------------------------------
  // Conversations: start, manage
  // ------------------------------------------------------------------------------------------

  /** @param {string} username @returns {Promise<string>} the conversation id */
  async startDirect(username) {
    const user = await this.api.user(username.trim().replace(/^@/u, '').toLowerCase());
    const c = await this.api.direct(user.user_id);
    this.users.set(user.user_id, user);
    this.peers.set(c.conversation_id, user.user_id);
    this.saveCache();
    const conv = this.upsert(c);
    conv.activity = Math.max(conv.activity, Date.now());
    this.hooks.changed('list');
    this.watchPresence();
    return c.conversation_id;
  }

  /**
   * Looks up usernames; throws an Error naming the ones that do not exist.
   * @param {string[]} usernames
   * @returns {Promise<User[]>}
   */
  async lookupAll(usernames) {
    const names = Array.from(new Set(usernames.map((u) => u.trim().replace(/^@/u, '').toLowerCase()).filter(Boolean)));
    const results = await Promise.all(
      names.map((n) =>
        this.api.user(n).then(
          (u) => u,
          (e) => {
            if (/** @type {{status?: number}} */ (e).status === 404) return null;
            throw e;
          },
        ),
      ),
    );
    const missing = names.filter((_, i) => !results[i]);
    if (missing.length) throw new Error(`No user named ${missing.map((n) => `“${n}”`).join(', ')}.`);
    const users = /** @type {User[]} */ (results);
    for (const u of users) this.users.set(u.user_id, u);
    return users;
  }

  /** @param {string} title @param {string[]} usernames @returns {Promise<string>} */
  async createGroup(title, usernames) {
    const users = await this.lookupAll(usernames);
    const c = await this.api.group(title, users.map((u) => u.user_id));
    const conv = this.upsert(c);
    conv.activity = Math.max(conv.activity, Date.now());
    this.hooks.changed('list');
    return c.conversation_id;
  }

  /** @param {string} id @param {string} title */
  async rename(id, title) {
    this.upsert(await this.api.rename(id, title));
    this.hooks.changed('conv', id);
    this.hooks.changed('list');
  }

  /** @param {string} id @param {string[]} usernames */
  async addMembers(id, usernames) {
    const users = await this.lookupAll(usernames);
    this.upsert(await this.api.addMembers(id, users.map((u) => u.user_id)));
    this.hooks.changed('conv', id);
    this.watchPresence();
  }

  /** @param {string} id @param {string} userId */
  async removeMember(id, userId) {
    await this.api.removeMember(id, userId);
    await this.fetchConversation(id).catch(() => {});
  }

  /** @param {string} id @param {string} userId @param {'admin' | 'member'} role */
  async setRole(id, userId, role) {
    this.upsert(await this.api.setRole(id, userId, role));
    this.hooks.changed('conv', id);
  }

  /**
   * Changes how a conversation notifies the user (the server tells the user's other devices).
   * @param {string} id @param {Partial<ConversationSettings>} patch
   */
  async setNotify(id, patch) {
    const settings = await this.api.conversationSettings(id, patch);
    const conv = this.convs.get(id);
    if (conv) conv.c.settings = settings;
    this.hooks.changed('conv', id);
    this.hooks.changed('list');
  }

  /** Do not disturb until `until` (server ms), or off with null. @param {number | null} until */
  async setDnd(until) {
    await this.api.setDnd(until);
    this.dndUntil = until;
    this.hooks.changed('me');
  }

  /** @param {string} id */
  async leave(id) {
    await this.api.removeMember(id, this.me.user_id);
    if (this.openId === id) this.openId = null;
    this.forget(id);
    for (const item of this.outbox.of(id)) this.discard(item.client_id);
  }
}

/** The text a content entry shows. @param {Message} m */
function contentText(m) {
  const body = m.body || {};
  if (m.kind === 'text') return body.text ?? '';
  if (m.kind === 'media') return mediaLabel(body);
  return '🔒 Encrypted message';
}

/**
 * Applies an edit, delete or reaction to the bubble it targets, if loaded.
 * @param {Map<number, Bubble>} bubbles
 * @param {string} kind
 * @param {MessageBody} body
 * @param {string} senderId
 */
function applyChange(bubbles, kind, body, senderId) {
  const target = typeof body.target_seq === 'number' ? bubbles.get(body.target_seq) : undefined;
  if (!target || target.deleted) return;
  if (kind === 'edit' && typeof body.text === 'string') {
    target.text = body.text;
    target.edited = true;
  } else if (kind === 'delete') {
    target.deleted = true;
    target.text = '';
    target.reactions.clear();
  } else if (kind === 'reaction') {
    if (body.emoji) target.reactions.set(senderId, body.emoji);
    else target.reactions.delete(senderId);
  }
}

/** The user ids a message body mentions (a well-formed list, or none). @param {MessageBody | undefined} body */
export function mentionsOf(body) {
  const m = body?.mentions;
  return Array.isArray(m) ? m.filter((x) => typeof x === 'string') : [];
}

/** `@username` at the start or after something that is not part of a word or an address. */
const MENTION_RE = /(?<![\p{L}\p{N}_.@-])@([a-z0-9_.-]{1,32})/giu;

/**
 * Each `@username` of a text: where its `@` is, and the names it may be, lowercased and longest
 * first (a name may end in dots or dashes, which also end sentences: "@bob." is "bob." or "bob").
 * @param {string} text
 * @returns {{index: number, names: string[]}[]}
 */
export function mentionTokens(text) {
  return Array.from(text.matchAll(MENTION_RE), (match) => {
    const name = match[1].toLowerCase();
    const trimmed = name.replace(/[.-]+$/u, '');
    return { index: match.index ?? 0, names: trimmed && trimmed !== name ? [name, trimmed] : [name] };
  });
}

/** A fresh client_id: random, so no two sends anywhere share one. */
function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export { CONTENT_KINDS };
