// The right pane: the open conversation's header (title, online / last seen / typing, how it
// notifies), its messages and the composer; or, with nothing open, a short welcome.

import { avatar, colorIndex, h } from '../dom.js';
import { icon } from '../icons.js';
import { lastSeen, plural, untilTime } from '../format.js';
import { MessageList } from './messages.js';
import { Composer } from './composer.js';
import { confirmDialog, describeError, newChatDialog, newGroupDialog, openMenu } from './dialogs.js';
import { downloadMedia } from './media.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../state.js').Bubble} Bubble */
/** @typedef {import('../state.js').Conv} Conv */
/** @typedef {import('../state.js').NotifyMode} NotifyMode */
/** @typedef {import('../types.js').ConversationSettings} ConversationSettings */

/** The quick reactions offered in a message's menu. */
const QUICK_REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const HOUR_MS = 3_600_000;

export class ChatView {
  /**
   * @param {ChatState} state
   * @param {(id: string | null) => void} navigate
   * @param {() => void} toggleInfo
   */
  constructor(state, navigate, toggleInfo) {
    this.state = state;
    this.navigate = navigate;
    /** @type {string | null} */
    this.convId = null;

    this.messages = new MessageList(state, {
      menu: (b, anchor) => this.messageMenu(b, anchor),
      toggleReaction: (b, emoji) => this.toggleReaction(b, emoji),
      retry: (clientId) => state.retry(clientId),
      discard: (clientId) => state.discard(clientId),
    });
    this.composer = new Composer(state, () => {
      this.messages.forceBottom = true;
      this.messages.clearDivider();
    });

    this.avatarSlot = h('span', { class: 'avatar-wrap' });
    this.title = h('h2', { class: 'chat-title' });
    this.subtitle = h('p', { class: 'chat-subtitle', attrs: { 'aria-live': 'polite' } });
    this.infoButton = h(
      'button',
      { class: 'icon-btn', attrs: { type: 'button', 'aria-label': 'Group info', 'aria-expanded': 'false' }, on: { click: () => toggleInfo() } },
      icon('info'),
    );
    this.notifyButton = h(
      'button',
      {
        class: 'icon-btn',
        attrs: { type: 'button', 'aria-label': 'Notification settings', 'aria-haspopup': 'menu' },
        on: { click: () => this.notifyMenu() },
      },
      icon('bell'),
    );
    this.header = h(
      'header',
      { class: 'chat-header' },
      h(
        'button',
        { class: 'icon-btn back', attrs: { type: 'button', 'aria-label': 'Back to chats' }, on: { click: () => navigate(null) } },
        icon('back'),
      ),
      h(
        'button',
        { class: 'chat-heading', attrs: { type: 'button' }, on: { click: () => toggleInfo() } },
        this.avatarSlot,
        h('span', { class: 'chat-heading-text' }, this.title, this.subtitle),
      ),
      this.notifyButton,
      this.infoButton,
    );
    this.jumpBadge = h('span', { class: 'badge', attrs: { hidden: true } });
    this.jump = h(
      'button',
      {
        class: 'jump-btn',
        attrs: { type: 'button', 'aria-label': 'Jump to latest messages', hidden: true },
        on: { click: () => this.messages.scrollToBottom(true) },
      },
      icon('down'),
      this.jumpBadge,
    );
    this.messages.onScrollChange = () => this.updateJump();

    this.dropTitle = h('strong');
    this.dropZone = h(
      'div',
      { class: 'drop-zone', attrs: { hidden: true, 'aria-hidden': 'true' } },
      h('div', { class: 'drop-card' }, icon('attach'), h('span', null, 'Drop files to send to '), this.dropTitle),
    );
    this.chat = h(
      'section',
      { class: 'chat', attrs: { hidden: true, 'aria-labelledby': 'chat-title' } },
      this.header,
      h('div', { class: 'messages-wrap' }, this.messages.scroller, this.jump),
      this.composer.el,
      this.dropZone,
    );
    this.setUpDrop();
    this.title.id = 'chat-title';
    this.welcome = h(
      'div',
      { class: 'welcome' },
      h('img', { attrs: { src: '/favicon.svg', alt: '', width: 72, height: 72 } }),
      h('h2', null, 'Parley'),
      h('p', { class: 'muted' }, 'Pick a conversation, or start a new one.'),
      h(
        'div',
        { class: 'welcome-actions' },
        h('button', { class: 'btn', attrs: { type: 'button' }, on: { click: () => newChatDialog(state, navigate) } }, icon('compose'), 'Start a chat'),
        h('button', { class: 'btn', attrs: { type: 'button' }, on: { click: () => newGroupDialog(state, navigate) } }, icon('group'), 'Create a group'),
      ),
    );
    this.el = h('main', { class: 'main' }, this.welcome, this.chat);
    this.headerSig = '';
  }

