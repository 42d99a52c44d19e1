// The message history of the open conversation: bubbles grouped by sender and day, the "new
// messages" divider, replies, reactions, ticks. Rendering is keyed: a line's element is rebuilt
// only when what it shows changed, and the scroll position stays where the reader left it (at
// the bottom when they were there, on the same message when older history comes in above).
//
// Reading is what the user actually sees: an IntersectionObserver reports the entries on
// screen while the page is visible, and the highest of them becomes the `read` pointer.

import { avatar, colorIndex, h, reconcileChildren } from '../dom.js';
import { icon } from '../icons.js';
import { clock, dayLabel, dayStart, fullDateTime, snippet } from '../format.js';
import { mentionTokens } from '../state.js';
import { mediaContent, openViewer } from './media.js';
import { mediaKind } from '../media.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../state.js').Bubble} Bubble */
/** @typedef {import('../state.js').Line} Line */
/** @typedef {import('../types.js').Message} Message */

/**
 * What the user can do to a message; the chat view implements it.
 * @typedef {object} Actions
 * @property {(b: Bubble, anchor: HTMLElement) => void} menu
 * @property {(b: Bubble, emoji: string) => void} toggleReaction
 * @property {(clientId: string) => void} retry
 * @property {(clientId: string) => void} discard
 */

/**
 * @typedef {object} Item
 * @property {string} key
 * @property {string} sig
 * @property {() => HTMLElement} build
 * @property {number} seq 0 for separators and pending messages
 */

/** Consecutive messages of one sender closer than this share a group. */
const GROUP_GAP_MS = 5 * 60_000;
/** How close to the bottom counts as "at the bottom". */
const BOTTOM_SLACK_PX = 80;
/** Within this distance of the top, the previous page is loaded. */
const LOAD_OLDER_PX = 600;

export class MessageList {
  /** @param {ChatState} state @param {Actions} actions */
  constructor(state, actions) {
    this.state = state;
    this.actions = actions;
    this.top = h('div', { class: 'history-top' });
    this.list = h('ol', { class: 'message-list' });
    this.scroller = h(
      'section',
      { class: 'messages', attrs: { 'aria-label': 'Messages', tabindex: 0 } },
      this.top,
      this.list,
    );
    /** @type {Map<string, {el: HTMLElement, sig: string, seq: number}>} */
    this.nodes = new Map();
    /** @type {string | null} */
    this.convId = null;
    /** The read pointer when the conversation was opened: the divider goes after it. @type {number | null} */
    this.readAtOpen = null;
    /** Only messages up to this seq were there to be unread when it was opened. */
    this.lastAtOpen = 0;
    /** Whether the first screenful has been positioned. */
    this.positioned = false;
    /** Scroll to the bottom on the next render (the user sent something). */
    this.forceBottom = false;
    /** A message to scroll to and flash once it is loaded. @type {number | null} */
    this.pendingJump = null;
    this.olderRetryAt = 0;
    /** Entries on screen now. @type {Map<Element, number>} */
    this.onScreen = new Map();
    /**
     * The media part of each bubble, kept when the bubble is rebuilt for something else (a
     * reaction, a tick), so a playing voice message or video goes on. @type {Map<string, {sig: string, el: HTMLElement}>}
     */
    this.mediaParts = new Map();

    this.io = new IntersectionObserver((entries) => this.onIntersect(entries), {
      root: this.scroller,
      threshold: [0, 0.5, 1],
    });
    this.scroller.addEventListener('scroll', () => this.onScroll(), { passive: true });
    document.addEventListener('visibilitychange', () => this.maybeRead());
    window.addEventListener('focus', () => this.maybeRead());
    /** @type {(() => void) | null} */
    this.onScrollChange = null;
  }

  /** Switches to another conversation (or none). @param {string | null} id */
  show(id) {
    if (id === this.convId) return;
    this.convId = id;
    this.readAtOpen = null;
    this.positioned = false;
    this.pendingJump = null;
    this.io.disconnect();
    this.onScreen.clear();
    this.nodes.clear();
    this.mediaParts.clear();
    this.list.replaceChildren();
    this.top.replaceChildren();
  }

