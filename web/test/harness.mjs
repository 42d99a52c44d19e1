// Test harness of the browser suite: starts the real `parley` binary (each test its own, on an
// ephemeral port with its own data directory, killed by PID afterwards), one shared Chromium,
// users in browser contexts, and waits that poll visible state with a deadline (no sleeps).

import { spawn } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { mkdtempSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '..', '..');
export const BINARY = process.env.PARLEY_BIN || join(REPO, 'target', 'release', 'parley');
export const SCREENSHOTS = process.env.PARLEY_SCREENSHOTS || join(REPO, 'target', 'web-screenshots');
export const PASSWORD = 'correct horse battery';
/** The default bound of one wait. */
export const T = 15_000;

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/** @returns {Promise<import('playwright-core').Browser>} */
export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM || ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
  if (!executablePath) throw new Error('Chromium not found: install it (apt-get install chromium) or set CHROMIUM');
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--no-first-run',
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      // A microphone (a generated tone) that needs no permission prompt, for voice messages.
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
    ],
  });
}

/**
 * A `parley serve` process of its own.
 * @param {string[]} [extra] more flags
 */
export async function startServer(extra = []) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: cargo build --release -p parley`);
  const dir = mkdtempSync(join(tmpdir(), 'parley-web-'));
  const child = spawn(
    BINARY,
    ['serve', '--listen', '127.0.0.1:0', '--data-dir', dir, '--log-format', 'json', '--log', 'warn,parley_server=info', ...extra],
    { stdio: ['ignore', 'ignore', 'pipe'], env: cleanEnv() },
  );
  /** @type {string[]} */
  const log = [];
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start within 20 s:\n${log.join('\n')}`)), 20_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited with ${code} while starting:\n${log.join('\n')}`));
    });
    const lines = createInterface({ input: /** @type {import('node:stream').Readable} */ (child.stderr) });
    lines.on('line', (line) => {
      log.push(line);
      if (log.length > 200) log.shift();
      try {
        const entry = JSON.parse(line);
        if (entry.fields && entry.fields.message === 'parley is listening') {
          clearTimeout(timer);
          resolveUrl(`http://${entry.fields.addr}`);
        }
      } catch {
        // Not JSON: keep it for the failure message.
      }
    });
  });
  child.removeAllListeners('exit');
  const pid = /** @type {number} */ (child.pid);
  let stopped = false;
  return {
    url,
    pid,
    log,
    /** Kills the process by its PID and removes its data. */
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        process.kill(pid, 'SIGKILL');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The environment without PARLEY_* settings, so only the flags count. */
function cleanEnv() {
  /** @type {Record<string, string>} */
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PARLEY_') && v !== undefined) env[k] = v;
  env.NO_COLOR = '1';
  return env;
}

/** @typedef {Awaited<ReturnType<typeof startServer>>} Server */

/**
 * REST, for setting up what the test is not about (accounts of people not in a browser, bulk
 * history).
 * @param {Server} srv @param {string} method @param {string} path @param {unknown} [body] @param {string} [token]
 */
export async function rest(srv, method, path, body, token) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(srv.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return json;
}

/** An account made and signed in over REST. @param {Server} srv @param {string} username */
export async function restUser(srv, username) {
  const u = await rest(srv, 'POST', '/v1/accounts', { username, password: PASSWORD });
  const s = await rest(srv, 'POST', '/v1/sessions', { username, password: PASSWORD, device_name: 'test script' });
  return { username, user_id: u.user_id, token: s.token };
}

/**
 * A browser context (a browser profile: one device) with one page on the app, failing the test
 * on any uncaught error or console error (CSP violations included).
 * @param {import('playwright-core').Browser} browser
 * @param {{url: string}} srv the server, or a proxy in front of it
 * @param {{viewport?: {width: number, height: number}, colorScheme?: 'light' | 'dark', mobile?: boolean, clock?: boolean,
 *   serviceWorkers?: boolean, notifications?: boolean, init?: () => void}} [opts]
 *   `clock`: install Playwright's controllable clock (time still flows until fast-forwarded);
 *   `serviceWorkers`: let the app register its service worker (blocked otherwise);
 *   `notifications`: notifications allowed, as if the user had said yes;
 *   `init`: a script run in every page before the app's (to stand in for a browser API)
 */
export async function openApp(browser, srv, opts = {}) {
  const context = await browser.newContext({
    viewport: opts.viewport ?? DESKTOP,
    colorScheme: opts.colorScheme ?? 'light',
    isMobile: !!opts.mobile,
    hasTouch: !!opts.mobile,
    deviceScaleFactor: opts.mobile ? 2 : 1,
    locale: 'en-GB',
    timezoneId: 'Europe/Berlin',
    serviceWorkers: opts.serviceWorkers ? 'allow' : 'block',
  });
  context.setDefaultTimeout(T);
  if (opts.clock) await context.clock.install();
  if (opts.notifications) await context.grantPermissions(['notifications'], { origin: srv.url });
  if (opts.init) await context.addInitScript(opts.init);
  /** @type {string[]} */
  const errors = [];
  const page = await context.newPage();
  watchErrors(page, errors);
  context.on('page', (p) => watchErrors(p, errors));
  await page.goto(srv.url);
  return { context, page, errors };
}

/** @param {import('playwright-core').Page} page @param {string[]} errors */
function watchErrors(page, errors) {
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    // A refused WebSocket or fetch while the test holds the network down is expected.
    if (/ERR_INTERNET_DISCONNECTED|WebSocket connection to .* failed|Failed to load resource/u.test(text)) return;
    // Chromium's own note when a page subscribes to push in an incognito profile (every browser
    // context here is one): the app's subscription fails, and it handles that.
    if (/does not support the Push API in incognito mode/u.test(text)) return;
    errors.push(`console: ${text}`);
  });
}