  /**
   * Files dragged over the open chat show where they go; dropped, they wait in the composer's
   * tray. A drop anywhere else on the page is ignored (not opened by the browser in the tab).
   */
  setUpDrop() {
    let depth = 0;
    /** @param {DragEvent} e */
    const hasFiles = (e) => !!e.dataTransfer && Array.from(e.dataTransfer.types).includes('Files');
    const hide = () => {
      depth = 0;
      this.dropZone.hidden = true;
    };
    this.chat.addEventListener('dragenter', (e) => {
      if (!hasFiles(e) || !this.composer.accepting()) return;
      e.preventDefault();
      depth++;
      const conv = this.convId ? this.state.convs.get(this.convId) : undefined;
      this.dropTitle.textContent = conv ? this.state.title(conv) : '';
      this.dropZone.hidden = false;
    });
    this.chat.addEventListener('dragover', (e) => {
      if (!hasFiles(e) || !this.composer.accepting()) return;
      e.preventDefault();
      if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
    });
    this.chat.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) hide();
    });
    this.chat.addEventListener('drop', (e) => {
      hide();
      if (!hasFiles(e) || !this.composer.accepting()) return;
      e.preventDefault();
      this.composer.addFiles(Array.from(e.dataTransfer?.files || []));
    });
    for (const type of ['dragover', 'drop']) {
      document.addEventListener(type, (e) => {
        const d = /** @type {DragEvent} */ (e);
        if (!e.defaultPrevented && hasFiles(d)) {
          e.preventDefault();
          if (d.dataTransfer) d.dataTransfer.dropEffect = 'none';
          if (type === 'drop') hide();
        }
      });
    }
  }

  /** @param {string | null} id */
  show(id) {
    if (id === this.convId) return;
    this.convId = id;
    this.chat.hidden = !id;
    this.welcome.hidden = !!id;
    this.headerSig = '';
    this.messages.show(id);
    this.composer.show(id);
    this.jump.hidden = true;
    if (id) {
      this.render();
      this.composer.focus();
    }
  }

  /** @param {boolean} open */
  setInfoOpen(open) {
    this.infoButton.setAttribute('aria-expanded', open ? 'true' : 'false');
  }

  render() {
    const id = this.convId;
    if (!id) return;
    const conv = this.state.convs.get(id);
    this.renderHeader(conv);
    this.composer.setLeft(!!conv?.left);
    this.messages.render();
    this.updateJump();
  }

  /** @param {Conv | undefined} conv */
  renderHeader(conv) {
    const state = this.state;
    if (!conv) {
      this.title.textContent = '';
      this.subtitle.textContent = '';
      return;
    }
    const id = conv.c.conversation_id;
    const title = state.title(conv);
    const subtitle = this.subtitleText(conv);
    const peer = state.peer(conv);
    const mode = state.notifyMode(conv);
    const sig = JSON.stringify([title, subtitle, conv.c.kind, peer, mode]);
    if (sig === this.headerSig) return;
    this.headerSig = sig;
    this.notifyButton.replaceChildren(icon(mode.mode === 'muted' ? 'bellOff' : mode.mode === 'mentions' ? 'at' : 'bell'));
    this.notifyButton.title = `Notifications: ${notifyText(mode)}`;
    this.title.textContent = title;
    this.subtitle.textContent = subtitle.text;
    this.subtitle.className = `chat-subtitle ${subtitle.cls}`;
    this.infoButton.setAttribute('aria-label', conv.c.kind === 'group' ? 'Group info' : 'Contact info');
    this.avatarSlot.replaceChildren(
      conv.c.kind === 'group'
        ? h('span', { class: `avatar group c${colorIndex(id)}`, attrs: { 'aria-hidden': 'true' } }, icon('group'))
        : avatar(peer || id, title),
    );
    document.title = `${title} · Parley`;
  }

  /** @param {Conv} conv @returns {{text: string, cls: string}} */
  subtitleText(conv) {
    const state = this.state;
    const typists = state.typists(conv.c.conversation_id);
    if (typists.length) {
      if (conv.c.kind === 'direct') return { text: 'typing…', cls: 'typing' };
      const names = typists.map((u) => state.userName(u));
      const text = names.length === 1 ? `${names[0]} is typing…` : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : `${names.length} people are typing…`;
      return { text, cls: 'typing' };
    }
    if (conv.left) return { text: 'You are no longer a member', cls: '' };
    const link = state.conn.status;
    if (link === 'offline' || link === 'waiting') return { text: 'waiting for network…', cls: '' };
    if (link === 'connecting') return { text: 'connecting…', cls: '' };
    if (conv.c.kind === 'direct') {
      const peer = state.peer(conv);
      if (!peer) return { text: '', cls: '' };
      if (peer === state.me.user_id) return { text: 'Notes to yourself', cls: '' };
      const p = state.presence.get(peer);
      if (!p) return { text: '', cls: '' };
      return p.online ? { text: 'online', cls: 'online-text' } : { text: lastSeen(p.last_seen), cls: '' };
    }
    const count = conv.c.members_count || (conv.c.members || []).length;
    const online = state.others(conv).filter((m) => state.presence.get(m.user_id)?.online).length;
    return { text: `${plural(count, 'member')}${online ? `, ${online} online` : ''}`, cls: '' };
  }

  /** The menu of how the open conversation notifies: mute for a while or for good, mentions only, all. */
  notifyMenu() {
    const state = this.state;
    const id = this.convId;
    const conv = id ? state.convs.get(id) : undefined;
    if (!id || !conv) return;
    const mode = state.notifyMode(conv);
    /** @param {Partial<ConversationSettings>} patch */
    const set = (patch) => () => {
      this.composer.error.textContent = '';
      state.setNotify(id, patch).catch((e) => {
        this.composer.error.textContent = `Notifications not changed: ${describeError(e)}`;
      });
    };
    /** @type {import('./dialogs.js').MenuItem[]} */
    const items = [
      { label: 'Mute for 8 hours', icon: 'bellOff', run: set({ muted_until: state.now() + 8 * HOUR_MS }) },
      { label: 'Mute for 1 week', icon: 'bellOff', run: set({ muted_until: state.now() + 7 * 24 * HOUR_MS }) },
      // For good is its own setting, not a far-away time: it survives any clock.
      { label: 'Mute always', icon: 'bellOff', run: set({ notify: 'none', muted_until: null }) },
    ];
    if (conv.c.kind === 'group' && mode.mode !== 'mentions') {
      items.push({ label: 'Mentions only', icon: 'at', run: set({ notify: 'mentions', muted_until: null }) });
    }
    if (mode.mode !== 'all') {
      items.push({ label: mode.mode === 'muted' ? 'Unmute' : 'All messages', icon: 'bell', run: set({ notify: 'all', muted_until: null }) });
    }
    const header = h('div', { class: 'menu-header' }, h('strong', null, 'Notifications'), h('span', { class: 'muted' }, notifyText(mode)));
    openMenu(this.notifyButton, items, 'Notifications', header);
  }

  updateJump() {
    const show = !!this.convId && this.messages.positioned && !this.messages.atBottom();
    this.jump.hidden = !show;
    const conv = this.convId ? this.state.convs.get(this.convId) : undefined;
    const unread = conv ? conv.c.unread_count : 0;
    this.jumpBadge.hidden = !unread;
    this.jumpBadge.textContent = String(unread);
  }

  /** @param {Bubble} b @param {HTMLElement} anchor */
  messageMenu(b, anchor) {
    const state = this.state;
    const id = this.convId;
    if (!id) return;
    const conv = state.convs.get(id);
    const own = b.senderId === state.me.user_id;
    const canWrite = !!conv && !conv.left;
    /** @type {import('./dialogs.js').MenuItem[]} */
    const items = [];
    if (b.pending) {
      items.push({ label: 'Cancel sending', icon: 'trash', danger: true, run: () => b.clientId && state.discard(b.clientId) });
      openMenu(anchor, items, 'Message actions');
      return;
    }
    if (canWrite) items.push({ label: 'Reply', icon: 'reply', run: () => this.composer.setContext({ mode: 'reply', bubble: b }) });
    if (b.media) {
      const media = b.media;
      if (media.caption) items.push({ label: 'Copy caption', icon: 'copy', run: () => navigator.clipboard?.writeText(media.caption || '').catch(() => {}) });
      if (media.media_id) {
        items.push({
          label: 'Download',
          icon: 'download',
          run: () => {
            downloadMedia(state, media, b.ts, b.clientId).catch((e) => {
              this.composer.error.textContent = `Download failed: ${describeError(e)}`;
            });
          },
        });
      }
    } else {
      items.push({ label: 'Copy text', icon: 'copy', run: () => navigator.clipboard?.writeText(b.text).catch(() => {}) });
    }
    if (canWrite && own && b.kind === 'text') {
      items.push({ label: 'Edit', icon: 'edit', run: () => this.composer.setContext({ mode: 'edit', bubble: b }) });
    }
    if (canWrite && (own || (conv && conv.c.kind === 'group' && state.isAdmin(conv)))) {
      items.push({
        label: 'Delete',
        icon: 'trash',
        danger: true,
        run: async () => {
          const ok = await confirmDialog('Delete message?', own ? 'It will be deleted for everyone.' : 'As an admin, you delete it for everyone.', 'Delete');
          if (ok) state.remove(id, b.seq);
        },
      });
    }
    const mine = b.reactions.get(state.me.user_id);
    let closeMenu = () => {};
    const reactions = canWrite
      ? h(
          'div',
          { class: 'quick-reactions', attrs: { role: 'group', 'aria-label': 'React' } },
          QUICK_REACTIONS.map((emoji) =>
            h(
              'button',
              {
                class: `reaction-pick ${mine === emoji ? 'mine' : ''}`,
                attrs: { type: 'button', 'aria-label': `React with ${emoji}`, 'aria-pressed': mine === emoji ? 'true' : 'false' },
                on: {
                  click: () => {
                    closeMenu();
                    this.toggleReaction(b, emoji);
                  },
                },
              },
              emoji,
            ),
          ),
        )
      : undefined;
    closeMenu = openMenu(anchor, items, 'Message actions', reactions);
  }

  /** @param {Bubble} b @param {string} emoji */
  toggleReaction(b, emoji) {
    if (!this.convId || !b.seq) return;
    const mine = b.reactions.get(this.state.me.user_id);
    this.state.react(this.convId, b.seq, mine === emoji ? '' : emoji);
  }
}

/** How a conversation notifies, in words. @param {NotifyMode} mode */
export function notifyText(mode) {
  if (mode.mode === 'all') return 'all messages';
  if (mode.mode === 'mentions') return 'only when you are mentioned';
  return mode.until === null ? 'muted' : `muted until ${untilTime(mode.until)}`;
}
