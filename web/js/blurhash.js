// BlurHash (https://blurha.sh, the algorithm of github.com/woltapp/blurhash): a picture's
// colours as a few cosine components, in a short base-83 string a message can carry. Before the
// thumbnail and the full image arrive, the decoded hash paints a soft blur of the right colours.
//
// This is a small reimplementation of the published algorithm: a DC component (the average
// colour, 4 characters) and `x × y − 1` AC components (2 characters each), after one character
// for the component counts and one for the largest AC value.

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~';

/** @param {number} value @param {number} length */
function encode83(value, length) {
  let out = '';
  for (let i = 1; i <= length; i++) {
    const digit = Math.floor(value / 83 ** (length - i)) % 83;
    out += DIGITS[digit];
  }
  return out;
}

/** @param {string} s @returns {number} NaN when a character is not a base-83 digit */
function decode83(s) {
  let value = 0;
  for (const c of s) {
    const digit = DIGITS.indexOf(c);
    if (digit < 0) return NaN;
    value = value * 83 + digit;
  }
  return value;
}

/** An sRGB byte to linear light (0–1). @param {number} v */
function toLinear(v) {
  const x = v / 255;
  return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
}

/** Linear light (0–1) to an sRGB byte. @param {number} v */
function toSrgb(v) {
  const x = Math.max(0, Math.min(1, v));
  return x <= 0.0031308 ? Math.trunc(x * 12.92 * 255 + 0.5) : Math.trunc((1.055 * x ** (1 / 2.4) - 0.055) * 255 + 0.5);
}

/** @param {number} v @param {number} exp */
function signPow(v, exp) {
  return Math.sign(v) * Math.abs(v) ** exp;
}

/**
 * The hash of an RGBA image (4 bytes a pixel, rows without padding). Keep the image small
 * (32 px or so is plenty): the cost is pixels × components.
 * @param {Uint8ClampedArray} pixels
 * @param {number} width
 * @param {number} height
 * @param {number} [componentsX] 1–9
 * @param {number} [componentsY] 1–9
 * @returns {string}
 */
export function encode(pixels, width, height, componentsX = 4, componentsY = 3) {
  if (componentsX < 1 || componentsX > 9 || componentsY < 1 || componentsY > 9) throw new RangeError('blurhash components must be 1 to 9');
  if (pixels.length < width * height * 4) throw new RangeError('blurhash: not enough pixels');
  // Linearise once.
  const lin = new Float32Array(width * height * 3);
  for (let i = 0, p = 0; i < width * height; i++, p += 4) {
    lin[i * 3] = toLinear(pixels[p]);
    lin[i * 3 + 1] = toLinear(pixels[p + 1]);
    lin[i * 3 + 2] = toLinear(pixels[p + 2]);
  }
  /** @type {[number, number, number][]} */
  const factors = [];
  for (let j = 0; j < componentsY; j++) {
    for (let i = 0; i < componentsX; i++) {
      const norm = i === 0 && j === 0 ? 1 : 2;
      let r = 0;
      let g = 0;
      let b = 0;
      for (let y = 0; y < height; y++) {
        const by = Math.cos((Math.PI * j * y) / height);
        for (let x = 0; x < width; x++) {
          const basis = Math.cos((Math.PI * i * x) / width) * by;
          const k = (y * width + x) * 3;
          r += basis * lin[k];
          g += basis * lin[k + 1];
          b += basis * lin[k + 2];
        }
      }
      const scale = norm / (width * height);
      factors.push([r * scale, g * scale, b * scale]);
    }
  }
  const [dc, ...ac] = factors;
  let hash = encode83(componentsX - 1 + (componentsY - 1) * 9, 1);
  let maximum = 1;
  if (ac.length) {
    const actualMax = Math.max(...ac.map((f) => Math.max(Math.abs(f[0]), Math.abs(f[1]), Math.abs(f[2]))));
    const quantisedMax = Math.floor(Math.max(0, Math.min(82, Math.floor(actualMax * 166 - 0.5))));
    maximum = (quantisedMax + 1) / 166;
    hash += encode83(quantisedMax, 1);
  } else {
    hash += encode83(0, 1);
  }
  hash += encode83((toSrgb(dc[0]) << 16) + (toSrgb(dc[1]) << 8) + toSrgb(dc[2]), 4);
  for (const f of ac) {
    /** @param {number} v */
    const q = (v) => Math.floor(Math.max(0, Math.min(18, Math.floor(signPow(v / maximum, 0.5) * 9 + 9.5))));
    hash += encode83(q(f[0]) * 19 * 19 + q(f[1]) * 19 + q(f[2]), 2);
  }
  return hash;
}

/**
 * Whether a string is a well-formed hash (its length matches the component counts it names).
 * @param {unknown} hash
 * @returns {hash is string}
 */
export function isValid(hash) {
  if (typeof hash !== 'string' || hash.length < 6) return false;
  const flag = decode83(hash[0]);
  if (Number.isNaN(flag)) return false;
  const nx = (flag % 9) + 1;
  const ny = Math.floor(flag / 9) + 1;
  return hash.length === 4 + 2 * nx * ny && !Number.isNaN(decode83(hash));
}

/**
 * The RGBA pixels of a hash drawn at `width` × `height` (small: 32 × 32 scaled up by CSS looks
 * the same as large). `punch` raises the contrast. Throws on a malformed hash.
 * @param {string} hash
 * @param {number} width
 * @param {number} height
 * @param {number} [punch]
 * @returns {Uint8ClampedArray}
 */
export function decode(hash, width, height, punch = 1) {
  if (!isValid(hash)) throw new Error('not a blurhash');
  const flag = decode83(hash[0]);
  const nx = (flag % 9) + 1;
  const ny = Math.floor(flag / 9) + 1;
  const maximum = (decode83(hash[1]) + 1) / 166;
  /** @type {[number, number, number][]} */
  const colors = [];
  const dc = decode83(hash.slice(2, 6));
  colors.push([toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]);
  for (let i = 1; i < nx * ny; i++) {
    const v = decode83(hash.slice(4 + i * 2, 6 + i * 2));
    const qr = Math.floor(v / (19 * 19));
    const qg = Math.floor(v / 19) % 19;
    const qb = v % 19;
    const m = maximum * punch;
    colors.push([signPow((qr - 9) / 9, 2) * m, signPow((qg - 9) / 9, 2) * m, signPow((qb - 9) / 9, 2) * m]);
  }
  const out = new Uint8ClampedArray(width * height * 4);
  const cosX = new Float32Array(width * nx);
  for (let x = 0; x < width; x++) for (let i = 0; i < nx; i++) cosX[x * nx + i] = Math.cos((Math.PI * x * i) / width);
  const cosY = new Float32Array(height * ny);
  for (let y = 0; y < height; y++) for (let j = 0; j < ny; j++) cosY[y * ny + j] = Math.cos((Math.PI * y * j) / height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let j = 0; j < ny; j++) {
        const cy = cosY[y * ny + j];
        for (let i = 0; i < nx; i++) {
          const basis = cosX[x * nx + i] * cy;
          const c = colors[i + j * nx];
          r += c[0] * basis;
          g += c[1] * basis;
          b += c[2] * basis;
        }
      }
      const p = 4 * (x + y * width);
      out[p] = toSrgb(r);
      out[p + 1] = toSrgb(g);
      out[p + 2] = toSrgb(b);
      out[p + 3] = 255;
    }
  }
  return out;
}
