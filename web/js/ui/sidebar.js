// The left pane: who is signed in, the actions to start chats, and the conversation list (most
// recent first, with previews, times, unread badges, online dots and muted marks), kept live.

import { avatar, colorIndex, h, setAttrs } from '../dom.js';
import { icon } from '../icons.js';
import { listTime, snippet, untilTime } from '../format.js';
import { mediaLabel } from '../media.js';
import { newChatDialog, newGroupDialog, openMenu } from './dialogs.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../state.js').Conv} Conv */

/**
 * @typedef {object} SidebarContext
 * @property {ChatState} state
 * @property {(id: string | null) => void} navigate
 * @property {() => void} signOut
 * @property {() => void} enableNotifications
 * @property {() => boolean} canAskNotifications
 * @property {() => void} openSettings the notification settings
 */

/**
 * @typedef {object} Row
 * @property {HTMLLIElement} li
 * @property {string} sig
 */

export class Sidebar {
  /** @param {SidebarContext} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    const state = ctx.state;
    /** @type {Map<string, Row>} */
    this.rows = new Map();
    /** @type {string | null} */
    this.selected = null;
    this.filter = '';

    const menuButton = h(
      'button',
      {
        class: 'icon-btn',
        attrs: { type: 'button', 'aria-label': 'Menu', 'aria-haspopup': 'menu', title: 'Menu' },
        on: { click: () => this.openMenu(menuButton) },
      },
      icon('more'),
    );
    this.meAvatar = avatar(state.me.user_id, state.me.display_name || state.me.username, 'sm');
    this.dndButton = h(
      'button',
      { class: 'icon-btn dnd', attrs: { type: 'button', 'aria-label': 'Do not disturb is on', hidden: true }, on: { click: () => ctx.openSettings() } },
      icon('moon'),
    );
    this.notifyBar = h(
      'div',
      { class: 'notify-bar', attrs: { hidden: true } },
      icon('bell'),
      h('span', null, 'Get notified of new messages.'),
      h('button', { class: 'link-btn', attrs: { type: 'button' }, on: { click: () => ctx.enableNotifications() } }, 'Turn on'),
      h(
        'button',
        {
          class: 'icon-btn sm',
          attrs: { type: 'button', 'aria-label': 'Dismiss' },
          on: {
            click: () => {
              localStorage.setItem('parley.notify.dismissed', '1');
              this.render();
            },
          },
        },
        icon('close'),
      ),
    );
    this.search = h('input', {
      class: 'search-input',
      attrs: { type: 'search', placeholder: 'Search', 'aria-label': 'Search conversations', autocomplete: 'off' },
      on: {
        input: () => {
          this.filter = this.search.value.trim().toLowerCase();
          this.render();
        },
      },
    });
    this.list = h('ul', { class: 'conv-list', attrs: { 'aria-label': 'Conversations' } });
    this.empty = h(
      'div',
      { class: 'list-empty', attrs: { hidden: true } },
      h('p', null, 'No conversations yet.'),
      h('p', { class: 'muted' }, 'Start one with “New chat”, or make a group.'),
    );

