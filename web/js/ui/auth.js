// The sign-in screen: sign in, or create an account and sign in to it.

import { h } from '../dom.js';
import { ApiError } from '../api.js';

/** @typedef {import('../types.js').Session} Session */
/** @typedef {import('../api.js').Api} Api */

/** A name for this browser as a device, e.g. "Chrome on Linux". */
export function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//u.test(ua)
    ? 'Edge'
    : /Firefox\//u.test(ua)
      ? 'Firefox'
      : /Chrom(e|ium)\//u.test(ua)
        ? 'Chrome'
        : /Safari\//u.test(ua)
          ? 'Safari'
          : 'Browser';
  const os = /Android/u.test(ua)
    ? 'Android'
    : /iPhone|iPad/u.test(ua)
      ? 'iOS'
      : /Mac OS X/u.test(ua)
        ? 'macOS'
        : /Windows/u.test(ua)
          ? 'Windows'
          : /Linux/u.test(ua)
            ? 'Linux'
            : 'web';
  return `${browser} on ${os} (web)`;
}

/**
 * Shows the sign-in screen in `root`; calls `done` with the new session.
 * @param {HTMLElement} root
 * @param {Api} api
 * @param {(session: Session) => void} done
 * @param {string} [notice] a message to show first (e.g. "You were signed out")
 */
export function showAuth(root, api, done, notice) {
  const username = h('input', {
    attrs: {
      id: 'auth-username',
      name: 'username',
      autocomplete: 'username',
      autocapitalize: 'none',
      spellcheck: 'false',
      required: true,
      minlength: 3,
      maxlength: 32,
    },
  });
  const password = h('input', {
    attrs: {
      id: 'auth-password',
      name: 'password',
      type: 'password',
      autocomplete: 'current-password',
      required: true,
      minlength: 8,
    },
  });
  const error = h('p', { class: 'form-error', attrs: { role: 'alert' } }, notice || '');
  const signIn = h('button', { class: 'btn primary', attrs: { type: 'submit' } }, 'Sign in');
  const create = h('button', { class: 'btn', attrs: { type: 'button' } }, 'Create account');

  /** @param {boolean} busy */
  const setBusy = (busy) => {
    for (const el of [username, password, signIn, create]) el.disabled = busy;
  };

  /** @param {'signin' | 'create'} mode */
  const submit = async (mode) => {
    const name = username.value.trim().toLowerCase();
    const pass = password.value;
    if (mode === 'create') {
      if (!/^[a-z0-9_.-]{3,32}$/u.test(name)) {
        error.textContent = 'Usernames are 3 to 32 characters: letters, digits, “_”, “.” and “-”.';
        username.focus();
        return;
      }
      if (new TextEncoder().encode(pass).length < 8) {
        error.textContent = 'Passwords have at least 8 characters.';
        password.focus();
        return;
      }
    } else if (!name || !pass) {
      error.textContent = 'Enter your username and password.';
      (name ? password : username).focus();
      return;
    }
    error.textContent = '';
    setBusy(true);
    try {
      if (mode === 'create') await api.createAccount(name, pass);
      const s = await api.signIn(name, pass, deviceName());
      /** @type {Session} */
      const session = { token: s.token, user_id: s.user_id, device_id: s.device_id, username: name, display_name: name };
      done(session);
    } catch (e) {
      setBusy(false);
      error.textContent = explain(e, mode);
      if (e instanceof ApiError && e.status === 409) username.focus();
      else password.focus();
    }
  };

  const form = h(
    'form',
    {
      class: 'auth-form',
      attrs: { novalidate: true, 'aria-labelledby': 'auth-title' },
      on: {
        submit: (e) => {
          e.preventDefault();
          submit('signin');
        },
      },
    },
    h('label', { class: 'field', attrs: { for: 'auth-username' } }, h('span', null, 'Username'), username),
    h('label', { class: 'field', attrs: { for: 'auth-password' } }, h('span', null, 'Password'), password),
    error,
    h('div', { class: 'auth-actions' }, signIn, create),
  );
  create.addEventListener('click', () => submit('create'));

  root.replaceChildren(
    h(
      'main',
      { class: 'auth' },
      h(
        'div',
        { class: 'auth-card' },
        h('img', { class: 'auth-logo', attrs: { src: '/favicon.svg', alt: '', width: 56, height: 56 } }),
        h('h1', { attrs: { id: 'auth-title' } }, 'Parley'),
        h('p', { class: 'muted' }, 'Sign in, or pick a username and password to create an account.'),
        form,
      ),
    ),
  );
  username.focus();
}

/** @param {unknown} e @param {'signin' | 'create'} mode */
function explain(e, mode) {
  if (!(e instanceof ApiError)) return 'Something went wrong. Try again.';
  if (e.network) return 'Cannot reach the server. Check your connection and try again.';
  if (e.status === 401) return 'Wrong username or password.';
  if (e.status === 409) return 'That username is taken. Pick another, or sign in.';
  if (e.status === 429) return 'Too many attempts. Wait a moment and try again.';
  if (e.status === 400) return mode === 'create' ? capitalize(e.message) : 'Wrong username or password.';
  return `The server could not do that (${e.code}).`;
}

/** @param {string} s */
function capitalize(s) {
  const t = s.endsWith('.') ? s : `${s}.`;
  return t.charAt(0).toUpperCase() + t.slice(1);
}