  /** Whether the reader is at (or near) the newest message. */
  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < BOTTOM_SLACK_PX;
  }

  scrollToBottom(smooth = false) {
    this.scroller.scrollTo({ top: this.scroller.scrollHeight, behavior: smooth ? 'smooth' : 'instant' });
  }

  /** Scrolls to a message and flashes it (loading older pages until it is there). @param {number} seq */
  jumpTo(seq) {
    const node = this.nodes.get(`m${seq}`);
    if (node) {
      node.el.scrollIntoView({ block: 'center', behavior: 'smooth' });
      node.el.classList.remove('flash');
      void node.el.offsetWidth;
      node.el.classList.add('flash');
      this.pendingJump = null;
      return;
    }
    const log = this.convId ? this.state.logs.get(this.convId) : undefined;
    if (log && !log.complete && seq < log.oldest) {
      this.pendingJump = seq;
      this.state.loadOlder(/** @type {string} */ (this.convId)).catch(() => {});
    }
  }

  render() {
    const id = this.convId;
    if (!id) return;
    const state = this.state;
    const conv = state.convs.get(id);
    const log = state.logs.get(id);
    if (!conv || !log) {
      this.top.replaceChildren(h('div', { class: 'spinner', attrs: { role: 'progressbar', 'aria-label': 'Loading messages' } }));
      return;
    }
    if (this.readAtOpen === null) {
      this.readAtOpen = conv.c.read_seq;
      this.lastAtOpen = log.newest;
    } else if (document.visibilityState !== 'visible' && this.dividerSeq(id) === null) {
      // Away from the tab: what arrives now is new to the reader when they come back.
      this.readAtOpen = conv.c.read_seq;
      this.lastAtOpen = Infinity;
    }
    const items = this.items(id);

    // Where the reader is, to keep them there.
    const wasAtBottom = this.atBottom();
    const anchor = this.anchor();

    /** @type {HTMLElement[]} */
    const elements = [];
    const keys = new Set();
    for (const item of items) {
      keys.add(item.key);
      const old = this.nodes.get(item.key);
      if (old && old.sig === item.sig) {
        elements.push(old.el);
        continue;
      }
      if (old) this.unwatch(old.el);
      const el = item.build();
      this.nodes.set(item.key, { el, sig: item.sig, seq: item.seq });
      if (item.seq) this.watch(el, item.seq);
      elements.push(el);
    }
    for (const [key, node] of this.nodes) {
      if (!keys.has(key)) {
        this.unwatch(node.el);
        this.nodes.delete(key);
      }
    }
    for (const key of this.mediaParts.keys()) if (!keys.has(key)) this.mediaParts.delete(key);
    reconcileChildren(this.list, elements);

    this.top.replaceChildren(
      log.complete
        ? h('div', { class: 'history-start' }, conv.c.kind === 'group' ? 'This is the start of the group.' : 'This is the start of your conversation.')
        : h('div', { class: 'spinner', attrs: { role: 'progressbar', 'aria-label': 'Loading older messages' } }),
    );

    // Put the view where it belongs.
    if (!this.positioned) {
      const divider = this.list.querySelector('.divider.unread');
      if (divider instanceof HTMLElement) {
        this.scroller.scrollTop = Math.max(0, divider.offsetTop - 12);
      } else {
        this.scrollToBottom();
      }
      this.positioned = true;
    } else if (this.forceBottom || wasAtBottom) {
      this.scrollToBottom();
    } else if (anchor) {
      const node = this.nodes.get(anchor.key);
      if (node) this.scroller.scrollTop = node.el.offsetTop - anchor.offset;
    }
    this.forceBottom = false;
    if (this.pendingJump !== null) this.jumpTo(this.pendingJump);
    this.maybeLoadOlder();
    this.maybeRead();
    this.onScrollChange?.();
  }

  /** The first line at least partly on screen, and its distance from the top of the view. */
  anchor() {
    const top = this.scroller.scrollTop;
    for (const [key, node] of this.nodes) {
      if (!node.el.isConnected) continue;
      if (node.el.offsetTop + node.el.offsetHeight > top) return { key, offset: node.el.offsetTop - top };
    }
    return null;
  }

  onScroll() {
    this.maybeLoadOlder();
    this.onScrollChange?.();
  }

  maybeLoadOlder() {
    const id = this.convId;
    const log = id ? this.state.logs.get(id) : undefined;
    if (!id || !log || log.complete || log.loadingOlder || !this.positioned) return;
    if (this.scroller.scrollTop > LOAD_OLDER_PX || Date.now() < this.olderRetryAt) return;
    this.state.loadOlder(id).catch(() => {
      this.olderRetryAt = Date.now() + 3_000;
    });
  }

  /**
   * The media part of a bubble: the one already shown when nothing it shows changed.
   * @param {Bubble} b @param {import('../types.js').MessageBody} media
   */
  mediaPart(b, media) {
    const upload = b.pending?.upload;
    const sig = JSON.stringify([
      media.media_id, media.content_type, media.size, media.name, media.width, media.height, media.duration_ms,
      media.thumbnail ? media.thumbnail.length : 0, media.blurhash, upload ? upload.phase : '', upload?.fatal ? 'f' : '',
    ]);
    const kept = this.mediaParts.get(b.key);
    if (kept && kept.sig === sig) return kept.el;
    const el = mediaContent(this.state, b, (x) => this.viewer(x));
    this.mediaParts.set(b.key, { sig, el });
    return el;
  }

  /** Opens the full-screen viewer on a picture, with the conversation's others a swipe away. @param {Bubble} b */
  viewer(b) {
    if (!this.convId) return;
    const pictures = this.state
      .view(this.convId)
      .lines.filter((l) => l.type === 'bubble' && !!l.media && !l.deleted && mediaKind(l.media) === 'image')
      .map((l) => /** @type {Bubble} */ (l));
    const index = pictures.findIndex((p) => p.key === b.key);
    const list = index >= 0 ? pictures : [b];
    openViewer(
      this.state,
      list.map((p) => ({ body: /** @type {import('../types.js').MessageBody} */ (p.media), senderId: p.senderId, ts: p.ts, clientId: p.clientId })),
      Math.max(0, index),
    );
  }

  // --- touch ---

  /**
   * Opens the message menu on a right click, or on a long press (touch screens have no hover
   * for the "⋯" button).
   * @param {HTMLElement} el @param {() => void} open
   */
  pressable(el, open) {
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    let x = 0;
    let y = 0;
    let openedAt = 0;
    const cancel = () => clearTimeout(timer);
    el.addEventListener('pointerdown', (e) => {
      if (e.pointerType === 'mouse') return;
      x = e.clientX;
      y = e.clientY;
      cancel();
      timer = setTimeout(() => {
        openedAt = Date.now();
        open();
      }, 450);
    });
    el.addEventListener('pointermove', (e) => {
      if (Math.abs(e.clientX - x) > 10 || Math.abs(e.clientY - y) > 10) cancel();
    });
    el.addEventListener('pointerup', cancel);
    el.addEventListener('pointercancel', cancel);
    el.addEventListener('contextmenu', (e) => {
      e.preventDefault();
      // A long press fires this too, after our own timer did.
      if (Date.now() - openedAt > 1_000) open();
    });
  }

  // --- reading ---

  /** @param {Element} el @param {number} seq */
  watch(el, seq) {
    const conv = this.convId ? this.state.convs.get(this.convId) : undefined;
    if (conv && seq <= conv.c.read_seq) return;
    this.io.observe(el);
  }

  /** @param {Element} el */
  unwatch(el) {
    this.io.unobserve(el);
    this.onScreen.delete(el);
  }

  /** @param {IntersectionObserverEntry[]} entries */
  onIntersect(entries) {
    for (const e of entries) {
      const seq = Number(/** @type {HTMLElement} */ (e.target).dataset.seq || 0);
      const rootHeight = e.rootBounds ? e.rootBounds.height : 0;
      const seen = e.isIntersecting && (e.intersectionRatio >= 0.5 || e.intersectionRect.height >= rootHeight * 0.5);
      if (seen && seq) this.onScreen.set(e.target, seq);
      else this.onScreen.delete(e.target);
    }
    this.maybeRead();
  }

  /** Marks read what is on screen, if the user can see the page. */
  maybeRead() {
    if (!this.convId || document.visibilityState !== 'visible' || !this.onScreen.size) return;
    const max = Math.max(...this.onScreen.values());
    const conv = this.state.convs.get(this.convId);
    if (!conv || max <= conv.c.read_seq) return;
    this.state.markRead(this.convId, max);
    for (const el of this.onScreen.keys()) {
      const seq = Number(/** @type {HTMLElement} */ (el).dataset.seq || 0);
      if (seq <= max) this.unwatch(el);
    }
  }

  // --- what to show ---

  /** The seq of the first message that was unread when the conversation was opened. @param {string} id */
  dividerSeq(id) {
    if (this.readAtOpen === null) return null;
    const log = this.state.logs.get(id);
    if (!log) return null;
    const me = this.state.me.user_id;
    const last = Math.min(log.newest, this.lastAtOpen);
    for (let seq = Math.max(this.readAtOpen + 1, log.oldest); seq <= last; seq++) {
      const m = log.entries.get(seq);
      if (m && m.sender_id !== me && (m.kind === 'text' || m.kind === 'media' || m.kind === 'encrypted')) return seq;
    }
    return null;
  }

  /** Clears the "new messages" divider (the user replied). */
  clearDivider() {
    const conv = this.convId ? this.state.convs.get(this.convId) : undefined;
    if (conv) {
      this.readAtOpen = conv.c.last_seq;
      this.lastAtOpen = conv.c.last_seq;
    }
  }

  /** @param {string} id @returns {Item[]} */
  items(id) {
    const state = this.state;
    const conv = /** @type {import('../state.js').Conv} */ (state.convs.get(id));
    const group = conv.c.kind === 'group';
    const me = state.me.user_id;
    const { lines, bubbles } = state.view(id);
    const divider = this.dividerSeq(id);

    /** @type {(Line | {type: 'day', ts: number} | {type: 'divider'})[]} */
    const seq = [];
    let day = -1;
    for (const line of lines) {
      const d = dayStart(line.ts);
      if (d !== day) {
        seq.push({ type: 'day', ts: line.ts });
        day = d;
      }
      if (divider !== null && line.type === 'bubble' && line.seq === divider) seq.push({ type: 'divider' });
      seq.push(line);
    }

    /** @type {Item[]} */
    const items = [];
    for (let i = 0; i < seq.length; i++) {
      const line = seq[i];
      if (line.type === 'day') {
        const label = dayLabel(line.ts);
        items.push({
          key: `d${dayStart(line.ts)}`,
          sig: label,
          seq: 0,
          build: () => h('li', { class: 'divider day', attrs: { role: 'separator' } }, h('span', null, label)),
        });
      } else if (line.type === 'divider') {
        items.push({
          key: 'unread',
          sig: 'unread',
          seq: 0,
          build: () => h('li', { class: 'divider unread', attrs: { role: 'separator' } }, h('span', null, 'New messages')),
        });
      } else if (line.type === 'system') {
        const text = systemText(state, line.m, group);
        items.push({
          key: line.key,
          sig: text,
          seq: line.seq,
          build: () =>
            h('li', { class: 'system', data: { seq: String(line.seq) } }, h('span', { class: 'system-text', attrs: { title: fullDateTime(line.ts) } }, text)),
        });
      } else {
        const prev = seq[i - 1];
        const next = seq[i + 1];
        const first = !(prev && prev.type === 'bubble' && prev.senderId === line.senderId && line.ts - prev.ts < GROUP_GAP_MS);
        const last = !(next && next.type === 'bubble' && next.senderId === line.senderId && next.ts - line.ts < GROUP_GAP_MS);
        const own = line.senderId === me;
        const status = own ? state.status(id, line) : null;
        const reply = line.replyTo !== undefined ? quoteOf(state, bubbles, line.replyTo) : null;
        const reactions = summarize(line.reactions, me);
        const senderName = group && !own ? state.userName(line.senderId) : '';
        const mentioned = mentionedNames(state, line.mentions);
        const canAct = !line.deleted;
        const m = line.media;
        const media = m
          ? [m.media_id, m.content_type, m.size, m.name, m.caption, m.width, m.height, m.duration_ms, m.thumbnail ? m.thumbnail.length : 0, m.blurhash]
          : null;
        const sig = JSON.stringify([
          media,
          line.text,
          line.edited,
          line.deleted,
          status,
          first,
          last,
          senderName,
          reply,
          reactions,
          line.pending ? line.pending.error || 'p' : '',
          line.ts,
          mentioned,
        ]);
        items.push({
          key: line.key,
          sig,
          seq: line.seq,
          build: () => this.bubble(line, { own, first, last, status, reply, reactions, senderName, group, canAct, mentioned }),
        });
      }
    }
    return items;
  }

  /**
   * @param {Bubble} b
   * @param {{own: boolean, first: boolean, last: boolean, status: string | null, group: boolean, canAct: boolean,
   *   reply: {name: string, text: string, seq: number, sender: string} | null, reactions: [string, number, boolean][], senderName: string,
   *   mentioned: [string, boolean][]}} o
   */
  bubble(b, o) {
    const classes = ['msg', o.own ? 'own' : 'other', o.first ? 'first' : '', o.last ? 'last' : '', b.pending ? 'pending' : ''];
    const waiting = !!b.pending?.error && !!b.pending.upload?.auto;
    if (b.pending?.error && !waiting) classes.push('failed');
    if (b.deleted) classes.push('deleted');
    if (!b.deleted && !o.own && o.mentioned.some(([, me]) => me)) classes.push('mentions-me');
    if (!b.deleted && !b.media && isJumbo(b.text)) classes.push('jumbo');
    const media = b.media && !b.deleted ? b.media : null;
    const caption = media ? media.caption || '' : '';

    const meta = h(
      'span',
      { class: 'meta' },
      b.edited && !b.deleted ? h('span', { class: 'edited' }, 'edited') : null,
      h('time', { attrs: { datetime: new Date(b.ts).toISOString(), title: fullDateTime(b.ts) } }, clock(b.ts)),
      o.status ? ticks(o.status) : null,
    );
    const body = b.deleted
      ? h('div', { class: 'text' }, o.own ? 'You deleted this message' : 'This message was deleted')
      : media
        ? caption
          ? h('div', { class: 'text caption', attrs: { dir: 'auto' } }, richText(caption, new Map(o.mentioned)))
          : null
        : h('div', { class: 'text', attrs: { dir: 'auto' } }, richText(b.text, new Map(o.mentioned)));
    const quote = o.reply
      ? h(
          'button',
          {
            class: 'quote',
            attrs: { type: 'button', 'aria-label': `Reply to ${o.reply.name}: ${o.reply.text}` },
            on: { click: () => this.jumpTo(/** @type {{seq: number}} */ (o.reply).seq) },
          },
          h('span', { class: `quote-name u${colorIndex(o.reply.sender)}` }, o.reply.name),
          h('span', { class: 'quote-text' }, o.reply.text),
        )
      : null;
    const kind = media ? mediaKind(media) : null;
    const bubble = h(
      'div',
      { class: media ? `bubble has-media media-${kind} ${caption ? 'with-caption' : 'no-caption'}` : 'bubble' },
      o.senderName && o.first ? h('div', { class: `sender u${colorIndex(b.senderId)}` }, o.senderName) : null,
      quote,
      media ? this.mediaPart(b, media) : null,
      body,
      meta,
    );
    const actions = o.canAct
      ? h(
          'button',
          {
            class: 'msg-menu icon-btn sm',
            attrs: { type: 'button', 'aria-label': 'Message actions', 'aria-haspopup': 'menu', title: 'More' },
            on: { click: (e) => this.actions.menu(b, /** @type {HTMLElement} */ (e.currentTarget)) },
          },
          icon('moreH'),
        )
      : null;
    if (o.canAct) this.pressable(bubble, () => this.actions.menu(b, bubble));
    const reactions = o.reactions.length
      ? h(
          'div',
          { class: 'reactions' },
          o.reactions.map(([emoji, count, mine]) =>
            h(
              'button',
              {
                class: `reaction ${mine ? 'mine' : ''}`,
                attrs: {
                  type: 'button',
                  'aria-pressed': mine ? 'true' : 'false',
                  'aria-label': `${emoji} ${count}${mine ? ', including you' : ''}`,
                  disabled: !b.seq,
                },
                on: { click: () => this.actions.toggleReaction(b, emoji) },
              },
              h('span', { class: 'emoji' }, emoji),
              count > 1 ? h('span', { class: 'count' }, String(count)) : null,
            ),
          ),
        )
      : null;
    const failed = waiting
      ? h(
          'div',
          { class: 'waiting-note', attrs: { role: 'status' } },
          h('span', null, /** @type {string} */ (b.pending?.error)),
          h('button', { class: 'link-btn', attrs: { type: 'button' }, on: { click: () => this.actions.retry(b.key.slice(1)) } }, 'Retry now'),
        )
      : b.pending?.error
      ? h(
          'div',
          { class: 'failed-note', attrs: { role: 'alert' } },
          h('span', null, `Not sent: ${b.pending.error}`),
          b.pending.upload?.fatal
            ? null
            : h('button', { class: 'link-btn', attrs: { type: 'button' }, on: { click: () => this.actions.retry(b.key.slice(1)) } }, 'Retry'),
          h('button', { class: 'link-btn', attrs: { type: 'button' }, on: { click: () => this.actions.discard(b.key.slice(1)) } }, 'Delete'),
        )
      : null;
    const showAvatar = o.group && !o.own;
    return h(
      'li',
      { class: classes.filter(Boolean).join(' '), data: { seq: String(b.seq || ''), key: b.key } },
      showAvatar
        ? o.last
          ? avatar(b.senderId, this.state.userName(b.senderId), 'xs')
          : h('span', { class: 'avatar-space' })
        : null,
      h('div', { class: 'msg-body' }, h('div', { class: 'bubble-line' }, bubble, actions), reactions, failed),
    );
  }
}

