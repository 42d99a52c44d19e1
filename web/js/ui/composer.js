// The message composer: a growing text field, Enter sends and Shift+Enter adds a line, replies
// and edits, per-conversation drafts, `@` mentions of group members, and the typing indicator
// we send. Attachments come from the attach button, a paste or a drop on the chat, wait in a
// tray (the text becomes the first one's caption) and go with Send; with nothing to send, the
// send button is the mic of a voice message. It works the same offline: what is sent goes to
// the outbox (files upload when the connection is back) and leaves when it can.

import { avatar, h } from '../dom.js';
import { icon } from '../icons.js';
import { snippet, utf8Length } from '../format.js';
import { fileSize } from '../media.js';
import { RecorderBar, canRecord } from './recorder.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../state.js').Bubble} Bubble */
/** @typedef {import('../types.js').Member} Member */

/** The server's limit on a text message, in UTF-8 bytes. */
const MAX_TEXT_BYTES = 16_384;
/** Without a keystroke for this long, we say we stopped typing. */
const TYPING_IDLE_MS = 4_000;
/** At most this many files go in one send. */
const MAX_ATTACHMENTS = 30;
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
    /** Files waiting to be sent, with an object URL for the preview of pictures. @type {{file: File, url: string | null}[]} */
    this.attachments = [];

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
        paste: (e) => this.onPaste(e),
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
    this.fileInput = h('input', {
      class: 'file-input',
      attrs: { type: 'file', multiple: true, hidden: true, tabindex: -1, 'aria-hidden': 'true' },
      on: {
        change: () => {
          this.addFiles(Array.from(this.fileInput.files || []));
          this.fileInput.value = '';
        },
      },
    });
    this.attach = h(
      'button',
      {
        class: 'icon-btn attach-btn',
        attrs: { type: 'button', 'aria-label': 'Attach files', title: 'Attach photos, videos or files' },
        on: { click: () => this.fileInput.click() },
      },
      icon('attach'),
    );
    this.tray = h('ul', { class: 'attach-tray', attrs: { 'aria-label': 'Attachments', hidden: true } });
    this.recorder = new RecorderBar({
      send: (blob, durationMs) => this.sendVoice(blob, durationMs),
      error: (message) => {
        this.error.textContent = message;
      },
      changed: (recording) => {
        // The bar takes the text field's place; the mic stays where it is (it may be held).
        this.attach.hidden = recording;
        this.input.hidden = recording;
        this.tray.hidden = recording || !this.attachments.length;
        if (recording) this.send.hidden = true;
        else {
          this.updateButtons();
          this.input.focus();
        }
      },
    });
    this.row = h('div', { class: 'composer-row' }, this.attach, this.input, this.recorder.bar, this.send, this.recorder.mic);
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
      this.tray,
      this.row,
      this.fileInput,
    );
    this.closedNote = h('p', { class: 'composer-closed', attrs: { hidden: true } }, 'You are no longer a member of this group.');
    this.el = h('footer', { class: 'composer-wrap' }, this.form, this.closedNote);
  }

  /** @param {string | null} id */
  show(id) {
    if (id === this.convId) return;
    this.stopTyping();
    this.saveDraft();
    this.recorder.cancel();
    this.clearAttachments();
    this.convId = id;
    this.context = null;
    this.closeMentions();
    this.setContext(null);
    this.input.value = id ? this.drafts.get(id) ?? '' : '';
    this.error.textContent = '';
    this.resize();
    this.updateButtons();
  }

  /** Shows or hides the composer for a conversation the user has left. @param {boolean} left */
  setLeft(left) {
    if (left && !this.form.hidden) {
      this.recorder.cancel();
      this.clearAttachments();
    }
    this.form.hidden = left;
    this.closedNote.hidden = !left;
  }

  /** Whether the composer takes files now (a conversation is open and the user is in it). */
  accepting() {
    return !!this.convId && !this.form.hidden && !this.recorder.active;
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
      this.updateButtons();
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
    this.updateButtons();
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
    this.updateButtons();
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
    if (this.attachments.length && this.context?.mode !== 'edit') {
      this.submitFiles(id, text);
      return;
    }
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
    this.updateButtons();
    this.input.focus();
  }

  // --- attachments ---

  /**
   * Sends the files in the tray; the text, if any, is the first one's caption.
   * @param {string} id @param {string} text
   */
  submitFiles(id, text) {
    const caption = text.trim() ? text : '';
    if (utf8Length(caption) > MAX_TEXT_BYTES) {
      this.error.textContent = `The caption is too long: at most ${MAX_TEXT_BYTES.toLocaleString()} bytes.`;
      return;
    }
    const ctx = this.context;
    const replyTo = ctx?.mode === 'reply' && ctx.bubble.seq ? ctx.bubble.seq : undefined;
    const mentions = caption ? this.state.mentionedIds(id, caption) : [];
    this.attachments.forEach(({ file }, i) => {
      this.state.sendMedia(id, file, {
        name: file.name || undefined,
        caption: i === 0 ? caption : undefined,
        reply_to_seq: i === 0 ? replyTo : undefined,
        mentions: i === 0 ? mentions : undefined,
      });
    });
    this.clearAttachments();
    this.input.value = '';
    this.drafts.delete(id);
    this.saveDraft();
    this.setContext(null);
    this.closeMentions();
    this.stopTyping();
    this.state.typingSent.delete(id);
    this.resize();
    this.updateButtons();
    this.onSent();
    this.input.focus();
  }

  /** A recorded voice message goes at once. @param {Blob} blob @param {number} durationMs */
  sendVoice(blob, durationMs) {
    const id = this.convId;
    if (!id) return;
    this.state.sendMedia(id, blob, { duration_ms: durationMs });
    this.onSent();
  }

  /**
   * Puts files in the tray (from the attach button, a paste or a drop), refusing with a reason
   * those that cannot be sent (empty, larger than the server's limit once it is known).
   * @param {File[]} files
   */
  addFiles(files) {
    if (!files.length || !this.accepting()) return;
    if (this.context?.mode === 'edit') this.setContext(null);
    const limit = this.state.uploads.limit();
    /** @type {string[]} */
    const problems = [];
    for (const file of files) {
      if (this.attachments.length >= MAX_ATTACHMENTS) {
        problems.push(`At most ${MAX_ATTACHMENTS} files at a time.`);
        break;
      }
      if (!file.size) {
        problems.push(`“${file.name || 'The file'}” is empty.`);
        continue;
      }
      if (limit !== null && file.size > limit) {
        problems.push(`“${file.name || 'The file'}” is too large to send (${fileSize(file.size)}). The limit is ${fileSize(limit)}.`);
        continue;
      }
      const url = /^image\//u.test(file.type) && file.type !== 'image/svg+xml' ? URL.createObjectURL(file) : null;
      this.attachments.push({ file, url });
    }
    this.error.textContent = problems.join(' ');
    this.renderTray();
    this.updateButtons();
    this.input.focus();
  }

  /** @param {number} index */
  removeAttachment(index) {
    const [gone] = this.attachments.splice(index, 1);
    if (gone?.url) URL.revokeObjectURL(gone.url);
    this.renderTray();
    this.updateButtons();
    this.input.focus();
  }

  clearAttachments() {
    for (const a of this.attachments) if (a.url) URL.revokeObjectURL(a.url);
    this.attachments = [];
    this.renderTray();
  }

  renderTray() {
    this.tray.hidden = !this.attachments.length;
    this.input.placeholder = this.attachments.length ? 'Add a caption' : 'Message';
    this.tray.replaceChildren(
      ...this.attachments.map(({ file, url }, i) =>
        h(
          'li',
          { class: 'attach-chip', attrs: { 'aria-label': `${file.name || 'File'}, ${fileSize(file.size)}` } },
          url
            ? h('img', { class: 'attach-preview', attrs: { src: url, alt: '' } })
            : h('span', { class: 'attach-preview icon-preview', attrs: { 'aria-hidden': 'true' } }, icon(/^video\//u.test(file.type) ? 'video' : /^audio\//u.test(file.type) ? 'music' : 'file')),
          h('span', { class: 'attach-text' }, h('span', { class: 'attach-name' }, file.name || 'File'), h('span', { class: 'attach-size muted' }, fileSize(file.size))),
          h(
            'button',
            { class: 'icon-btn sm attach-remove', attrs: { type: 'button', 'aria-label': `Remove ${file.name || 'file'}` }, on: { click: () => this.removeAttachment(i) } },
            icon('close'),
          ),
        ),
      ),
    );
  }

  /** A paste of pictures or files (a screenshot, "Copy image") attaches them; text pastes as text. @param {ClipboardEvent} e */
  onPaste(e) {
    const data = e.clipboardData;
    if (!data || !data.files.length) return;
    if ((data.getData('text/plain') || '').trim()) return;
    e.preventDefault();
    this.addFiles(Array.from(data.files));
  }

  /** The send button while there is something to send, else the mic. */
  updateButtons() {
    if (this.recorder.active) return;
    const something = !!this.input.value.trim() || this.attachments.length > 0 || this.context?.mode === 'edit';
    const mic = canRecord() && !something;
    this.send.hidden = mic;
    this.recorder.mic.hidden = !mic;
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
