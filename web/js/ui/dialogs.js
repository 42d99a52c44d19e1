// Modal dialogs (new chat, new group, confirmations) on the native <dialog> element, and the
// small pop-up menus used for message and member actions.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { ApiError } from '../api.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../icons.js').IconName} IconName */

/**
 * A modal dialog with a form; resolves when it closes. `onSubmit` returns an error text to keep
 * it open, or nothing to close it.
 * @param {object} opts
 * @param {string} opts.title
 * @param {Node[]} opts.fields
 * @param {string} opts.submitLabel
 * @param {(form: HTMLFormElement) => Promise<string | void>} opts.onSubmit
 * @param {boolean} [opts.danger]
 * @param {string} [opts.cancelLabel]
 */
export function formDialog({ title, fields, submitLabel, onSubmit, danger = false, cancelLabel = 'Cancel' }) {
  const titleId = `dlg-${Math.random().toString(36).slice(2)}`;
  const error = h('p', { class: 'form-error', attrs: { role: 'alert' } });
  const submit = h('button', { class: `btn ${danger ? 'danger' : 'primary'}`, attrs: { type: 'submit' } }, submitLabel);
  const cancel = h('button', { class: 'btn', attrs: { type: 'button' } }, cancelLabel);
  const form = h(
    'form',
    { class: 'dialog-form' },
    h('h2', { attrs: { id: titleId } }, title),
    ...fields,
    error,
    h('div', { class: 'dialog-actions' }, cancel, submit),
  );
  const dialog = h('dialog', { class: 'dialog', attrs: { 'aria-labelledby': titleId } }, form);
  document.body.append(dialog);

  return new Promise((resolve) => {
    /** @param {boolean} ok */
    const finish = (ok) => {
      dialog.close();
      dialog.remove();
      resolve(ok);
    };
    cancel.addEventListener('click', () => finish(false));
    dialog.addEventListener('cancel', (e) => {
      e.preventDefault();
      finish(false);
    });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      error.textContent = '';
      submit.disabled = true;
      try {
        const problem = await onSubmit(form);
        if (problem) error.textContent = problem;
        else finish(true);
      } catch (err) {
        error.textContent = describeError(err);
      } finally {
        submit.disabled = false;
      }
    });
    dialog.showModal();
    const first = form.querySelector('input, textarea');
    if (first instanceof HTMLElement) first.focus();
  });
}

/**
 * A yes/no question. @param {string} title @param {string} text @param {string} okLabel
 * @returns {Promise<boolean>}
 */
export function confirmDialog(title, text, okLabel) {
  return formDialog({
    title,
    fields: [h('p', { class: 'muted' }, text)],
    submitLabel: okLabel,
    danger: true,
    onSubmit: async () => undefined,
  }).then((ok) => /** @type {boolean} */ (ok));
}

/** A human sentence for a failed action. @param {unknown} err */
export function describeError(err) {
  if (err instanceof ApiError) {
    if (err.network) return 'Cannot reach the server. Try again when you are back online.';
    if (err.status === 403) return 'Only group admins can do that.';
    if (err.status === 404) return 'Not found.';
    if (err.status === 429) return 'Too many requests. Wait a moment.';
    return err.message.charAt(0).toUpperCase() + err.message.slice(1);
  }
  return err instanceof Error ? err.message : 'Something went wrong.';
}

/**
 * A labelled text field.
 * @param {string} label
 * @param {Record<string, string | number | boolean>} attrs
 * @param {string} [hint]
 */
