// The notification settings: whether this browser gets pushes while Parley is closed (and if
// not, why, with what the user can do about it), and do not disturb, which holds back every
// notification of the account, on every device, until a time.

import { h } from '../dom.js';
import { fullDateTime } from '../format.js';
import { describeError } from './dialogs.js';
import { dndText } from './sidebar.js';

/** @typedef {import('../state.js').ChatState} ChatState */
/** @typedef {import('../push.js').Push} Push */
/** @typedef {import('../types.js').PushRegistration} PushRegistration */

/**
 * @typedef {object} SettingsContext
 * @property {ChatState} state
 * @property {Push} push
 * @property {(render: () => void) => () => void} watch calls `render` after each redraw of the app, until the returned function is called
 */

const HOUR_MS = 3_600_000;
/** "Until I turn it off" is a time far enough away (the server keeps a time, not a flag). */
const FOREVER_MS = 100 * 365 * 24 * HOUR_MS;

/**
 * The ways to turn do not disturb on, each with when it ends.
 * @type {{label: string, until: (state: ChatState) => number}[]}
 */
const DND_CHOICES = [
  { label: 'For 1 hour', until: (state) => state.now() + HOUR_MS },
  {
    label: 'Until tomorrow, 8:00',
    until: () => {
      const d = new Date();
      d.setDate(d.getDate() + 1);
      d.setHours(8, 0, 0, 0);
      return d.getTime();
    },
  },
  { label: 'Until I turn it off', until: (state) => state.now() + FOREVER_MS },
];

/** Opens the notification settings (a modal dialog). @param {SettingsContext} ctx */
export function notificationSettings(ctx) {
  const { state, push } = ctx;
  const titleId = `dlg-${Math.random().toString(36).slice(2)}`;
  const pushText = h('p', { attrs: { role: 'status' } });
  const pushDetail = h('p', { class: 'muted', attrs: { hidden: true } });
  const pushAction = h('button', { class: 'btn', attrs: { type: 'button' }, on: { click: () => void push.turnOn() } });
  const dndState = h('p', { attrs: { role: 'status' } });
  const error = h('p', { class: 'form-error', attrs: { role: 'alert' } });
  const dndOff = h('button', { class: 'btn', attrs: { type: 'button' }, on: { click: () => setDnd(null) } }, 'Turn off');
  const dndButtons = DND_CHOICES.map((choice) =>
    h('button', { class: 'btn', attrs: { type: 'button' }, on: { click: () => setDnd(choice.until(state)) } }, choice.label),
  );
  const done = h('button', { class: 'btn primary', attrs: { type: 'button' } }, 'Done');
  /** What the server said about this device's pushes, once asked. @type {PushRegistration | null} */
  let server = null;

  const dialog = h(
    'dialog',
    { class: 'dialog', attrs: { 'aria-labelledby': titleId } },
    h(
      'div',
      { class: 'dialog-form settings' },
      h('h2', { attrs: { id: titleId } }, 'Notifications'),
      h('section', { class: 'settings-section', attrs: { 'aria-label': 'This browser' } }, h('h3', null, 'This browser'), pushText, pushDetail, pushAction),
      h(
        'section',
        { class: 'settings-section', attrs: { 'aria-label': 'Do not disturb' } },
        h('h3', null, 'Do not disturb'),
        h('p', { class: 'muted' }, 'No notifications on any of your devices while it is on.'),
        dndState,
        h('div', { class: 'settings-choices', attrs: { role: 'group', 'aria-label': 'Do not disturb' } }, dndButtons, dndOff),
      ),
      error,
      h('div', { class: 'dialog-actions' }, done),
    ),
  );

  /** @param {number | null} until */
  async function setDnd(until) {
    error.textContent = '';
    try {
      await state.setDnd(until);
    } catch (e) {
      error.textContent = describeError(e);
    }
    render();
  }

  function render() {
    const p = push.describe();
    pushText.textContent = p.text;
    pushAction.hidden = !p.action;
    pushAction.textContent = p.action ?? '';
    const detail = push.state === 'on' && server ? serverText(server) : '';
    pushDetail.hidden = !detail;
    pushDetail.textContent = detail;
    const on = state.dnd() && state.dndUntil !== null;
    dndState.textContent = on ? `On ${dndText(/** @type {number} */ (state.dndUntil), state.now())}.` : 'Off.';
    dndOff.hidden = !on;
  }

  const unwatch = ctx.watch(render);
  const close = () => {
    unwatch();
    dialog.close();
    dialog.remove();
  };
  done.addEventListener('click', close);
  dialog.addEventListener('cancel', (e) => {
    e.preventDefault();
    close();
  });
  document.body.append(dialog);
  render();
  dialog.showModal();
  done.focus();

  // Fresh from the server: do not disturb may have been changed on another device, and the
  // server knows whether its pushes to this browser get through.
  state.api
    .me()
    .then((me) => {
      state.dndUntil = me.dnd_until ?? null;
      render();
    })
    .catch(() => {});
  if (push.state === 'on') {
    state.api
      .pushStatus()
      .then((status) => {
        server = status;
        render();
      })
      .catch(() => {});
  }
}

/** What the server's record of this browser's pushes tells the user. @param {PushRegistration} p */
function serverText(p) {
  if (p.invalidated_at !== null) return 'The push service dropped this browser; it is being registered again.';
  const parts = [];
  if (p.last_success_at !== null) parts.push(`Last push delivered ${fullDateTime(p.last_success_at)}.`);
  if (p.last_error) parts.push(`Last error: ${p.last_error}`);
  return parts.join(' ');
}