/**
 * The delivery ticks of an own message, labelled for assistive technology (and the tests).
 * @param {string} status
 */
function ticks(status) {
  const name = status === 'Sending' ? 'clock' : status === 'Not sent' ? 'alert' : status === 'Sent' ? 'check' : 'checks';
  return h(
    'span',
    { class: `ticks ${status.toLowerCase().replace(' ', '-')}`, attrs: { role: 'img', 'aria-label': status, title: status } },
    icon(name),
  );
}

/**
 * The usernames a message mentions (its `mentions` user ids, as far as their names are known),
 * each with whether it is the user's own.
 * @param {ChatState} state @param {string[]} ids
 * @returns {[string, boolean][]}
 */
function mentionedNames(state, ids) {
  /** @type {[string, boolean][]} */
  const names = [];
  for (const id of ids) {
    const me = id === state.me.user_id;
    const username = me ? state.me.username : state.users.get(id)?.username;
    if (username) names.push([username.toLowerCase(), me]);
  }
  return names;
}

/**
 * Text with web links made clickable and the mentions it carries marked (the user's own stand
 * out), as DOM nodes (never parsed as HTML).
 * @param {string} text
 * @param {Map<string, boolean>} mentioned username → whether it is the user
 */
function richText(text, mentioned) {
  const frag = document.createDocumentFragment();
  const re = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]}]/giu;
  let last = 0;
  for (const match of text.matchAll(re)) {
    const start = match.index ?? 0;
    if (start > last) frag.append(withMentions(text.slice(last, start), mentioned));
    frag.append(
      h('a', { attrs: { href: match[0], target: '_blank', rel: 'noopener noreferrer nofollow' } }, match[0]),
    );
    last = start + match[0].length;
  }
  if (last < text.length) frag.append(withMentions(text.slice(last), mentioned));
  return frag;
}

