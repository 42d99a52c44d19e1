// The info panel beside a chat: for a group, its name, members and roles, with rename, add,
// remove, promote and leave; for a direct chat, who the other person is and whether they are
// online. The server decides who may do what (admins only for most of it); the panel only
// hides what would be refused.

import { avatar, colorIndex, h } from '../dom.js';
import { icon } from '../icons.js';
import { lastSeen, plural } from '../format.js';
import { confirmDialog, describeError, openMenu, usernames } from './dialogs.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../state.js').Conv} Conv */
/** @typedef {import('../types.js').Member} Member */

export class InfoPanel {
  /**
   * @param {ChatState} state
   * @param {() => void} onClose
   * @param {() => void} onLeft the user left the group
   */
  constructor(state, onClose, onLeft) {
    this.state = state;
    this.onClose = onClose;
    this.onLeft = onLeft;
    /** @type {string | null} */
    this.convId = null;
    this.heading = h('h2', { attrs: { id: 'info-title' } }, 'Group info');
    this.body = h('div', { class: 'info-body' });
    this.status = h('p', { class: 'form-error', attrs: { role: 'alert' } });
    this.el = h(
      'aside',
      { class: 'info', attrs: { 'aria-labelledby': 'info-title', hidden: true } },
      h(
        'header',
        { class: 'info-header' },
        h(
          'button',
          { class: 'icon-btn', attrs: { type: 'button', 'aria-label': 'Close info' }, on: { click: () => this.onClose() } },
          icon('close'),
        ),
        this.heading,
      ),
      this.status,
      this.body,
    );
    this.sig = '';
    /** Text being typed in the panel's fields survives re-renders. */
    this.renameValue = '';
    this.addValue = '';
  }

  /** @param {string | null} id */
  show(id) {
    if (id !== this.convId) {
      this.status.textContent = '';
      this.renameValue = '';
      this.addValue = '';
      this.sig = '';
    }
    this.convId = id;
    this.el.hidden = !id;
    this.render();
  }

  render() {
    const id = this.convId;
    if (!id) return;
    const state = this.state;
    const conv = state.convs.get(id);
    if (!conv) return;
    const members = conv.c.members || [];
    const presence = members.map((m) => {
      const p = state.presence.get(m.user_id);
      return p ? [p.online, p.last_seen] : null;
    });
    const sig = JSON.stringify([conv.c.title, members, presence, conv.left, state.title(conv)]);
    if (sig === this.sig) return;
    // Do not rebuild under the user's fingers.
    if (this.el.contains(document.activeElement) && document.activeElement instanceof HTMLInputElement) return;
    this.sig = sig;
    if (conv.c.kind === 'group') this.renderGroup(conv);
    else this.renderDirect(conv);
  }

  /** @param {Conv} conv */
  renderDirect(conv) {
    const state = this.state;
    this.heading.textContent = 'Contact info';
    const peer = state.peer(conv);
    const user = peer ? state.users.get(peer) : undefined;
    const p = peer ? state.presence.get(peer) : undefined;
    this.body.replaceChildren(
      h(
        'div',
        { class: 'info-hero' },
        avatar(peer || conv.c.conversation_id, state.title(conv), 'xl'),
        h('h3', null, state.title(conv)),
        user ? h('p', { class: 'muted' }, `@${user.username}`) : null,
        p && peer !== state.me.user_id ? h('p', { class: p.online ? 'online-text' : 'muted' }, p.online ? 'online' : lastSeen(p.last_seen)) : null,
      ),
    );
  }

