// Line icons drawn as inline SVG (24×24, stroked with the current colour), built with DOM calls.

const NS = 'http://www.w3.org/2000/svg';

/** Path data of each icon. */
const PATHS = /** @type {const} */ ({
  send: ['M4 12 20 4l-3.5 16-5-6.5L4 12Z', 'm11.5 13.5 3-3'],
  back: ['M15 5l-7 7 7 7'],
  more: ['M12 6h.01', 'M12 12h.01', 'M12 18h.01'],
  moreH: ['M6 12h.01', 'M12 12h.01', 'M18 12h.01'],
  info: ['M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18Z', 'M12 11v5', 'M12 8h.01'],
  compose: ['M4 20h4L19 9l-4-4L4 16v4Z', 'm13.5 6.5 4 4'],
  group: [
    'M9 11a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7Z',
    'M2.5 20c0-3.6 2.9-6 6.5-6s6.5 2.4 6.5 6',
    'M16 4.5a3.5 3.5 0 0 1 0 6.5',
    'M18 14.3c2 .8 3.5 2.9 3.5 5.7',
  ],
  check: ['m4.5 12.5 4.5 4.5L19.5 6.5'],
  checks: ['m2 12.5 4.5 4.5L17 6.5', 'm11.5 16 1 1L23 6.5'],
  clock: ['M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18Z', 'M12 7v5l3 2'],
  alert: ['M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18Z', 'M12 7.5v5.5', 'M12 16.5h.01'],
  reply: ['M9 14 4 9l5-5', 'M4 9h10a6 6 0 0 1 6 6v4'],
  edit: ['M4 20h4L19 9l-4-4L4 16v4Z'],
  trash: ['M4 7h16', 'M10 11v6', 'M14 11v6', 'M6 7l1 13h10l1-13', 'M9 7V4h6v3'],
  smile: ['M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18Z', 'M8.5 14.5s1.2 2 3.5 2 3.5-2 3.5-2', 'M9 9.5h.01', 'M15 9.5h.01'],
  close: ['M6 6l12 12', 'M18 6 6 18'],
  down: ['M12 5v14', 'm6 13 6 6 6-6'],
  copy: ['M9 9h11v11H9z', 'M5 15H4V4h11v1'],
  logout: ['M15 4h4v16h-4', 'M10 17l5-5-5-5', 'M15 12H3'],
  bell: ['M6 16V11a6 6 0 0 1 12 0v5l2 2H4l2-2Z', 'M10 21h4'],
  bellOff: ['M8.3 6.3A6 6 0 0 1 18 11v4.5', 'M6 11v5l-2 2h14', 'M10 21h4', 'M3 3l18 18'],
  at: ['M12 16a4 4 0 1 0 0-8 4 4 0 0 0 0 8Z', 'M16 8v5a3 3 0 0 0 6 0v-1a10 10 0 1 0-3.9 7.9'],
  moon: ['M20 14.5A8.5 8.5 0 1 1 9.5 4a7 7 0 0 0 10.5 10.5Z'],
  search: ['M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14Z', 'm20 20-4-4'],
  wifiOff: ['M2 2l20 20', 'M8.5 16.5a5 5 0 0 1 7 0', 'M5 12.5a10 10 0 0 1 5-2.5', 'M19 12.5a10 10 0 0 0-3-2', 'M12 20h.01'],
  userPlus: ['M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8Z', 'M2 21c0-4 3-7 7-7s7 3 7 7', 'M19 8v6', 'M16 11h6'],
  shield: ['M12 3 4.5 6v6c0 4.5 3.2 8 7.5 9 4.3-1 7.5-4.5 7.5-9V6L12 3Z'],
  leave: ['M10 4H5v16h5', 'M15 17l5-5-5-5', 'M20 12H9'],
  attach: ['M20.5 11.5 12 20a5.5 5.5 0 0 1-7.8-7.8l9-9a3.7 3.7 0 0 1 5.2 5.2l-9 9a1.8 1.8 0 0 1-2.6-2.6l8.3-8.3'],
  mic: ['M12 15a3.5 3.5 0 0 0 3.5-3.5v-5a3.5 3.5 0 0 0-7 0v5A3.5 3.5 0 0 0 12 15Z', 'M5.5 11a6.5 6.5 0 0 0 13 0', 'M12 17.5V21'],
  play: ['M8 5.5v13l10.5-6.5L8 5.5Z'],
  pause: ['M8 5v14', 'M16 5v14'],
  file: ['M6 3h8l5 5v13H6V3Z', 'M14 3v5h5'],
  download: ['M12 4v11', 'm7 10 5 5 5-5', 'M5 20h14'],
  upload: ['M12 20V9', 'm7 14 5-5 5 5', 'M5 4h14'],
  forward: ['M9 5l7 7-7 7'],
  video: ['M4 7h11v10H4z', 'm15 10.5 5-3v9l-5-3'],
  music: ['M9 18V5l11-2v13', 'M9 18a3 3 0 1 1-6 0 3 3 0 0 1 6 0Z', 'M20 16a3 3 0 1 1-6 0 3 3 0 0 1 6 0Z'],
  image: ['M4 5h16v14H4z', 'm4 16 5-5 4 4 2-2 5 5', 'M15.5 9.5h.01'],
});

/** @typedef {keyof typeof PATHS} IconName */

/**
 * An icon, hidden from assistive technology (the button around it carries the label).
 * @param {IconName} name
 * @param {string} [cls]
 * @returns {SVGSVGElement}
 */
export function icon(name, cls = '') {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', `icon icon-${name} ${cls}`.trim());
  for (const d of PATHS[name]) {
    const path = document.createElementNS(NS, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}