/**
 * Plain text with each `@username` of a mentioned member in a <mark>.
 * @param {string} text @param {Map<string, boolean>} mentioned
 */
function withMentions(text, mentioned) {
  const frag = document.createDocumentFragment();
  if (!mentioned.size) {
    frag.append(text);
    return frag;
  }
  let last = 0;
  for (const token of mentionTokens(text)) {
    const name = token.names.find((n) => mentioned.has(n));
    if (!name) continue;
    if (token.index > last) frag.append(text.slice(last, token.index));
    const end = token.index + 1 + name.length;
    frag.append(h('mark', { class: mentioned.get(name) ? 'mention me' : 'mention' }, text.slice(token.index, end)));
    last = end;
  }
  if (last < text.length) frag.append(text.slice(last));
  return frag;
}

/** Whether a text is one to three emoji and nothing else (shown large). @param {string} text */
function isJumbo(text) {
  const t = text.trim();
  if (!t || t.length > 24) return false;
  return /^(?:\p{Extended_Pictographic}(?:\uFE0F|\u200D\p{Extended_Pictographic}|\p{Emoji_Modifier})*\s*){1,3}$/u.test(t);
}

/**
 * @param {Map<string, string>} reactions user → emoji
 * @param {string} me
 * @returns {[string, number, boolean][]} emoji, count, whether mine, in first-seen order
 */