  /** @param {Conv} conv */
  renderGroup(conv) {
    const state = this.state;
    const id = conv.c.conversation_id;
    const admin = state.isAdmin(conv) && !conv.left;
    const members = [...(conv.c.members || [])].sort(
      (a, b) =>
        Number(b.user_id === state.me.user_id) - Number(a.user_id === state.me.user_id) ||
        Number(b.role === 'admin') - Number(a.role === 'admin') ||
        state.userName(a.user_id).localeCompare(state.userName(b.user_id)),
    );
    this.heading.textContent = 'Group info';

    const hero = h(
      'div',
      { class: 'info-hero' },
      h('span', { class: `avatar xl group c${colorIndex(id)}`, attrs: { 'aria-hidden': 'true' } }, icon('group')),
      h('h3', null, state.title(conv)),
      h('p', { class: 'muted' }, plural(conv.c.members_count || members.length, 'member')),
    );

    /** @type {Node[]} */
    const sections = [hero];
    if (admin) {
      const renameInput = h('input', {
        attrs: { id: 'info-rename', name: 'title', maxlength: 128, required: true, autocomplete: 'off' },
        on: { input: () => (this.renameValue = renameInput.value) },
      });
      renameInput.value = this.renameValue || conv.c.title || '';
      sections.push(
        h(
          'form',
          {
            class: 'info-form',
            on: {
              submit: (e) => {
                e.preventDefault();
                const title = renameInput.value.trim();
                if (!title || title === conv.c.title) return;
                this.run(async () => {
                  await state.rename(id, title);
                  this.renameValue = '';
                });
              },
            },
          },
          h('label', { attrs: { for: 'info-rename' } }, 'Group name'),
          h('div', { class: 'inline-field' }, renameInput, h('button', { class: 'btn', attrs: { type: 'submit' } }, 'Rename')),
        ),
      );
      const addInput = h('input', {
        attrs: { id: 'info-add', name: 'members', placeholder: 'usernames', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' },
        on: { input: () => (this.addValue = addInput.value) },
      });
      addInput.value = this.addValue;
      sections.push(
        h(
          'form',
          {
            class: 'info-form',
            on: {
              submit: (e) => {
                e.preventDefault();
                const names = usernames(addInput.value);
                if (!names.length) return;
                this.run(async () => {
                  await state.addMembers(id, names);
                  this.addValue = '';
                  this.sig = '';
                  this.render();
                });
              },
            },
          },
          h('label', { attrs: { for: 'info-add' } }, 'Add members'),
          h('div', { class: 'inline-field' }, addInput, h('button', { class: 'btn', attrs: { type: 'submit' } }, 'Add')),
        ),
      );
    }

    const list = h(
      'ul',
      { class: 'member-list', attrs: { 'aria-label': 'Members' } },
      members.map((m) => this.memberRow(conv, m, admin)),
    );
    sections.push(h('h4', { class: 'info-section' }, plural(members.length, 'member')), list);
    if (!conv.left) {
      sections.push(
        h(
          'button',
          {
            class: 'btn danger-ghost block',
            attrs: { type: 'button' },
            on: {
              click: async () => {
                const ok = await confirmDialog('Leave group?', `You will stop receiving messages from “${state.title(conv)}”.`, 'Leave');
                if (ok) this.run(async () => {
                  await state.leave(id);
                  this.onLeft();
                });
              },
            },
          },
          icon('leave'),
          'Leave group',
        ),
      );
    }
    this.body.replaceChildren(...sections);
  }

  /** @param {Conv} conv @param {Member} m @param {boolean} admin */
  memberRow(conv, m, admin) {
    const state = this.state;
    const id = conv.c.conversation_id;
    const isMe = m.user_id === state.me.user_id;
    const p = state.presence.get(m.user_id);
    const name = isMe ? `${m.display_name || m.username} (you)` : m.display_name || m.username;
    const status = isMe ? 'online' : p ? (p.online ? 'online' : lastSeen(p.last_seen)) : `@${m.username}`;
    const actions =
      admin && !isMe
        ? h(
            'button',
            {
              class: 'icon-btn sm',
              attrs: { type: 'button', 'aria-label': `Options for ${m.username}`, 'aria-haspopup': 'menu' },
              on: {
                click: (e) => {
                  const anchor = /** @type {HTMLElement} */ (e.currentTarget);
                  openMenu(
                    anchor,
                    [
                      m.role === 'admin'
                        ? { label: 'Dismiss as admin', icon: 'shield', run: () => this.run(() => state.setRole(id, m.user_id, 'member')) }
                        : { label: 'Make admin', icon: 'shield', run: () => this.run(() => state.setRole(id, m.user_id, 'admin')) },
                      {
                        label: 'Remove from group',
                        icon: 'trash',
                        danger: true,
                        run: async () => {
                          const ok = await confirmDialog('Remove member?', `Remove ${m.display_name || m.username} from “${state.title(conv)}”?`, 'Remove');
                          if (ok) this.run(() => state.removeMember(id, m.user_id));
                        },
                      },
                    ],
                    `Options for ${m.username}`,
                  );
                },
              },
            },
            icon('more'),
          )
        : admin
          ? h('span', { class: 'member-actions-space' })
          : null;
    return h(
      'li',
      { class: 'member' },
      h('span', { class: 'avatar-wrap' }, avatar(m.user_id, m.display_name || m.username, 'sm'), p?.online && !isMe ? h('span', { class: 'dot' }) : null),
      h(
        'span',
        { class: 'member-main' },
        h('span', { class: 'member-name' }, name),
        h('span', { class: `member-status ${p?.online || isMe ? 'online-text' : 'muted'}` }, status),
      ),
      m.role === 'admin' ? h('span', { class: 'role-badge' }, 'Admin') : null,
      actions,
    );
  }

  /** Runs an action, showing its error in the panel. @param {() => Promise<void>} fn */
  async run(fn) {
    this.status.textContent = '';
    try {
      await fn();
    } catch (e) {
      this.status.textContent = describeError(e);
    }
    this.sig = '';
    this.render();
  }
}