/**
 * Signs up through the sign-in screen and waits for the app.
 * @param {import('playwright-core').Page} page @param {string} username
 */
export async function signUp(page, username) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('button', { name: 'New chat' }).waitFor();
}

/** @param {import('playwright-core').Page} page @param {string} username */
export async function signIn(page, username) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'New chat' }).waitFor();
}

/** Opens (or creates) the direct chat with `username` through "New chat". @param {import('playwright-core').Page} page @param {string} username */
export async function startChat(page, username) {
  await page.getByRole('button', { name: 'New chat' }).click();
  await page.getByLabel('Find user').fill(username);
  await page.getByRole('button', { name: 'Start chat' }).click();
  await page.getByRole('heading', { name: username, exact: true }).waitFor();
}

/** The row of a conversation in the list. @param {import('playwright-core').Page} page @param {string} title */
export function conversation(page, title) {
  return page
    .getByRole('list', { name: 'Conversations' })
    .getByRole('listitem')
    .filter({ has: page.locator('.conv-title', { hasText: new RegExp(`^${escape(title)}$`, 'u') }) });
}

/**
 * The items of the message list whose own text (not a quoted reply) holds `text`: messages and
 * system lines ("alice added bob").
 * @param {import('playwright-core').Page} page @param {string | RegExp} text
 */
export function message(page, text) {
  return page
    .getByRole('region', { name: 'Messages' })
    .getByRole('listitem')
    .filter({ has: page.locator('.msg-body .text, .system-text', { hasText: text }) });
}

/** Types a message into the composer and presses Enter. @param {import('playwright-core').Page} page @param {string} text */
export async function send(page, text) {
  const box = page.getByRole('textbox', { name: 'Message' });
  await box.fill(text);
  await box.press('Enter');
}

/** @param {string} s */
export function escape(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/gu, '\\$&');
}

/**
 * Polls `fn` until it returns something truthy; fails with `what` and the last value after
 * `timeout`.
 * @template T
 * @param {() => Promise<T> | T} fn
 * @param {string} what
 * @param {number} [timeout]
 * @returns {Promise<T>}
 */
export async function until(fn, what, timeout = T) {
  const deadline = Date.now() + timeout;
  /** @type {unknown} */
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Checks that `fn` stays truthy for `ms`: for what must not happen (a negative needs a window).
 * @param {() => Promise<unknown> | unknown} fn @param {number} ms @param {string} what
 */
export async function holds(fn, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!(await fn())) throw new Error(`no longer true: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the locator matches exactly `n` elements. @param {import('playwright-core').Locator} locator @param {number} n @param {string} what */
export async function count(locator, n, what) {
  await until(async () => (await locator.count()) === n, `${what}: ${n} element(s)`);
}

/** The accessible status of an own message ("Sending", "Sent", "Delivered", "Read"). @param {import('playwright-core').Locator} item @param {string} status */
export async function status(item, status) {
  await item.getByRole('img', { name: status, exact: true }).waitFor();
}

/** Saves a screenshot under SCREENSHOTS. @param {import('playwright-core').Page} page @param {string} name */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), animations: 'disabled', caret: 'hide' });
}

/** Checks nothing went wrong in a page. @param {string[]} errors */
export function noErrors(errors) {
  if (errors.length) throw new Error(`errors in the page:\n${errors.join('\n')}`);
}

/**
 * A TCP proxy in front of a server, to make a network that fails the way real ones do: `freeze`
 * makes every WebSocket open through it go silent in both directions without closing (no FIN, no
 * RST: a lost Wi-Fi or a NAT that forgot the flow); new connections work.
 * @param {Server} srv
 */
export async function proxy(srv) {
  const target = new URL(srv.url);
  /** @type {Set<{client: import('node:net').Socket, upstream: import('node:net').Socket, ws: boolean}>} */
  const pairs = new Set();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    const pair = { client, upstream, ws: false };
    pairs.add(pair);
    client.once('data', (first) => {
      pair.ws = /^GET \/v1\/ws[ ?]/u.test(first.toString('latin1'));
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
  return {
    url: `http://127.0.0.1:${port}`,
    /** Silences every open WebSocket; returns how many. */
    freeze() {
      let n = 0;
      for (const p of pairs) {
        if (!p.ws) continue;
        p.client.unpipe(p.upstream);
        p.upstream.unpipe(p.client);
        // Keep reading so nothing pushes back, and drop it all on the floor.
        p.client.on('data', () => {});
        p.upstream.on('data', () => {});
        p.ws = false;
        n++;
      }
      return n;
    },
    async close() {
      for (const p of pairs) {
        p.client.destroy();
        p.upstream.destroy();
      }
      await new Promise((r) => server.close(() => r(undefined)));
    },
  };
}