    this.el = h(
      'nav',
      { class: 'sidebar', attrs: { 'aria-label': 'Chats' } },
      h(
        'header',
        { class: 'sidebar-header' },
        this.meAvatar,
        h('h1', { class: 'sidebar-title' }, 'Chats'),
        this.dndButton,
        h(
          'button',
          {
            class: 'icon-btn',
            attrs: { type: 'button', 'aria-label': 'New chat', title: 'New chat' },
            on: { click: () => newChatDialog(state, (id) => ctx.navigate(id)) },
          },
          icon('compose'),
        ),
        h(
          'button',
          {
            class: 'icon-btn',
            attrs: { type: 'button', 'aria-label': 'New group', title: 'New group' },
            on: { click: () => newGroupDialog(state, (id) => ctx.navigate(id)) },
          },
          icon('group'),
        ),
        menuButton,
      ),
      this.notifyBar,
      h('div', { class: 'search' }, icon('search'), this.search),
      h('div', { class: 'conv-scroll' }, this.list, this.empty),
    );
  }

  /** @param {HTMLElement} anchor */
  openMenu(anchor) {
    const me = this.ctx.state.me;
    /** @type {import('./dialogs.js').MenuItem[]} */
    const items = [
      { label: 'Notifications', icon: 'bell', run: () => this.ctx.openSettings() },
      { label: 'Sign out', icon: 'logout', run: () => this.ctx.signOut(), danger: true },
    ];
    const header = h(
      'div',
      { class: 'menu-header' },
      h('strong', null, me.display_name || me.username),
      h('span', { class: 'muted' }, `@${me.username}`),
    );
    openMenu(anchor, items, 'Menu', header);
  }

  /** @param {string | null} id */
  select(id) {
    this.selected = id;
    this.render();
  }

  render() {
    const state = this.ctx.state;
    this.notifyBar.hidden = !this.ctx.canAskNotifications() || localStorage.getItem('parley.notify.dismissed') === '1';
    const dnd = state.dnd();
    this.dndButton.hidden = !dnd;
    if (dnd && state.dndUntil !== null) this.dndButton.title = `Do not disturb ${dndText(state.dndUntil, state.now())}`;
    const convs = state.sortedConvs().filter((c) => !this.filter || state.title(c).toLowerCase().includes(this.filter));
    /** @type {HTMLLIElement[]} */
    const nodes = [];
    const live = new Set();
    for (const conv of convs) {
      const id = conv.c.conversation_id;
      live.add(id);
      const row = this.row(conv);
      nodes.push(row);
    }
    for (const id of this.rows.keys()) if (!live.has(id)) this.rows.delete(id);
    // Reorder in place so the focused row keeps its focus.
    let cursor = this.list.firstChild;
    for (const node of nodes) {
      if (node === cursor) cursor = cursor.nextSibling;
      else this.list.insertBefore(node, cursor);
    }
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }
    this.empty.hidden = !state.listLoaded || convs.length > 0 || this.filter !== '';
  }

  /** The list item of a conversation, rebuilt only when what it shows changed. @param {Conv} conv */
  row(conv) {
    const state = this.ctx.state;
    const c = conv.c;
    const id = c.conversation_id;
    const title = state.title(conv);
    const peer = state.peer(conv);
    const online = !!(peer && peer !== state.me.user_id && state.presence.get(peer)?.online);
    const typists = state.typists(id);
    const preview = this.preview(conv, typists);
    const pendingItem = state.pendingText(id);
    const time = pendingItem ? pendingItem.created_at : c.last_message ? c.last_message.ts : conv.activity;
    const unread = c.unread_count;
    const selected = this.selected === id;
    const mode = state.notifyMode(conv).mode;
    const sig = JSON.stringify([title, online, preview, listTime(time), unread, selected, c.kind, typists.length > 0, mode]);
    const existing = this.rows.get(id);
    if (existing && existing.sig === sig) return existing.li;

    const avatarId = c.kind === 'direct' && peer ? peer : id;
    const link = h(
      'a',
      { class: `conv ${unread ? 'has-unread' : ''}`, attrs: { href: `#/c/${encodeURIComponent(id)}` } },
      h(
        'span',
        { class: 'avatar-wrap' },
        c.kind === 'group' ? h('span', { class: `avatar group c${colorIndex(avatarId)}`, attrs: { 'aria-hidden': 'true' } }, icon('group')) : avatar(avatarId, title),
        online ? h('span', { class: 'dot', attrs: { role: 'img', 'aria-label': 'Online', title: 'Online' } }) : null,
      ),
      h(
        'span',
        { class: 'conv-main' },
        h(
          'span',
          { class: 'conv-top' },
          h('span', { class: 'conv-title' }, title),
          mode === 'muted'
            ? h('span', { class: 'conv-flag', attrs: { role: 'img', 'aria-label': 'Muted', title: 'Muted' } }, icon('bellOff'))
            : mode === 'mentions'
              ? h('span', { class: 'conv-flag', attrs: { role: 'img', 'aria-label': 'Mentions only', title: 'Mentions only' } }, icon('at'))
              : null,
          h('time', { class: 'conv-time', attrs: { datetime: new Date(time).toISOString() } }, listTime(time)),
        ),
        h(
          'span',
          { class: 'conv-bottom' },
          h('span', { class: `conv-preview ${typists.length ? 'typing' : ''}` }, preview),
          unread
            ? h(
                'span',
                { class: `badge ${mode === 'all' ? '' : 'quiet'}`, attrs: { 'aria-label': `${unread} unread ${unread === 1 ? 'message' : 'messages'}` } },
                unread > 999 ? '999+' : String(unread),
              )
            : null,
        ),
      ),
    );
    if (selected) setAttrs(link, { 'aria-current': 'page' });
    const li = h('li', { class: 'conv-item', data: { id } }, link);
    this.rows.set(id, { li, sig });
    if (existing) existing.li.replaceWith(li);
    return li;
  }

  /** @param {Conv} conv @param {string[]} typists */
  preview(conv, typists) {
    const state = this.ctx.state;
    if (typists.length) {
      return conv.c.kind === 'group' ? `${state.userName(typists[0])} is typing…` : 'typing…';
    }
    const pending = state.pendingText(conv.c.conversation_id);
    if (pending) return `You: ${snippet(pending.kind === 'media' ? mediaLabel(pending.body) : pending.body.text ?? '', 80)}`;
    const m = conv.c.last_message;
    if (!m) return conv.c.kind === 'group' ? 'Group created' : 'No messages yet';
    const body = m.body || {};
    const text = m.kind === 'text' ? body.text ?? '' : m.kind === 'media' ? mediaLabel(body) : '🔒 Encrypted message';
    const who =
      m.sender_id === state.me.user_id ? 'You: ' : conv.c.kind === 'group' ? `${state.userName(m.sender_id)}: ` : '';
    return `${who}${snippet(text, 80)}`;
  }
}

/**
 * "until 15:30", "until tomorrow, 08:00", or "until you turn it off" for an end decades away.
 * @param {number} until @param {number} now
 */
export function dndText(until, now) {
  return until - now > 50 * 365 * 86_400_000 ? 'until you turn it off' : `until ${untilTime(until)}`;
}
