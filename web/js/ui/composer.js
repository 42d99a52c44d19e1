// The message composer: a growing text field, Enter sends and Shift+Enter adds a line, replies
// and edits, per-conversation drafts, `@` mentions of group members, and the typing indicator
// we send. It works the same offline: what is sent goes to the outbox and leaves when the
// connection is back.

import { avatar, h } from '../dom.js';
import { icon } from '../icons.js';
import { snippet, utf8Length } from '../format.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../state.js').Bubble} Bubble */
/** @typedef {import('../types.js').Member} Member */

/** The server's limit on a text message, in UTF-8 bytes. */
const MAX_TEXT_BYTES = 16_384;
/** Without a keystroke for this long, we say we stopped typing. */
const TYPING_IDLE_MS = 4_000;
/** At most this many members are offered for an `@`. */
const MAX_SUGGESTIONS = 6;
/** An `@` being typed at the caret, and the name so far (the `@` starts a word). */
const MENTION_QUERY_RE = /(?:^|[^\p{L}\p{N}_.@-])@([\p{L}\p{N}_.-]{0,32})$/u;

export class Composer {
  /**
   * @param {ChatState} state
   * @param {() => void} onSent called after a message is queued (the view scrolls down)
   */
  constructor(state, onSent) {
    this.state = state;
    this.onSent = onSent;
    /** @type {string | null} */
    this.convId = null;
    /** @type {{mode: 'reply' | 'edit', bubble: Bubble} | null} */
    this.context = null;
    /** @type {Map<string, string>} */
    this.drafts = loadDrafts(state.me.user_id);
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.idleTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.draftTimer = undefined;
    /** The members offered for the `@` being typed, and which one Enter takes. @type {{users: Member[], active: number} | null} */
    this.mention = null;

    this.input = h('textarea', {
      class: 'composer-input',
      attrs: {
        'aria-label': 'Message',
        placeholder: 'Message',
        rows: 1,
        enterkeyhint: 'send',
        dir: 'auto',
        'aria-autocomplete': 'list',
        'aria-controls': 'mention-list',
      },
      on: {
        keydown: (e) => this.onKey(e),
        input: () => this.onInput(),
        click: () => this.updateMentions(),
        blur: () => {
          this.stopTyping();
          this.closeMentions();
        },
      },
    });
    this.mentionList = h('ul', {
      class: 'mention-list',
      attrs: { id: 'mention-list', role: 'listbox', 'aria-label': 'Mention a member', hidden: true },
    });
    this.error = h('p', { class: 'composer-error', attrs: { role: 'alert' } });
    this.contextLabel = h('span', { class: 'context-label' });
    this.contextText = h('span', { class: 'context-text' });
    this.contextBar = h(
      'div',
      { class: 'composer-context', attrs: { hidden: true } },
      h('div', { class: 'context-body' }, this.contextLabel, this.contextText),
      h(
        'button',
        { class: 'icon-btn sm', attrs: { type: 'button', 'aria-label': 'Cancel' }, on: { click: () => this.setContext(null) } },
        icon('close'),
      ),
    );
    this.send = h('button', { class: 'send-btn', attrs: { type: 'submit', 'aria-label': 'Send', title: 'Send (Enter)' } }, icon('send'));
    this.form = h(
      'form',
      {
        class: 'composer',
        on: {
          submit: (e) => {
            e.preventDefault();
            this.submit();
          },
        },
      },
      this.mentionList,
      this.contextBar,
      this.error,
      h('div', { class: 'composer-row' }, this.input, this.send),
    );
    this.closedNote = h('p', { class: 'composer-closed', attrs: { hidden: true } }, 'You are no longer a member of this group.');
    this.el = h('footer', { class: 'composer-wrap' }, this.form, this.closedNote);
  }

  /** @param {string | null} id */
  show(id) {
    if (id === this.convId) return;
    this.stopTyping();
    this.saveDraft();
    this.convId = id;
    this.context = null;
    this.closeMentions();
    this.setContext(null);
    this.input.value = id ? this.drafts.get(id) ?? '' : '';
    this.error.textContent = '';
    this.resize();
  }

  /** Shows or hides the composer for a conversation the user has left. @param {boolean} left */
  setLeft(left) {
    this.form.hidden = left;
    this.closedNote.hidden = !left;
  }