function summarize(reactions, me) {
  /** @type {Map<string, [string, number, boolean]>} */
  const out = new Map();
  for (const [user, emoji] of reactions) {
    const e = out.get(emoji) ?? [emoji, 0, false];
    e[1]++;
    if (user === me) e[2] = true;
    out.set(emoji, e);
  }
  return Array.from(out.values());
}

/**
 * What a reply shows of the message it answers.
 * @param {ChatState} state @param {Map<number, Bubble>} bubbles @param {number} seq
 */
function quoteOf(state, bubbles, seq) {
  const target = bubbles.get(seq);
  if (!target) return { name: 'Message', text: 'Earlier message', seq, sender: '' };
  return {
    name: state.userName(target.senderId),
    sender: target.senderId,
    text: target.deleted ? 'Deleted message' : snippet(target.text, 120),
    seq,
  };
}

/**
 * A sentence for a system entry ("Alice added Bob").
 * @param {ChatState} state @param {Message} m @param {boolean} group
 */
export function systemText(state, m, group) {
  const b = m.body || {};
  const me = state.me.user_id;
  /** The doer, at the start of a sentence. @param {string | undefined} id */
  const who = (id) => (id ? state.userName(id) : 'Someone');
  /** Someone done to, inside a sentence. @param {string | undefined} id */
  const whom = (id) => (id === me ? 'you' : who(id));
  const by = who(b.by || m.sender_id);
  switch (m.kind) {
    case 'conversation_created':
      return group ? `${by} created the group “${b.title ?? ''}”` : `${by} started the conversation`;
    case 'members_added':
      return `${by} added ${joinNames((b.user_ids || []).map(whom))}`;
    case 'member_removed':
      return `${by} removed ${whom(b.user_id)}`;
    case 'member_left':
      return `${who(b.user_id || m.sender_id)} left`;
    case 'title_changed':
      return `${by} renamed the group to “${b.title ?? ''}”`;
    case 'role_changed':
      if (b.by && b.by === b.user_id) return `${who(b.user_id)} ${b.user_id === me ? 'are' : 'is'} now ${b.role === 'admin' ? 'an admin' : 'a member'}`;
      return b.role === 'admin' ? `${by} made ${whom(b.user_id)} an admin` : `${by} removed ${whom(b.user_id)} as admin`;
    default:
      return `Unsupported message (${m.kind})`;
  }
}

/** "A", "A and B", "A, B and C". @param {string[]} names */
function joinNames(names) {
  if (names.length <= 1) return names[0] || 'nobody';
  return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}