export function field(label, attrs, hint) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  const hintId = hint ? `${id}-hint` : undefined;
  const input = h('input', { attrs: { id, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false', 'aria-describedby': hintId, ...attrs } });
  return h(
    'div',
    { class: 'field' },
    h('label', { attrs: { for: id } }, label),
    input,
    hint ? h('small', { class: 'muted', attrs: { id: hintId } }, hint) : null,
  );
}

/** Splits "bob, carol dave" into usernames. @param {string} text */
export function usernames(text) {
  return text
    .split(/[\s,;]+/u)
    .map((s) => s.trim().replace(/^@/u, ''))
    .filter(Boolean);
}

/**
 * "New chat": find a user by username and open the direct conversation.
 * @param {ChatState} state @param {(id: string) => void} open
 */
export function newChatDialog(state, open) {
  return formDialog({
    title: 'New chat',
    fields: [field('Find user', { name: 'username', required: true, placeholder: 'username' }, 'Their exact username.')],
    submitLabel: 'Start chat',
    onSubmit: async (form) => {
      const name = /** @type {HTMLInputElement} */ (form.elements.namedItem('username')).value.trim();
      if (!name) return 'Enter a username.';
      try {
        open(await state.startDirect(name));
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return `No user named “${name}”.`;
        throw e;
      }
      return undefined;
    },
  });
}

/**
 * "New group": a title and members by username.
 * @param {ChatState} state @param {(id: string) => void} open
 */
export function newGroupDialog(state, open) {
  return formDialog({
    title: 'New group',
    fields: [
      field('Group name', { name: 'title', required: true, maxlength: 128, placeholder: 'e.g. Weekend trip' }),
      field('Members', { name: 'members', placeholder: 'alice, bob' }, 'Usernames, separated by commas or spaces.'),
    ],
    submitLabel: 'Create group',
    onSubmit: async (form) => {
      const title = /** @type {HTMLInputElement} */ (form.elements.namedItem('title')).value.trim();
      const members = usernames(/** @type {HTMLInputElement} */ (form.elements.namedItem('members')).value);
      if (!title) return 'Give the group a name.';
      open(await state.createGroup(title, members));
      return undefined;
    },
  });
}

/**
 * @typedef {object} MenuItem
 * @property {string} label
 * @property {IconName} [icon]
 * @property {() => void} run
 * @property {boolean} [danger]
 */

/** @type {(() => void) | null} */
let closeOpenMenu = null;

/**
 * A pop-up menu next to `anchor`: keyboard navigable, closed by Escape, a click outside, a
 * scroll or a choice.
 * @param {HTMLElement} anchor
 * @param {MenuItem[]} items
 * @param {string} label
 * @param {Node} [header] shown above the items (e.g. quick reactions)
 */
export function openMenu(anchor, items, label, header) {
  closeOpenMenu?.();
  const buttons = items.map((item) =>
    h(
      'button',
      {
        class: `menu-item ${item.danger ? 'danger' : ''}`,
        attrs: { type: 'button', role: 'menuitem' },
        on: {
          click: () => {
            close();
            item.run();
          },
        },
      },
      item.icon ? icon(item.icon) : null,
      h('span', null, item.label),
    ),
  );
  const menu = h('div', { class: 'menu', attrs: { role: 'menu', 'aria-label': label } }, header || null, ...buttons);
  document.body.append(menu);
  anchor.setAttribute('aria-expanded', 'true');

  // Place it below the anchor, or above when there is no room, inside the viewport.
  const a = anchor.getBoundingClientRect();
  const m = menu.getBoundingClientRect();
  const top = a.bottom + m.height + 8 < window.innerHeight ? a.bottom + 4 : Math.max(8, a.top - m.height - 4);
  const left = Math.min(Math.max(8, a.right - m.width), window.innerWidth - m.width - 8);
  menu.style.top = `${top}px`;
  menu.style.left = `${left}px`;

  /** @param {Event} e */
  const outside = (e) => {
    if (!(e.target instanceof Node) || (!menu.contains(e.target) && !anchor.contains(e.target))) close();
  };
  /** @param {KeyboardEvent} e */
  const keys = (e) => {
    const focusables = /** @type {HTMLElement[]} */ (Array.from(menu.querySelectorAll('button')));
    const i = focusables.indexOf(/** @type {HTMLElement} */ (document.activeElement));
    if (e.key === 'Escape') {
      e.preventDefault();
      close();
      anchor.focus();
    } else if (e.key === 'ArrowDown') {
      e.preventDefault();
      focusables[(i + 1) % focusables.length]?.focus();
    } else if (e.key === 'ArrowUp') {
      e.preventDefault();
      focusables[(i - 1 + focusables.length) % focusables.length]?.focus();
    } else if (e.key === 'Tab') {
      close();
    }
  };
  const onScroll = () => close();
  function close() {
    if (closeOpenMenu !== close) return;
    closeOpenMenu = null;
    menu.remove();
    anchor.setAttribute('aria-expanded', 'false');
    document.removeEventListener('pointerdown', outside, true);
    document.removeEventListener('keydown', keys, true);
    window.removeEventListener('resize', onScroll);
    document.removeEventListener('scroll', onScroll, true);
  }
  closeOpenMenu = close;
  // Registered after the opening click has finished.
  setTimeout(() => {
    if (closeOpenMenu !== close) return;
    document.addEventListener('pointerdown', outside, true);
    window.addEventListener('resize', onScroll);
    document.addEventListener('scroll', onScroll, true);
  });
  document.addEventListener('keydown', keys, true);
  const first = menu.querySelector('button');
  if (first) first.focus();
  return close;
}
