// Building the page with DOM calls only. User text goes in through `textContent` and attribute
// values, never through HTML parsing, so nothing a user writes can become markup (the server's
// Content-Security-Policy also makes `innerHTML` with a string throw).

/**
 * @typedef {string | number | Node | null | undefined | false} Child
 * @typedef {{[K in keyof HTMLElementEventMap]?: (event: HTMLElementEventMap[K]) => void}} Handlers
 * @typedef {object} Props
 * @property {string} [class]
 * @property {string} [text]
 * @property {Record<string, string | number | boolean | null | undefined>} [attrs]
 * @property {Handlers} [on]
 * @property {Record<string, string>} [data]
 */

/**
 * An element with attributes, listeners and children.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props | null} [props]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    if (props.class) el.className = props.class;
    if (props.text !== undefined) el.textContent = props.text;
    if (props.attrs) setAttrs(el, props.attrs);
    if (props.data) for (const [k, v] of Object.entries(props.data)) el.dataset[k] = v;
    if (props.on) {
      for (const [type, fn] of Object.entries(props.on)) {
        el.addEventListener(type, /** @type {EventListener} */ (fn));
      }
    }
  }
  append(el, children);
  return el;
}

/**
 * Sets (or, for `null`, `undefined` and `false`, removes) attributes; `true` sets an empty one.
 * @param {Element} el
 * @param {Record<string, string | number | boolean | null | undefined>} attrs
 */
export function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) el.removeAttribute(k);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

/**
 * @param {Element} el
 * @param {(Child | Child[])[]} children
 */
export function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'number' ? String(c) : c);
  }
}

/**
 * Replaces every child of `el`.
 * @param {Element} el
 * @param {...(Child | Child[])} children
 */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * Makes `parent`'s children exactly `nodes`, in order, moving only what is out of place (so
 * focus, scroll anchors and observers on the others are left alone).
 * @param {Element} parent
 * @param {Node[]} nodes
 */
export function reconcileChildren(parent, nodes) {
  const keep = new Set(nodes);
  for (const child of Array.from(parent.childNodes)) {
    if (!keep.has(child)) child.remove();
  }
  let cursor = parent.firstChild;
  for (const node of nodes) {
    if (node === cursor) {
      cursor = cursor.nextSibling;
    } else {
      parent.insertBefore(node, cursor);
    }
  }
}

/**
 * A small stable colour index (0–7) for a user or conversation id, for avatars.
 * @param {string} id
 */
export function colorIndex(id) {
  let x = 0;
  for (let i = 0; i < id.length; i++) x = (x * 31 + id.charCodeAt(i)) >>> 0;
  return x % 8;
}

/**
 * Up to two initials of a name, for an avatar.
 * @param {string} name
 */
export function initials(name) {
  const words = name.trim().split(/[\s._-]+/u).filter(Boolean);
  const letters = words.length >= 2 ? [words[0], words[1]] : [words[0] || '?'];
  return letters
    .map((w) => Array.from(w)[0] || '')
    .join('')
    .toUpperCase();
}

/**
 * A round avatar with initials, coloured by `id`.
 * @param {string} id
 * @param {string} name
 * @param {string} [extra] more classes
 */
export function avatar(id, name, extra = '') {
  return h('span', { class: `avatar c${colorIndex(id)} ${extra}`.trim(), attrs: { 'aria-hidden': 'true' } }, initials(name));
}