  focus() {
    if (!matchMedia('(pointer: coarse)').matches) this.input.focus();
  }

  /** @param {{mode: 'reply' | 'edit', bubble: Bubble} | null} ctx */
  setContext(ctx) {
    const wasEdit = this.context?.mode === 'edit';
    this.context = ctx;
    this.contextBar.hidden = !ctx;
    if (!ctx) {
      if (wasEdit) this.input.value = this.convId ? this.drafts.get(this.convId) ?? '' : '';
      this.resize();
      return;
    }
    if (ctx.mode === 'reply') {
      this.contextLabel.textContent = `Replying to ${this.state.userName(ctx.bubble.senderId)}`;
      this.contextText.textContent = snippet(ctx.bubble.text, 100);
    } else {
      this.saveDraft();
      this.contextLabel.textContent = 'Editing message';
      this.contextText.textContent = snippet(ctx.bubble.text, 100);
      this.input.value = ctx.bubble.text;
    }
    this.resize();
    this.input.focus();
  }

  /** @param {KeyboardEvent} e */
  onKey(e) {
    if (this.mention && this.onMentionKey(e)) return;
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey) {
      e.preventDefault();
      this.submit();
    } else if (e.key === 'Escape' && this.context) {
      e.preventDefault();
      this.setContext(null);
    } else if (e.key === 'ArrowUp' && !this.input.value && this.convId) {
      // Up in an empty composer edits your last message, as in most chat apps.
      const { lines } = this.state.view(this.convId);
      for (let i = lines.length - 1; i >= 0; i--) {
        const l = lines[i];
        if (l.type === 'bubble' && l.senderId === this.state.me.user_id && l.seq && !l.deleted && l.kind === 'text') {
          e.preventDefault();
          this.setContext({ mode: 'edit', bubble: l });
          break;
        }
      }
    }
  }

  onInput() {
    this.resize();
    this.updateMentions();
    this.error.textContent = '';
    clearTimeout(this.draftTimer);
    this.draftTimer = setTimeout(() => this.saveDraft(), 500);
    if (!this.convId || this.context?.mode === 'edit') return;
    if (this.input.value.trim()) {
      this.state.typing(this.convId, true);
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
    } else {
      this.stopTyping();
    }
  }

  stopTyping() {
    clearTimeout(this.idleTimer);
    if (this.convId) this.state.typing(this.convId, false);
  }

  submit() {
    const id = this.convId;
    if (!id) return;
    const text = this.input.value.replace(/^\s*\n|\s+$/gu, '');
    if (!text.trim()) return;
    if (utf8Length(text) > MAX_TEXT_BYTES) {
      this.error.textContent = `That is too long: at most ${MAX_TEXT_BYTES.toLocaleString()} bytes.`;
      return;
    }
    const ctx = this.context;
    if (ctx?.mode === 'edit') {
      if (text !== ctx.bubble.text) this.state.edit(id, ctx.bubble.seq, text);
      this.context = null;
      this.contextBar.hidden = true;
      this.input.value = this.drafts.get(id) ?? '';
    } else {
      const replyTo = ctx?.mode === 'reply' && ctx.bubble.seq ? ctx.bubble.seq : undefined;
      this.state.sendText(id, text, replyTo, this.state.mentionedIds(id, text));
      this.input.value = '';
      this.drafts.delete(id);
      this.saveDraft();
      this.setContext(null);
      this.onSent();
    }
    this.closeMentions();
    clearTimeout(this.idleTimer);
    this.state.typingSent.delete(id);
    this.resize();
    this.input.focus();
  }

  // --- @ mentions ---

  /** The `@name` being typed at the caret: where its `@` is and the name so far, lowercased. */
  mentionQuery() {
    const caret = this.input.selectionStart;
    if (caret !== this.input.selectionEnd) return null;
    const m = MENTION_QUERY_RE.exec(this.input.value.slice(0, caret));
    return m ? { start: caret - m[1].length - 1, query: m[1].toLowerCase() } : null;
  }

  /** Offers the members of the open group whose username or name starts with what follows an `@`. */
  updateMentions() {
    const q = this.mentionQuery();
    const conv = this.convId ? this.state.convs.get(this.convId) : undefined;
    if (!q || !conv || conv.c.kind !== 'group' || this.context?.mode === 'edit') {
      this.closeMentions();
      return;
    }
    /** @param {Member} m */
    const byUsername = (m) => m.username.toLowerCase().startsWith(q.query);
    /** @param {Member} m */
    const byName = (m) => (m.display_name || '').toLowerCase().split(/\s+/u).some((w) => w.startsWith(q.query));
    const users = this.state
      .others(conv)
      .filter((m) => byUsername(m) || byName(m))
      .sort((a, b) => Number(byUsername(b)) - Number(byUsername(a)) || a.username.localeCompare(b.username))
      .slice(0, MAX_SUGGESTIONS);
    if (!users.length) {
      this.closeMentions();
      return;
    }
    // The highlighted member stays highlighted while the list narrows.
    const was = this.mention ? this.mention.users[this.mention.active]?.user_id : undefined;
    this.mention = { users, active: Math.max(0, users.findIndex((u) => u.user_id === was)) };
    this.renderMentions();
  }

  renderMentions() {
    const mention = this.mention;
    if (!mention) return;
    this.mentionList.replaceChildren(
      ...mention.users.map((u, i) => {
        const name = u.display_name || u.username;
        return h(
          'li',
          {
            class: `mention-option ${i === mention.active ? 'active' : ''}`,
            attrs: {
              id: `mention-option-${i}`,
              role: 'option',
              'aria-selected': i === mention.active ? 'true' : 'false',
              'aria-label': name === u.username ? `@${u.username}` : `${name}, @${u.username}`,
            },
            on: {
              // Keep the focus (and the caret) in the text field.
              mousedown: (e) => e.preventDefault(),
              click: () => this.chooseMention(u),
            },
          },
          avatar(u.user_id, name, 'xs'),
          h('span', { class: 'mention-name' }, name),
          h('span', { class: 'muted' }, `@${u.username}`),
        );
      }),
    );
    this.mentionList.hidden = false;
    this.input.setAttribute('aria-activedescendant', `mention-option-${mention.active}`);
  }

  closeMentions() {
    if (!this.mention && this.mentionList.hidden) return;
    this.mention = null;
    this.mentionList.hidden = true;
    this.mentionList.replaceChildren();
    this.input.removeAttribute('aria-activedescendant');
  }

  /** Arrows move through the offered members, Enter or Tab takes one, Escape closes. @param {KeyboardEvent} e */
  onMentionKey(e) {
    const mention = /** @type {{users: Member[], active: number}} */ (this.mention);
    if (e.isComposing) return false;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const n = mention.users.length;
      mention.active = (mention.active + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
      this.renderMentions();
    } else if ((e.key === 'Enter' || e.key === 'Tab') && !e.shiftKey) {
      this.chooseMention(mention.users[mention.active]);
    } else if (e.key === 'Escape') {
      this.closeMentions();
    } else {
      return false;
    }
    e.preventDefault();
    return true;
  }

  /** Replaces the `@name` being typed with the member's `@username`. @param {Member} user */
  chooseMention(user) {
    const q = this.mentionQuery();
    this.closeMentions();
    if (!q) return;
    const value = this.input.value;
    const insert = `@${user.username} `;
    const rest = value.slice(this.input.selectionStart).replace(/^ /u, '');
    this.input.value = value.slice(0, q.start) + insert + rest;
    const caret = q.start + insert.length;
    this.input.setSelectionRange(caret, caret);
    this.input.focus();
    this.onInput();
  }

  /** Grows the field with its text, up to a limit (then it scrolls). */
  resize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 180)}px`;
  }

  saveDraft() {
    if (!this.convId || this.context?.mode === 'edit') return;
    const text = this.input.value;
    if (text.trim()) this.drafts.set(this.convId, text);
    else this.drafts.delete(this.convId);
    try {
      localStorage.setItem(`parley.drafts.${this.state.me.user_id}`, JSON.stringify(Array.from(this.drafts)));
    } catch {
      // Drafts are a convenience.
    }
  }
}

/** @param {string} userId @returns {Map<string, string>} */
function loadDrafts(userId) {
  try {
    const raw = localStorage.getItem(`parley.drafts.${userId}`);
    return new Map(raw ? JSON.parse(raw) : []);
  } catch {
    return new Map();
  }
}
