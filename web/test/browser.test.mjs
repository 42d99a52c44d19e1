// Browser tests of the web client: real Chromium (one shared instance), real `parley serve`
// processes (one per test), users in separate browser contexts. Every wait is on visible state
// with a deadline; nothing sleeps to let things settle.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import {
  DESKTOP,
  PHONE,
  conversation,
  count,
  holds,
  launchBrowser,
  message,
  noErrors,
  openApp,
  proxy,
  rest,
  restUser,
  screenshot,
  send,
  signIn,
  signUp,
  startChat,
  startServer,
  status,
  until,
} from './harness.mjs';

/** @type {import('playwright-core').Browser} */
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * Runs `fn` with a fresh server; kills it and closes the test's contexts afterwards.
 * @param {import('node:test').TestContext} t
 * @param {string[]} flags
 */
async function server(t, flags = []) {
  const srv = await startServer(flags);
  t.after(() => srv.stop());
  return srv;
}

/**
 * A user in a browser context of their own, signed up through the UI.
 * @param {import('node:test').TestContext} t
 * @param {Awaited<ReturnType<typeof startServer>>} srv
 * @param {string} name
 * @param {Parameters<typeof openApp>[2]} [opts]
 */
async function user(t, srv, name, opts) {
  const app = await openApp(browser, srv, opts);
  t.after(() => app.context.close());
  await signUp(app.page, name);
  return app;
}

/** The signed-in session of a page: its user id, and its token for REST as that device. @param {import('playwright-core').Page} page */
async function sessionOf(page) {
  return /** @type {{user_id: string, token: string}} */ (await page.evaluate(() => JSON.parse(localStorage.getItem('parley.session') || '{}')));
}

/**
 * A conversation made over REST by `by`, with the browser user in it; its id.
 * @param {Awaited<ReturnType<typeof startServer>>} srv @param {{token: string}} by @param {object} body
 */
async function restConversation(srv, by, body) {
  return /** @type {string} */ ((await rest(srv, 'POST', '/v1/conversations', body, by.token)).conversation.conversation_id);
}

const HOUR_MS = 3_600_000;

/** @type {Uint32Array | null} */
let crcTable = null;
/** @param {Buffer} buf */
function crc32(buf) {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * A PNG (RGB, 8 bits) of `width` × `height`: a sky-to-sea gradient with a sun, so its thumbnail
 * and blurhash have something to show.
 * @param {number} width @param {number} height
 */
function png(width, height) {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    raw[row] = 0;
    for (let x = 0; x < width; x++) {
      const sun = (x - width * 0.65) ** 2 + (y - height * 0.4) ** 2 < (height * 0.12) ** 2;
      const sea = y > height * 0.6;
      const p = row + 1 + x * 3;
      raw[p] = sun ? 255 : sea ? 20 : 250 - Math.round((y / height) * 120);
      raw[p + 1] = sun ? 210 : sea ? 60 + Math.round((x / width) * 40) : 120 - Math.round((y / height) * 60);
      raw[p + 2] = sun ? 80 : sea ? 140 : 90 + Math.round((y / height) * 100);
    }
  }
  /** @param {string} type @param {Buffer} data */
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Deterministic bytes that do not compress. @param {number} n @param {number} [seed] */
function noise(n, seed = 1) {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A DataTransfer holding one file, in the page, for a paste or a drop.
 * @param {import('playwright-core').Page} page @param {Buffer} bytes @param {string} name @param {string} type
 */
function dataTransfer(page, bytes, name, type) {
  return page.evaluateHandle(
    ([b64, name, type]) => {
      const dt = new DataTransfer();
      dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, { type }));
      return dt;
    },
    [bytes.toString('base64'), name, type],
  );
}

/** The media messages of a conversation on the server, oldest first. @param {Awaited<ReturnType<typeof startServer>>} srv @param {string} conv @param {string} token */
async function mediaOnServer(srv, conv, token) {
  const page = await rest(srv, 'GET', `/v1/conversations/${conv}/messages?limit=200`, undefined, token);
  return /** @type {any[]} */ (page.messages).filter((m) => m.kind === 'media');
}

/** The items of the message list showing a picture. @param {import('playwright-core').Page} page */
function photos(page) {
  return page.getByRole('region', { name: 'Messages' }).locator('.msg').filter({ has: page.getByRole('button', { name: 'Open photo' }) });
}

/** Waits until a picture has loaded and returns its natural width. @param {import('playwright-core').Locator} img @param {string} what */
function loadedWidth(img, what) {
  return until(() => img.evaluate((el) => (/** @type {HTMLImageElement} */ (el).complete ? /** @type {HTMLImageElement} */ (el).naturalWidth : 0)), what);
}

/**
 * Stands in for the browser's push service, which headless Chromium does not have (run in the
 * page before the app): a subscription gets a loopback endpoint and a real P-256 key, and
 * unsubscribing is counted in `window.__unsubscribed`.
 */
function fakePushService() {
  const W = /** @type {any} */ (window);
  /** @type {any} */
  let current = null;
  /** @param {ArrayBuffer} bytes */
  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/gu, '-').replace(/\//gu, '_').replace(/=+$/u, '');
  const proto = /** @type {any} */ (PushManager.prototype);
  proto.getSubscription = async () => current;
  proto.subscribe = async (/** @type {PushSubscriptionOptionsInit} */ options) => {
    const pair = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
    const p256dh = b64url(await crypto.subtle.exportKey('raw', pair.publicKey));
    const auth = b64url(crypto.getRandomValues(new Uint8Array(16)).buffer);
    const endpoint = `http://127.0.0.1:9/push/${crypto.randomUUID()}`;
    const key = /** @type {Uint8Array} */ (options.applicationServerKey);
    current = {
      endpoint,
      options: { userVisibleOnly: true, applicationServerKey: key.slice().buffer },
      toJSON: () => ({ endpoint, expirationTime: null, keys: { p256dh, auth } }),
      unsubscribe: async () => {
        current = null;
        W.__unsubscribed = (W.__unsubscribed || 0) + 1;
        return true;
      },
    };
    return current;
  };
}

describe('web client', { concurrency: 4 }, () => {
  test('two people chat: ticks go to Read, replies, edits, reactions, deletes', async (t) => {
    const srv = await server(t);
    const [alice, bob] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob')]);

    await startChat(alice.page, 'bob');
    await send(alice.page, 'Hello Bob');
    const hello = message(alice.page, 'Hello Bob');
    // Bob is online but has not opened the chat: his device has it, he has not read it.
    await status(hello, 'Delivered');
    const row = conversation(bob.page, 'alice');
    await row.getByText('Hello Bob').waitFor();
    await row.getByLabel('1 unread message').waitFor();

    await row.click();
    await message(bob.page, 'Hello Bob').waitFor();
    await status(hello, 'Read');
    await row.getByLabel(/unread/u).waitFor({ state: 'detached' });

    // Bob replies to it through the message menu.
    await message(bob.page, 'Hello Bob').hover();
    await message(bob.page, 'Hello Bob').getByRole('button', { name: 'Message actions' }).click();
    await bob.page.getByRole('menuitem', { name: 'Reply' }).click();
    await send(bob.page, 'Hi Alice');
    const reply = message(alice.page, 'Hi Alice');
    await reply.getByRole('button', { name: /^Reply to You: Hello Bob/u }).waitFor();
    // Bob's own message: Alice has the chat open, so it is read.
    await status(message(bob.page, 'Hi Alice'), 'Read');

    // Alice edits hers; Bob sees the new text, marked edited.
    await hello.hover();
    await hello.getByRole('button', { name: 'Message actions' }).click();
    await alice.page.getByRole('menuitem', { name: 'Edit' }).click();
    const box = alice.page.getByRole('textbox', { name: 'Message' });
    assert.equal(await box.inputValue(), 'Hello Bob');
    await box.fill('Hello Bob, how are you?');
    await box.press('Enter');
    const edited = message(bob.page, 'Hello Bob, how are you?');
    await edited.getByText('edited').waitFor();

    // Bob reacts; Alice sees it.
    await edited.hover();
    await edited.getByRole('button', { name: 'Message actions' }).click();
    await screenshot(bob.page, 'desktop-message-menu');
    await bob.page.getByRole('button', { name: 'React with 👍' }).click();
    await message(alice.page, 'Hello Bob, how are you?').getByRole('button', { name: /^👍 1/u }).waitFor();

    // Shift+Enter adds a line, Enter sends: one message of two lines.
    const composer = alice.page.getByRole('textbox', { name: 'Message' });
    await composer.pressSequentially('line one');
    await composer.press('Shift+Enter');
    await composer.pressSequentially('line two');
    await composer.press('Enter');
    const twoLines = message(bob.page, 'line one');
    await twoLines.waitFor();
    assert.equal(await twoLines.locator('.text').innerText(), 'line one\nline two');

    // Text is text: markup from a user is shown, never run.
    const evil = '<img src=x onerror="window.__pwned=1"><b>bold?</b>';
    await send(alice.page, evil);
    await message(bob.page, evil).waitFor();
    assert.equal(await bob.page.evaluate(() => /** @type {any} */ (window).__pwned), undefined);
    assert.equal(await message(bob.page, evil).locator('img, b').count(), 0);

    // Alice deletes her first message: it is gone for both.
    const mine = message(alice.page, 'Hello Bob, how are you?');
    await mine.hover();
    await mine.getByRole('button', { name: 'Message actions' }).click();
    await alice.page.getByRole('menuitem', { name: 'Delete' }).click();
    await alice.page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await message(bob.page, 'This message was deleted').waitFor();
    await message(alice.page, 'You deleted this message').waitFor();
    await count(message(bob.page, 'Hello Bob, how are you?'), 0, 'the deleted text');
    // The reply keeps pointing at it, now as deleted.
    await message(bob.page, 'Hi Alice').getByRole('button', { name: /Deleted message/u }).waitFor();

    noErrors(alice.errors);
    noErrors(bob.errors);
  });

  test('typing indicator and presence, online and last seen', async (t) => {
    const srv = await server(t, ['--presence-grace-ms', '200', '--typing-interval-ms', '200']);
    const [alice, bob] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob')]);
    await startChat(alice.page, 'bob');
    await conversation(bob.page, 'alice').click();
    const bobHeader = bob.page.locator('.chat-header');
    await bobHeader.getByText('online', { exact: true }).waitFor();
    // The list shows Alice's online dot.
    await conversation(bob.page, 'alice').getByRole('img', { name: 'Online' }).waitFor();

    // Alice types: Bob sees it in the header and the list; she clears the field: it goes.
    await alice.page.getByRole('textbox', { name: 'Message' }).pressSequentially('Are you th');
    await bobHeader.getByText('typing…').waitFor();
    await conversation(bob.page, 'alice').getByText('typing…').waitFor();
    await alice.page.getByRole('textbox', { name: 'Message' }).fill('');
    await bobHeader.getByText('typing…').waitFor({ state: 'detached' });
    await bobHeader.getByText('online', { exact: true }).waitFor();

    // Typing then sending: the message ends it.
    await alice.page.getByRole('textbox', { name: 'Message' }).pressSequentially('Are you there?');
    await bobHeader.getByText('typing…').waitFor();
    await alice.page.getByRole('textbox', { name: 'Message' }).press('Enter');
    await message(bob.page, 'Are you there?').waitFor();
    await bobHeader.getByText('typing…').waitFor({ state: 'detached' });

    // Alice goes away (her only device closes): Bob sees her last seen, and no dot.
    await alice.context.close();
    await bobHeader.getByText(/^last seen (just now|\d+ minutes? ago)$/u).waitFor();
    await conversation(bob.page, 'alice').getByRole('img', { name: 'Online' }).waitFor({ state: 'detached' });

    // She comes back on another device: online again.
    const again = await openApp(browser, srv);
    t.after(() => again.context.close());
    await signIn(again.page, 'alice');
    await bobHeader.getByText('online', { exact: true }).waitFor();
    noErrors(bob.errors);
    noErrors(again.errors);
  });

  test('a group of three: create, talk, rename, promote, remove, leave', async (t) => {
    const srv = await server(t);
    const [alice, bob, carol] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob'), user(t, srv, 'carol')]);

    await alice.page.getByRole('button', { name: 'New group' }).click();
    await alice.page.getByLabel('Group name').fill('Weekend');
    await alice.page.getByLabel('Members').fill('bob, carol');
    await alice.page.getByRole('button', { name: 'Create group' }).click();
    await alice.page.getByRole('heading', { name: 'Weekend' }).waitFor();
    await alice.page.locator('.chat-header').getByText('3 members').waitFor();

    await send(alice.page, 'Who is in for Saturday?');
    for (const p of [bob.page, carol.page]) {
      await conversation(p, 'Weekend').getByText('alice: Who is in for Saturday?').waitFor();
      await conversation(p, 'Weekend').click();
      await message(p, 'Who is in for Saturday?').getByText('alice', { exact: true }).waitFor();
    }
    // Read by both others: Read.
    await status(message(alice.page, 'Who is in for Saturday?'), 'Read');

    await send(bob.page, 'Me!');
    await message(alice.page, 'Me!').getByText('bob', { exact: true }).waitFor();
    await message(carol.page, 'Me!').waitFor();

    // Alice, the admin, renames the group; everyone sees it.
    await alice.page.getByRole('button', { name: 'Group info' }).click();
    const info = alice.page.getByRole('complementary', { name: 'Group info' });
    await info.getByLabel('Group name').fill('Weekend trip');
    await info.getByRole('button', { name: 'Rename' }).click();
    await bob.page.getByRole('heading', { name: 'Weekend trip' }).waitFor();
    await message(carol.page, 'alice renamed the group to “Weekend trip”').waitFor();
    await conversation(carol.page, 'Weekend trip').waitFor();

    // Bob becomes an admin.
    const members = info.getByRole('list', { name: 'Members' });
    await members.getByRole('listitem').filter({ hasText: 'bob' }).getByRole('button', { name: 'Options for bob' }).click();
    await alice.page.getByRole('menuitem', { name: 'Make admin' }).click();
    await members.getByRole('listitem').filter({ hasText: 'bob' }).getByText('Admin', { exact: true }).waitFor();
    await message(bob.page, 'alice made you an admin').waitFor();
    await message(carol.page, 'alice made bob an admin').waitFor();
    await screenshot(alice.page, 'desktop-group-admin');

    // Carol is removed: her composer gives way to a notice.
    await members.getByRole('button', { name: 'Options for carol' }).click();
    await alice.page.getByRole('menuitem', { name: 'Remove from group' }).click();
    await alice.page.getByRole('dialog').getByRole('button', { name: 'Remove' }).click();
    await carol.page.getByText('You are no longer a member of this group.').waitFor();
    await members.getByRole('listitem').filter({ hasText: 'carol' }).waitFor({ state: 'detached' });
    await message(bob.page, 'alice removed carol').waitFor();
    await message(carol.page, 'alice removed you').waitFor();

    // And added back: her composer returns.
    await info.getByLabel('Add members').fill('carol');
    await info.getByRole('button', { name: 'Add', exact: true }).click();
    await members.getByRole('listitem').filter({ hasText: 'carol' }).waitFor();
    await message(carol.page, 'alice added you').waitFor();
    await carol.page.getByRole('textbox', { name: 'Message' }).waitFor();
    await send(carol.page, 'Back again');
    await message(alice.page, 'Back again').waitFor();

    // Bob leaves: the group leaves his list, Alice sees him go.
    await bob.page.getByRole('button', { name: 'Group info' }).click();
    await bob.page.getByRole('button', { name: 'Leave group' }).click();
    await bob.page.getByRole('dialog').getByRole('button', { name: 'Leave' }).click();
    await conversation(bob.page, 'Weekend trip').waitFor({ state: 'detached' });
    await message(alice.page, 'bob left').waitFor();
    await info.getByText('2 members', { exact: true }).first().waitFor();

    for (const u of [alice, bob, carol]) noErrors(u.errors);
  });

  test('offline: the banner shows, queued messages arrive exactly once on reconnect', async (t) => {
    const srv = await server(t);
    const [alice, bob] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob')]);
    await startChat(alice.page, 'bob');
    await send(alice.page, 'before');
    await conversation(bob.page, 'alice').click();
    await status(message(alice.page, 'before'), 'Read');

    await alice.context.setOffline(true);
    const banner = alice.page.getByRole('status').filter({ hasText: /offline|Not connected/u });
    await banner.waitFor();
    // The composer keeps working; what is written waits with a pending mark.
    await send(alice.page, 'queued one');
    await send(alice.page, 'queued two');
    await status(message(alice.page, 'queued one'), 'Sending');
    await status(message(alice.page, 'queued two'), 'Sending');
    await banner.getByText('2 messages will be sent when you reconnect').waitFor();
    await screenshot(alice.page, 'desktop-offline');
    // Kept in local storage, with their client ids.
    const stored = await alice.page.evaluate(() =>
      Object.keys(localStorage)
        .filter((k) => k.startsWith('parley.outbox.'))
        .flatMap((k) => JSON.parse(localStorage.getItem(k) || '[]')),
    );
    assert.deepEqual(
      stored.map((/** @type {any} */ i) => i.body.text),
      ['queued one', 'queued two'],
    );

    await alice.context.setOffline(false);
    await banner.waitFor({ state: 'detached' });
    await status(message(alice.page, 'queued two'), 'Read');
    await status(message(alice.page, 'queued one'), 'Read');
    // A message after them is a barrier: anything duplicated would be there by now.
    await send(alice.page, 'after');
    await message(bob.page, 'after').waitFor();
    await count(message(bob.page, 'queued one'), 1, 'Bob has "queued one" once');
    await count(message(bob.page, 'queued two'), 1, 'Bob has "queued two" once');
    const order = await bob.page.getByRole('region', { name: 'Messages' }).locator('.msg .text').allTextContents();
    assert.deepEqual(order, ['before', 'queued one', 'queued two', 'after']);

    // Written offline, tab closed, opened again online: still sent, once.
    await alice.context.setOffline(true);
    await banner.waitFor();
    await send(alice.page, 'written before closing');
    await status(message(alice.page, 'written before closing'), 'Sending');
    await alice.page.close();
    await alice.context.setOffline(false);
    const page2 = await alice.context.newPage();
    await page2.goto(srv.url);
    await message(bob.page, 'written before closing').waitFor();
    await conversation(page2, 'bob').click();
    await status(message(page2, 'written before closing'), 'Read');

    // The server holds each message once too: a reload of Bob's view shows the history.
    await bob.page.reload();
    await message(bob.page, 'written before closing').waitFor();
    for (const text of ['queued one', 'queued two', 'written before closing']) {
      await count(message(bob.page, text), 1, `Bob has "${text}" once after a reload`);
    }
    noErrors(alice.errors);
    noErrors(bob.errors);
  });

  test('a socket that goes silent is found dead by ping timeout; the client reconnects and resyncs', async (t) => {
    const srv = await server(t);
    const net = await proxy(srv);
    t.after(() => net.close());
    const alice = await user(t, srv, 'alice');
    // Bob reaches the server through a network that can fail silently, with a clock the test
    // can move (so the ping and its timeout need not take half a minute).
    const bob = await openApp(browser, net, { clock: true });
    t.after(() => bob.context.close());
    await signUp(bob.page, 'bob');
    await startChat(alice.page, 'bob');
    await send(alice.page, 'one');
    await conversation(bob.page, 'alice').click();
    await status(message(alice.page, 'one'), 'Read');

    // The network drops Bob's socket on the floor: no close, no offline event.
    assert.equal(net.freeze(), 1, 'one WebSocket through the proxy');
    await send(alice.page, 'two');
    await status(message(alice.page, 'two'), 'Sent');
    await send(bob.page, 'written into the void');
    // Half a minute of silence: Bob's client pings; the pong never comes; it gives up on the
    // socket, reconnects (backoff), replays its backlog and resends what it wrote.
    await bob.page.clock.fastForward(30_000);
    await bob.page.clock.fastForward(10_000);
    await message(bob.page, 'two').waitFor();
    await message(alice.page, 'written into the void').waitFor();
    await status(message(alice.page, 'two'), 'Read');
    await status(message(bob.page, 'written into the void'), 'Read');
    await count(message(alice.page, 'written into the void'), 1, 'sent once');
    noErrors(alice.errors);
    noErrors(bob.errors);
  });

  test('a reload keeps the session, the open chat and the history; sign out ends it', async (t) => {
    const srv = await server(t);
    const bob = await restUser(srv, 'bob');
    const alice = await user(t, srv, 'alice');
    const me = await alice.page.evaluate(() => JSON.parse(localStorage.getItem('parley.session') || '{}'));
    const conv = await rest(srv, 'POST', '/v1/conversations', { kind: 'direct', user_id: me.user_id }, bob.token);
    const id = conv.conversation.conversation_id;
    for (let i = 1; i <= 120; i++) {
      await rest(srv, 'POST', `/v1/conversations/${id}/messages`, { client_id: `c${i}`, kind: 'text', body: { text: `Message number ${i}` } }, bob.token);
    }
    const row = conversation(alice.page, 'bob');
    await row.getByLabel('120 unread messages').waitFor();
    await row.click();

    // The chat opens at the first unread, under the "new messages" divider.
    const region = alice.page.getByRole('region', { name: 'Messages' });
    await region.getByRole('separator').filter({ hasText: 'New messages' }).waitFor();
    await message(alice.page, /^Message number 1\b/u).first().waitFor();
    // Scrolling down reads them all.
    await until(async () => {
      await region.evaluate((el) => el.scrollTo({ top: el.scrollHeight }));
      return (await row.getByLabel(/unread/u).count()) === 0;
    }, 'everything read after scrolling down');
    const read = await rest(srv, 'GET', `/v1/conversations/${id}`, undefined, bob.token);
    await until(async () => {
      const c = await rest(srv, 'GET', `/v1/conversations/${id}`, undefined, bob.token);
      return c.conversation.members.find((/** @type {any} */ m) => m.user_id === me.user_id).read_seq === c.conversation.last_seq;
    }, 'Alice has read to the end, on the server');
    void read;

    // A reload: still signed in, same chat, newest messages; older ones load on scrolling up.
    await alice.page.reload();
    await alice.page.getByRole('heading', { name: 'bob', exact: true }).waitFor();
    await message(alice.page, 'Message number 120').waitFor();
    assert.equal(await message(alice.page, /^Message number 2\b/u).count(), 0, 'only the newest page is loaded at first');
    await until(async () => {
      await region.evaluate((el) => el.scrollTo({ top: 0 }));
      return (await message(alice.page, /^Message number 2\b/u).count()) === 1;
    }, 'older history loaded by scrolling up');
    await region.getByText('This is the start of your conversation.').waitFor();
    await count(region.locator('.msg'), 120, 'every message once');

    // Sign out: back to the sign-in screen, and a reload stays there.
    await alice.page.getByRole('button', { name: 'Menu' }).click();
    await alice.page.getByRole('menuitem', { name: 'Sign out' }).click();
    await alice.page.getByRole('button', { name: 'Sign in' }).waitFor();
    await alice.page.reload();
    await alice.page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.equal(await alice.page.evaluate(() => localStorage.getItem('parley.session')), null);
    // A wrong password is refused; the right one signs in again (a new device).
    await alice.page.getByLabel('Username').fill('alice');
    await alice.page.getByLabel('Password').fill('not the password');
    await alice.page.getByRole('button', { name: 'Sign in' }).click();
    await alice.page.getByRole('alert').filter({ hasText: 'Wrong username or password.' }).waitFor();
    await signIn(alice.page, 'alice');
    await conversation(alice.page, 'bob').waitFor();

    // A second tab is the same device: it is signed in too, and each tab sees what the other sends
    // (the server does not echo a device's own sends back to it).
    const tab2 = await alice.context.newPage();
    await tab2.goto(srv.url);
    await conversation(tab2, 'bob').click();
    await conversation(alice.page, 'bob').click();
    await send(alice.page, 'sent from the first tab');
    await message(tab2, 'sent from the first tab').waitFor();
    await status(message(tab2, 'sent from the first tab'), 'Sent');
    await send(tab2, 'and from the second');
    await message(alice.page, 'and from the second').waitFor();
    noErrors(alice.errors);
  });

  test('a notification for a message that arrives while the tab is hidden; read waits for visibility', async (t) => {
    const srv = await server(t);
    const [alice, bob] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob')]);
    await startChat(alice.page, 'bob');
    await send(alice.page, 'hi');
    await conversation(bob.page, 'alice').click();
    await status(message(alice.page, 'hi'), 'Read');

    // Alice's tab goes to the background (a stub records notifications).
    await alice.page.evaluate(() => {
      const W = /** @type {any} */ (window);
      W.__notes = [];
      W.Notification = class {
        static permission = 'granted';
        static requestPermission() {
          return Promise.resolve('granted');
        }
        /** @param {string} title @param {NotificationOptions} opts */
        constructor(title, opts) {
          W.__notes.push({ title, body: opts.body });
        }
        close() {}
      };
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await send(bob.page, 'are you there?');
    const notes = await until(
      async () => {
        const n = await alice.page.evaluate(() => /** @type {any} */ (window).__notes);
        return n.length ? n : null;
      },
      'a notification',
    );
    assert.deepEqual(notes, [{ title: 'bob', body: 'are you there?' }]);
    // Delivered to her device, but not read while the tab is hidden.
    await status(message(bob.page, 'are you there?'), 'Delivered');
    await send(bob.page, 'hello?');
    await until(async () => (await alice.page.evaluate(() => /** @type {any} */ (window).__notes.length)) === 2, 'a second notification');
    await status(message(bob.page, 'hello?'), 'Delivered');
    await holds(
      async () => (await bob.page.getByRole('region', { name: 'Messages' }).getByRole('img', { name: 'Read' }).count()) === 0,
      1_500,
      'nothing Bob sends is read while Alice is away',
    );

    // Back to the tab: both become read.
    await alice.page.evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'visible' });
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => false });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await status(message(bob.page, 'hello?'), 'Read');
    await status(message(bob.page, 'are you there?'), 'Read');
    noErrors(alice.errors);
    noErrors(bob.errors);
  });

  test('a push shows "New message" with names from the client\'s own cache, not the payload; a click opens the chat', async (t) => {
    const srv = await server(t);
    const [bob, carol] = await Promise.all([restUser(srv, 'bob'), restUser(srv, 'carol')]);
    const alice = await openApp(browser, srv, { serviceWorkers: true, notifications: true });
    t.after(() => alice.context.close());
    await signUp(alice.page, 'alice');
    const me = await sessionOf(alice.page);
    const group = await restConversation(srv, bob, { kind: 'group', title: 'Climbing crew', member_ids: [me.user_id, carol.user_id] });
    const direct = await restConversation(srv, bob, { kind: 'direct', user_id: me.user_id });
    await conversation(alice.page, 'Climbing crew').waitFor();
    await conversation(alice.page, 'bob').waitFor();

    // Headless Chromium has no push service: subscribing fails, quietly, and the settings say so.
    await alice.page.getByRole('button', { name: 'Menu' }).click();
    await alice.page.getByRole('menuitem', { name: 'Notifications' }).click();
    const settings = alice.page.getByRole('dialog', { name: 'Notifications' });
    await settings.getByRole('status').filter({ hasText: /^Only while Parley is open\. This browser has no push service/u }).waitFor();
    await settings.getByRole('button', { name: 'Try again' }).waitFor();
    await settings.getByRole('button', { name: 'Done' }).click();

    // The page keeps what a notification may say where the worker reads it.
    await until(
      () =>
        alice.page.evaluate(async () => {
          const cached = await caches.match('/parley-notify/state');
          const text = cached ? await cached.text() : '';
          return text.includes('"title":"Climbing crew"') && text.includes('"title":"bob"');
        }),
      'the names cached for the service worker',
    );

    // Pushes go straight to the worker through DevTools, as a push service would bring them.
    const cdp = await alice.context.newCDPSession(alice.page);
    /** @type {string | null} */
    let registrationId = null;
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const live = registrations.find((r) => !r.isDeleted && r.scopeURL === `${srv.url}/`);
      if (live) registrationId = live.registrationId;
    });
    await cdp.send('ServiceWorker.enable');
    const registration = /** @type {string} */ (await until(() => registrationId, 'the service worker registration'));
    /** @param {object | string} payload */
    const push = (payload) =>
      cdp.send('ServiceWorker.deliverPushMessage', {
        origin: srv.url,
        registrationId: registration,
        data: typeof payload === 'string' ? payload : JSON.stringify(payload),
      });
    // What the browser shows and closes, as DevTools records it (the tag is the instance id): a
    // notification is waited for there, and only once it is on screen is `getNotifications()`
    // asked about it. Never while the worker may be showing one: in Chromium, a
    // `getNotifications()` that runs while a notification is stored but not yet on screen drops
    // that notification from its records for good (it stays on screen, is never listed again, and
    // a click on it reaches no worker), so polling it during a push loses a notification now and
    // then.
    /** @typedef {{title: string, body: string, tag: string}} Shown */
    /** @type {Shown[]} */
    const displayed = [];
    /** @type {string[]} */
    const closed = [];
    cdp.on('BackgroundService.backgroundServiceEventReceived', ({ backgroundServiceEvent: e }) => {
      if (e.service !== 'notifications') return;
      if (e.eventName === 'Notification closed') closed.push(e.instanceId);
      if (e.eventName !== 'Notification displayed') return;
      const meta = Object.fromEntries(e.eventMetadata.map((m) => [m.key, m.value]));
      displayed.push({ title: meta.Title, body: meta.Body, tag: e.instanceId });
    });
    await cdp.send('BackgroundService.setRecording', { service: 'notifications', shouldRecord: true });
    await cdp.send('BackgroundService.startObserving', { service: 'notifications' });
    /** @returns {Promise<Shown[]>} */
    const shown = () =>
      alice.page.evaluate(async () =>
        (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({ title: n.title, body: n.body, tag: n.tag })),
      );
    let seen = 0;
    /**
     * The next notification shown is `want`, and then the only one `getNotifications()` lists with
     * its tag (a newer one for a conversation replaces the older).
     * @param {Shown} want
     */
    const next = async (want) => {
      const got = await until(() => displayed[seen], `a notification shown, tagged ${want.tag}`);
      seen++;
      assert.deepEqual(got, want);
      assert.deepEqual((await shown()).filter((n) => n.tag === want.tag), [want]);
    };

    await push({ v: 1, type: 'message', conversation_id: group, seq: 2, unread_count: 1 });
    await next({ title: 'New message', body: 'Climbing crew', tag: group });
    await push({ v: 1, type: 'message', conversation_id: direct, seq: 2, unread_count: 3 });
    await next({ title: 'New message', body: 'bob\n3 unread messages', tag: direct });
    // What it cannot read still says something came.
    await push('not json');
    await next({ title: 'New message', body: '', tag: 'parley' });
    // One notification per conversation: a newer push replaces the group's.
    await push({ v: 1, type: 'message', conversation_id: group, seq: 3, unread_count: 2 });
    await next({ title: 'New message', body: 'Climbing crew\n2 unread messages', tag: group });

    // With the chat with Bob on screen, a push for it shows nothing (the group's still does).
    const open = (await shown()).map((n) => n.tag).sort();
    assert.deepEqual(open, [direct, group, 'parley'].sort());
    let from = closed.length;
    await alice.page.evaluate(async () => {
      for (const n of await (await navigator.serviceWorker.ready).getNotifications()) n.close();
    });
    // Closed before the next pushes (a notification's id is its tag: a late close would take the new one).
    await until(() => open.every((tag) => closed.slice(from).includes(tag)), 'the notifications closed');
    await conversation(alice.page, 'bob').click();
    await alice.page.getByRole('heading', { name: 'bob', exact: true }).waitFor();
    await push({ v: 1, type: 'message', conversation_id: direct, seq: 3, unread_count: 1 });
    await push({ v: 1, type: 'message', conversation_id: group, seq: 4, unread_count: 3 });
    await next({ title: 'New message', body: 'Climbing crew\n3 unread messages', tag: group });
    await holds(() => displayed.length === seen, 1_000, 'no notification for the chat on screen');

    // A click on a notification opens its conversation in the open window. (Clicks on system
    // notifications cannot be automated: the test dispatches the worker's `notificationclick`.)
    const worker = await until(() => alice.context.serviceWorkers()[0], 'the service worker, in Playwright');
    from = closed.length;
    await worker.evaluate(async (tag) => {
      const scope = /** @type {any} */ (globalThis);
      const [n] = await scope.registration.getNotifications({ tag });
      scope.dispatchEvent(new scope.NotificationEvent('notificationclick', { notification: n }));
    }, group);
    await alice.page.getByRole('heading', { name: 'Climbing crew' }).waitFor();
    await until(() => closed.slice(from).includes(group), 'the clicked notification closed');
    assert.deepEqual(await shown(), []);
    noErrors(alice.errors);
  });

  test('push registration: the subscription reaches the server; sign-out takes it back first', async (t) => {
    const srv = await server(t, ['--push-allow-private-endpoints']);
    const alice = await openApp(browser, srv, { serviceWorkers: true, notifications: true, init: fakePushService });
    t.after(() => alice.context.close());
    await signUp(alice.page, 'alice');
    const me = await sessionOf(alice.page);
    const registered = await until(
      async () => (await rest(srv, 'GET', '/v1/push/status', undefined, me.token)).push,
      'the push registration on the server',
    );
    assert.equal(registered.kind, 'webpush');
    await alice.page.getByRole('button', { name: 'Menu' }).click();
    await alice.page.getByRole('menuitem', { name: 'Notifications' }).click();
    const settings = alice.page.getByRole('dialog', { name: 'Notifications' });
    await settings.getByRole('status').filter({ hasText: 'On for this browser.' }).waitFor();
    await settings.getByRole('button', { name: 'Done' }).click();

    // Signing out deletes the registration while the token still works, then unsubscribes.
    /** @type {string[]} */
    const deletes = [];
    alice.page.on('request', (r) => {
      if (r.method() === 'DELETE') deletes.push(new URL(r.url()).pathname);
    });
    await alice.page.getByRole('button', { name: 'Menu' }).click();
    await alice.page.getByRole('menuitem', { name: 'Sign out' }).click();
    await alice.page.getByRole('button', { name: 'Sign in' }).waitFor();
    assert.deepEqual(deletes, ['/v1/devices/current/push', '/v1/sessions/current']);
    await until(() => alice.page.evaluate(() => /** @type {any} */ (window).__unsubscribed === 1), 'the browser unsubscribed');
    noErrors(alice.errors);
  });

  test('notification settings: mute a chat for 8 hours, mentions only, always, unmute; do not disturb', async (t) => {
    const srv = await server(t);
    const bob = await restUser(srv, 'bob');
    const alice = await user(t, srv, 'alice');
    const me = await sessionOf(alice.page);
    const group = await restConversation(srv, bob, { kind: 'group', title: 'Book club', member_ids: [me.user_id] });
    await conversation(alice.page, 'Book club').click();
    await alice.page.getByRole('heading', { name: 'Book club' }).waitFor();
    const row = conversation(alice.page, 'Book club');
    const settingsOnServer = async () => (await rest(srv, 'GET', `/v1/conversations/${group}`, undefined, me.token)).conversation.settings;
    /** @param {string} item */
    const choose = async (item) => {
      await alice.page.getByRole('button', { name: 'Notification settings' }).click();
      await alice.page.getByRole('menuitem', { name: item }).click();
    };

    const before = Date.now();
    await choose('Mute for 8 hours');
    const muted = await until(async () => {
      const s = await settingsOnServer();
      return s.muted_until ? s : null;
    }, 'muted on the server');
    const ahead = muted.muted_until - before;
    assert.ok(Math.abs(ahead - 8 * HOUR_MS) < 60_000, `muted for about 8 hours, not ${ahead} ms`);
    assert.equal(muted.notify, 'all');
    await row.getByRole('img', { name: 'Muted' }).waitFor();

    await choose('Mentions only');
    await until(async () => {
      const s = await settingsOnServer();
      return s.notify === 'mentions' && s.muted_until === null;
    }, 'mentions only on the server');
    await row.getByRole('img', { name: 'Mentions only' }).waitFor();

    await choose('Mute always');
    await until(async () => (await settingsOnServer()).notify === 'none', 'muted for good on the server');
    await row.getByRole('img', { name: 'Muted' }).waitFor();

    await choose('Unmute');
    await until(async () => {
      const s = await settingsOnServer();
      return s.notify === 'all' && s.muted_until === null;
    }, 'unmuted on the server');
    await row.getByRole('img', { name: /^(Muted|Mentions only)$/u }).waitFor({ state: 'detached' });

    // Do not disturb, for the whole account, from the menu's notification settings.
    await alice.page.getByRole('button', { name: 'Menu' }).click();
    await alice.page.getByRole('menuitem', { name: 'Notifications' }).click();
    const dialog = alice.page.getByRole('dialog', { name: 'Notifications' });
    const clicked = Date.now();
    await dialog.getByRole('button', { name: 'For 1 hour' }).click();
    await dialog.getByRole('status').filter({ hasText: /^On until /u }).waitFor();
    const dnd = (await rest(srv, 'GET', '/v1/me', undefined, me.token)).dnd_until;
    assert.ok(Math.abs(dnd - clicked - HOUR_MS) < 60_000, `do not disturb for about an hour, not until ${dnd}`);
    await dialog.getByRole('button', { name: 'Until I turn it off' }).click();
    await dialog.getByRole('status').filter({ hasText: 'On until you turn it off.' }).waitFor();
    await dialog.getByRole('button', { name: 'Done' }).click();
    // The list's header shows it is on; it leads back to the settings, to turn it off.
    await alice.page.getByRole('button', { name: 'Do not disturb is on' }).click();
    await dialog.getByRole('button', { name: 'Turn off' }).click();
    await dialog.getByRole('status').filter({ hasText: /^Off\.$/u }).waitFor();
    assert.equal((await rest(srv, 'GET', '/v1/me', undefined, me.token)).dnd_until ?? null, null);
    await dialog.getByRole('button', { name: 'Done' }).click();
    await alice.page.getByRole('button', { name: 'Do not disturb is on' }).waitFor({ state: 'detached' });
    noErrors(alice.errors);
  });

  test('@ mentions: the composer offers members, the message carries their ids, mine are marked', async (t) => {
    const srv = await server(t);
    const [bob, carol] = await Promise.all([restUser(srv, 'bob'), restUser(srv, 'carol')]);
    const alice = await user(t, srv, 'alice');
    const me = await sessionOf(alice.page);
    const group = await restConversation(srv, bob, { kind: 'group', title: 'Trip planning', member_ids: [me.user_id, carol.user_id] });
    await conversation(alice.page, 'Trip planning').click();
    await alice.page.locator('.chat-header').getByText('3 members').waitFor();

    const box = alice.page.getByRole('textbox', { name: 'Message' });
    const offered = alice.page.getByRole('listbox', { name: 'Mention a member' });
    await box.pressSequentially('Hi @ca');
    await offered.getByRole('option', { name: '@carol' }).waitFor();
    assert.equal(await offered.getByRole('option').count(), 1, 'only Carol matches “ca”');
    await offered.getByRole('option', { name: '@carol' }).click();
    await offered.waitFor({ state: 'hidden' });
    assert.equal(await box.inputValue(), 'Hi @carol ');
    // By keyboard: Enter takes the highlighted member (and does not send).
    await box.pressSequentially('and @b');
    await offered.getByRole('option', { name: '@bob' }).waitFor();
    await box.press('Enter');
    assert.equal(await box.inputValue(), 'Hi @carol and @bob ');
    await box.pressSequentially('see you at 8');
    await box.press('Enter');
    await message(alice.page, 'see you at 8').waitFor();
    const sent = await until(async () => {
      const page = await rest(srv, 'GET', `/v1/conversations/${group}/messages?limit=50`, undefined, bob.token);
      return page.messages.find((/** @type {any} */ m) => m.kind === 'text' && m.body.text === 'Hi @carol and @bob see you at 8');
    }, 'the message on the server');
    assert.deepEqual([...sent.body.mentions].sort(), [bob.user_id, carol.user_id].sort());
    // Sent with its mentions: shown marked, for everyone.
    await message(alice.page, 'see you at 8').locator('mark.mention', { hasText: '@carol' }).waitFor();

    // Bob mentions Alice: her copy marks her name.
    const text = '@alice can you bring the map?';
    await rest(srv, 'POST', `/v1/conversations/${group}/messages`, { client_id: crypto.randomUUID(), kind: 'text', body: { text, mentions: [me.user_id] } }, bob.token);
    await message(alice.page, 'bring the map').locator('mark.mention.me', { hasText: '@alice' }).waitFor();
    noErrors(alice.errors);
  });

  test('photos: attach, the preview (blurhash, thumbnail), the full picture lazily, the viewer; a pasted screenshot', async (t) => {
    const srv = await server(t);
    const [alice, bob] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob')]);
    await startChat(alice.page, 'bob');

    // Alice attaches a photo with the attach button; it waits in the tray with its name.
    const chooser = alice.page.waitForEvent('filechooser');
    await alice.page.getByRole('button', { name: 'Attach files' }).click();
    await (await chooser).setFiles({ name: 'sunset.png', mimeType: 'image/png', buffer: png(640, 480) });
    const tray = alice.page.getByRole('list', { name: 'Attachments' });
    await tray.getByRole('listitem', { name: /^sunset\.png, / }).waitFor();
    assert.equal(await alice.page.getByRole('textbox', { name: 'Message' }).getAttribute('placeholder'), 'Add a caption');
    await screenshot(alice.page, 'desktop-composer-attachment');
    // The text becomes its caption; Enter sends both.
    await send(alice.page, 'Look at this sunset');
    await tray.waitFor({ state: 'hidden' });
    const mine = message(alice.page, 'Look at this sunset');
    await status(mine, 'Delivered');
    assert.equal(await loadedWidth(mine.locator('img.full'), 'Alice sees her own photo'), 640);

    // On the server: one media message with what the client worked out.
    const me = await sessionOf(alice.page);
    const conv = /** @type {string} */ (await alice.page.evaluate(() => decodeURIComponent(location.hash.slice(4))));
    const [sent] = await mediaOnServer(srv, conv, me.token);
    assert.equal(sent.body.content_type, 'image/png');
    assert.equal(sent.body.width, 640);
    assert.equal(sent.body.height, 480);
    assert.equal(sent.body.caption, 'Look at this sunset');
    assert.match(sent.body.blurhash, /^[0-9A-Za-z#$%*+,\-.:;=?@[\]^_{|}~]{28}$/u, 'a 4×3 blurhash');
    assert.ok(Buffer.from(sent.body.thumbnail, 'base64').length <= 8192, 'the thumbnail is at most 8 KiB');

    // Bob's list says what it is; in the chat, the blurhash and the thumbnail come first, and the
    // picture itself once it is on screen.
    const row = conversation(bob.page, 'alice');
    await row.getByText('📷 Look at this sunset').waitFor();
    await row.click();
    const theirs = message(bob.page, 'Look at this sunset');
    const tile = theirs.getByRole('button', { name: 'Open photo' });
    await tile.waitFor();
    assert.equal(await theirs.locator('canvas.blurhash').getAttribute('data-blurhash'), sent.body.blurhash);
    const thumbWidth = await loadedWidth(theirs.locator('img.thumb'), 'the thumbnail');
    assert.ok(thumbWidth > 0 && thumbWidth <= 96, `a small thumbnail, not ${thumbWidth} px`);
    assert.equal(await loadedWidth(theirs.locator('img.full'), 'the full picture'), 640);
    await screenshot(bob.page, 'desktop-chat-photo');

    // The viewer: a click opens it, Escape closes it; the close button too.
    await tile.click();
    const viewer = bob.page.getByRole('dialog', { name: 'Photo' });
    await viewer.waitFor();
    assert.equal(await loadedWidth(viewer.locator('img.viewer-img'), 'the picture in the viewer'), 640);
    await viewer.getByText('Look at this sunset').waitFor();
    await screenshot(bob.page, 'desktop-photo-viewer');
    await bob.page.keyboard.press('Escape');
    await viewer.waitFor({ state: 'detached' });
    await tile.click();
    await viewer.getByRole('button', { name: 'Close' }).click();
    await viewer.waitFor({ state: 'detached' });

    // Bob pastes a screenshot into his composer: it is attached, and goes without a caption.
    const box = bob.page.getByRole('textbox', { name: 'Message' });
    const clip = await dataTransfer(bob.page, png(320, 200), 'screenshot.png', 'image/png');
    await box.evaluate((el, dt) => el.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true })), clip);
    await bob.page.getByRole('list', { name: 'Attachments' }).getByRole('listitem', { name: /^screenshot\.png, / }).waitFor();
    await box.press('Enter');
    await count(photos(alice.page), 2, 'Alice has both photos');
    await conversation(alice.page, 'bob').getByText('📷 Photo').waitFor();
    assert.equal(await loadedWidth(photos(alice.page).nth(1).locator('img.full'), 'the pasted picture'), 320);

    // The viewer goes from one picture of the chat to the next.
    await photos(alice.page).nth(0).getByRole('button', { name: 'Open photo' }).click();
    const aliceViewer = alice.page.getByRole('dialog', { name: 'Photo' });
    assert.equal(await loadedWidth(aliceViewer.locator('img.viewer-img'), 'the first picture'), 640);
    await alice.page.keyboard.press('ArrowRight');
    assert.equal(await loadedWidth(aliceViewer.locator('img.viewer-img'), 'the next picture'), 320);
    await aliceViewer.getByRole('button', { name: 'Previous photo' }).click();
    assert.equal(await loadedWidth(aliceViewer.locator('img.viewer-img'), 'back to the first'), 640);
    await alice.page.keyboard.press('Escape');
    await aliceViewer.waitFor({ state: 'detached' });
    noErrors(alice.errors);
    noErrors(bob.errors);
  });

  test('a voice message: recorded from the (fake) microphone, sent, played with a scrubber', async (t) => {
    const srv = await server(t);
    const [alice, bob] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob')]);
    await startChat(alice.page, 'bob');

    // With nothing typed, the send button is the mic. A click records hands-free.
    await alice.page.getByRole('button', { name: 'Send', exact: true }).waitFor({ state: 'hidden' });
    await alice.page.getByRole('button', { name: 'Record voice message' }).click();
    const timer = alice.page.getByRole('timer', { name: 'Recording time' });
    await until(async () => /^0:0[2-9]$/u.test((await timer.textContent()) || ''), 'two seconds recorded');
    await alice.page.getByRole('button', { name: 'Send voice message' }).click();
    await timer.waitFor({ state: 'hidden' });

    const row = conversation(bob.page, 'alice');
    await row.getByText(/🎤 Voice message \(0:0[2-9]\)/u).waitFor();
    await row.click();
    const voice = bob.page.getByRole('group', { name: 'Voice message' });
    await voice.waitFor();
    const audio = voice.locator('audio');
    const seconds = await until(
      () => audio.evaluate((el) => { const a = /** @type {HTMLAudioElement} */ (el); return Number.isFinite(a.duration) && a.duration > 0 ? a.duration : 0; }),
      'the length of the recording',
    );
    assert.ok(seconds > 1.5 && seconds < 10, `about two seconds long, not ${seconds}`);

    // On the server: a sound without a file name, with its length.
    const me = await sessionOf(alice.page);
    const conv = /** @type {string} */ (await alice.page.evaluate(() => decodeURIComponent(location.hash.slice(4))));
    const [sent] = await mediaOnServer(srv, conv, me.token);
    assert.match(sent.body.content_type, /^audio\//u);
    assert.ok(sent.body.duration_ms >= 2000 && sent.body.duration_ms < 10_000, `duration_ms ${sent.body.duration_ms}`);
    assert.equal(sent.body.name, undefined);

    // It plays: the position moves, and the scrubber with it.
    await voice.getByRole('button', { name: 'Play voice message' }).click();
    await until(() => audio.evaluate((el) => /** @type {HTMLAudioElement} */ (el).currentTime > 0.3), 'playback advances');
    const scrubber = voice.getByRole('slider', { name: 'Position' });
    await until(async () => Number(await scrubber.inputValue()) > 0.2, 'the scrubber follows');
    await voice.getByRole('button', { name: 'Pause voice message' }).click();
    await voice.getByRole('button', { name: 'Play voice message' }).waitFor();
    // The scrubber moves the position.
    await scrubber.fill('1');
    await until(() => audio.evaluate((el) => Math.abs(/** @type {HTMLAudioElement} */ (el).currentTime - 1) < 0.05), 'seeked to 1 s');
    // A reaction to it redraws the bubble, not the player: it keeps its element and position.
    await audio.evaluate((el) => {
      /** @type {HTMLElement} */ (el).dataset.mark = 'same';
    });
    await rest(srv, 'POST', `/v1/conversations/${conv}/messages`, { client_id: crypto.randomUUID(), kind: 'reaction', body: { target_seq: sent.seq, emoji: '❤️' } }, me.token);
    await bob.page.locator('.msg').filter({ has: voice }).getByRole('button', { name: /^❤️ 1/u }).waitFor();
    assert.equal(await voice.locator('audio[data-mark="same"]').count(), 1, 'the same audio element');
    assert.ok(Math.abs((await audio.evaluate((el) => /** @type {HTMLAudioElement} */ (el).currentTime)) - 1) < 0.05, 'at the same position');
    await screenshot(bob.page, 'desktop-chat-voice');

    // Holding the mic records while held; letting go sends.
    const mic = alice.page.getByRole('button', { name: 'Record voice message' });
    await mic.hover();
    await alice.page.mouse.down();
    await alice.page.getByText('Release to send, move away to cancel').waitFor();
    await until(async () => /^0:0[1-9]$/u.test((await timer.textContent()) || ''), 'a second recorded while held');
    await alice.page.mouse.up();
    await timer.waitFor({ state: 'hidden' });
    await count(bob.page.getByRole('group', { name: 'Voice message' }), 2, 'two voice messages');

    // Recording and cancelling sends nothing.
    await alice.page.getByRole('button', { name: 'Record voice message' }).click();
    await timer.waitFor();
    await alice.page.getByRole('button', { name: 'Cancel recording' }).click();
    await timer.waitFor({ state: 'hidden' });
    await send(alice.page, 'barrier');
    await message(bob.page, 'barrier').waitFor();
    await count(bob.page.getByRole('group', { name: 'Voice message' }), 2, 'still two voice messages');
    noErrors(alice.errors);
    noErrors(bob.errors);
  });

  test('uploads that fail: too large says the limit; retries send once (and upload once); rate limits, cancel, reload, offline', async (t) => {
    const srv = await server(t, ['--media-max-bytes', String(1024 * 1024)]);
    const [alice, bob] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob')]);
    await startChat(alice.page, 'bob');
    await send(alice.page, 'hi');
    await conversation(bob.page, 'alice').click();
    const me = await sessionOf(alice.page);
    const conv = /** @type {string} */ (await alice.page.evaluate(() => decodeURIComponent(location.hash.slice(4))));
    /** @param {Buffer} bytes @param {string} name @param {string} type */
    const attach = async (bytes, name, type) => {
      const chooser = alice.page.waitForEvent('filechooser');
      await alice.page.getByRole('button', { name: 'Attach files' }).click();
      await (await chooser).setFiles({ name, mimeType: type, buffer: bytes });
    };

    // Too large: the server says so with its limit, and the message says it in MB. It cannot
    // be retried, only deleted.
    await attach(noise(1536 * 1024), 'big.bin', 'application/octet-stream');
    await send(alice.page, 'too big');
    const big = message(alice.page, 'too big');
    await big.getByRole('alert').filter({ hasText: 'Not sent: The file is too large to send (1.5 MB). The limit is 1 MB.' }).waitFor();
    assert.equal(await big.getByRole('button', { name: 'Retry' }).count(), 0);
    await big.getByRole('button', { name: 'Delete' }).click();
    await big.waitFor({ state: 'detached' });
    // Now the limit is known: a file over it is refused at once, before any upload.
    await attach(noise(1100 * 1024), 'also-big.bin', 'application/octet-stream');
    await alice.page.getByRole('alert').filter({ hasText: '“also-big.bin” is too large to send (1.1 MB). The limit is 1 MB.' }).waitFor();
    assert.equal(await alice.page.getByRole('list', { name: 'Attachments' }).isHidden(), true);

    // The network, for media, as the test wants it: PUTs of the bytes pass, drop or hang; the
    // answer to `complete` may be lost; `POST /v1/media` may be rate limited.
    /** @type {'pass' | 'drop' | 'hang'} */
    let putMode = 'pass';
    let loseComplete = false;
    let rateLimit = false;
    /** @type {string[]} */
    const puts = [];
    let hung = 0;
    alice.page.on('request', (r) => {
      if (r.method() === 'PUT') puts.push(new URL(r.url()).pathname);
    });
    await alice.page.route(
      (url) => url.pathname.startsWith('/blobs/'),
      (route) => {
        if (route.request().method() !== 'PUT' || putMode === 'pass') return route.continue();
        if (putMode === 'hang') {
          hung++;
          return undefined;
        }
        putMode = 'pass';
        return route.abort('connectionreset');
      },
    );
    await alice.page.route(
      (url) => url.pathname.endsWith('/complete'),
      async (route) => {
        if (!loseComplete) return route.continue();
        loseComplete = false;
        await route.fetch();
        return route.abort('connectionreset');
      },
    );
    await alice.page.route(
      (url) => url.pathname === '/v1/media',
      (route) => {
        if (!rateLimit) return route.continue();
        rateLimit = false;
        return route.fulfill({
          status: 429,
          contentType: 'application/json',
          body: JSON.stringify({ error: { code: 'rate_limited', message: 'slow down', retry_after_ms: 1500 } }),
        });
      },
    );

    // The bytes fail to go up (the network drops the PUT): Retry carries on with the same
    // upload, and the message is sent once.
    putMode = 'drop';
    await attach(noise(200 * 1024, 7), 'notes.txt', 'text/plain');
    await send(alice.page, 'second try');
    const second = message(alice.page, 'second try');
    await second.getByRole('status').filter({ hasText: /^No connection/u }).waitFor();
    await status(second, 'Sending');
    await screenshot(alice.page, 'desktop-upload-waiting');
    await second.getByRole('button', { name: 'Retry now' }).click();
    await status(second, 'Read');
    await message(bob.page, 'second try').getByRole('button', { name: 'Download notes.txt' }).waitFor();
    assert.equal(puts.length, 2, 'the bytes went up again after the failed PUT');
    assert.equal(new Set(puts).size, 1, 'the retry reused the same upload');

    // The server completes the upload but its answer is lost: Retry does not upload again.
    loseComplete = true;
    puts.length = 0;
    await attach(png(200, 150), 'small.png', 'image/png');
    await send(alice.page, 'third');
    const third = message(alice.page, 'third');
    await third.getByRole('status').filter({ hasText: /^No connection/u }).waitFor();
    await third.getByRole('button', { name: 'Retry now' }).click();
    await status(third, 'Read');
    assert.equal(puts.length, 1, 'completed uploads are not sent again');

    // Rate limited: the message says so and tries again by itself.
    rateLimit = true;
    await attach(png(120, 90), 'later.png', 'image/png');
    await send(alice.page, 'rate limited');
    const later = message(alice.page, 'rate limited');
    await later.getByRole('status').filter({ hasText: 'Too many uploads right now. Trying again in 2 s.' }).waitFor();
    await status(later, 'Read');

    // An upload that hangs: its cancel button stops it; the message stays, to retry.
    putMode = 'hang';
    await attach(png(300, 200), 'hangs.png', 'image/png');
    await send(alice.page, 'cancel me');
    const hanging = message(alice.page, 'cancel me');
    await until(() => hung === 1, 'the PUT under way');
    await hanging.getByRole('button', { name: 'Cancel upload' }).click();
    await hanging.getByRole('alert').filter({ hasText: 'Not sent: Upload cancelled.' }).waitFor();
    await status(hanging, 'Not sent');
    putMode = 'pass';
    await hanging.getByRole('button', { name: 'Retry', exact: true }).click();
    await status(hanging, 'Read');

    // A reload in the middle of an upload: the file was kept (IndexedDB), the upload goes on.
    putMode = 'hang';
    await attach(png(260, 180), 'reload.png', 'image/png');
    await send(alice.page, 'survives a reload');
    await until(() => hung === 2, 'the second PUT under way');
    putMode = 'pass';
    await alice.page.reload();
    await status(message(alice.page, 'survives a reload'), 'Read');
    assert.equal(await loadedWidth(message(bob.page, 'survives a reload').locator('img.full'), 'Bob sees it'), 260);

    // Offline: the upload waits for the network, then goes by itself.
    await alice.context.setOffline(true);
    await attach(png(160, 120), 'offline.png', 'image/png');
    await send(alice.page, 'written offline');
    const offline = message(alice.page, 'written offline');
    await offline.getByRole('status').filter({ hasText: /^No connection\. The upload continues when you are back online\./u }).waitFor();
    await alice.context.setOffline(false);
    await status(offline, 'Read');

    // Every message once, in the order they went.
    await send(alice.page, 'barrier');
    await message(bob.page, 'barrier').waitFor();
    const captions = (await mediaOnServer(srv, conv, me.token)).map((m) => m.body.caption);
    assert.deepEqual(captions, ['second try', 'third', 'rate limited', 'cancel me', 'survives a reload', 'written offline']);
    noErrors(alice.errors.filter((e) => !/ERR_CONNECTION_RESET|net::ERR_FAILED|status of 413|status of 429/u.test(e)));
    noErrors(bob.errors);
  });

  test('a file dropped on the chat: a card with its name and size; it downloads with its name; a video: poster, then the player', async (t) => {
    const srv = await server(t);
    const [alice, bob] = await Promise.all([user(t, srv, 'alice'), user(t, srv, 'bob')]);
    await startChat(alice.page, 'bob');
    const bytes = noise(20_000, 42);
    const region = alice.page.getByRole('region', { name: 'Messages' });
    const dt = await dataTransfer(alice.page, bytes, 'Quarterly report.pdf', 'application/pdf');
    await region.dispatchEvent('dragenter', { dataTransfer: dt });
    await alice.page.getByText('Drop files to send to bob').waitFor();
    await region.dispatchEvent('drop', { dataTransfer: dt });
    await alice.page.getByText('Drop files to send to bob').waitFor({ state: 'hidden' });
    await alice.page.getByRole('list', { name: 'Attachments' }).getByRole('listitem', { name: 'Quarterly report.pdf, 20 KB' }).waitFor();
    await alice.page.getByRole('textbox', { name: 'Message' }).press('Enter');

    const row = conversation(bob.page, 'alice');
    await row.getByText('📎 Quarterly report.pdf').waitFor();
    await row.click();
    const card = bob.page.getByRole('region', { name: 'Messages' }).locator('.file-card');
    await card.getByText('Quarterly report.pdf').waitFor();
    await card.getByText('20 KB · PDF').waitFor();
    const download = bob.page.waitForEvent('download');
    await card.getByRole('button', { name: 'Download Quarterly report.pdf' }).click();
    const file = await download;
    assert.equal(file.suggestedFilename(), 'Quarterly report.pdf');
    assert.ok(readFileSync(await file.path()).equals(bytes), 'the same bytes');
    await screenshot(bob.page, 'desktop-chat-file');

    // A video (made in the page: a canvas recorded by MediaRecorder), dropped too: a tile with its
    // poster, then the player.
    const clip = await alice.page.evaluateHandle(async () => {
      const canvas = document.createElement('canvas');
      canvas.width = 320;
      canvas.height = 180;
      const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d'));
      const rec = new MediaRecorder(canvas.captureStream(25), { mimeType: 'video/webm' });
      /** @type {Blob[]} */
      const chunks = [];
      rec.ondataavailable = (e) => chunks.push(e.data);
      const stopped = new Promise((r) => (rec.onstop = r));
      rec.start(100);
      const t0 = performance.now();
      await new Promise((resolve) => {
        const draw = () => {
          const t = performance.now() - t0;
          ctx.fillStyle = `hsl(${Math.round(t / 8)}, 70%, 45%)`;
          ctx.fillRect(0, 0, 320, 180);
          ctx.fillStyle = '#fff';
          ctx.fillRect((t / 6) % 280, 70, 40, 40);
          if (t < 1500) requestAnimationFrame(draw);
          else resolve(undefined);
        };
        draw();
      });
      rec.stop();
      await stopped;
      const dt = new DataTransfer();
      dt.items.add(new File(chunks, 'clip.webm', { type: 'video/webm' }));
      return dt;
    });
    await region.dispatchEvent('drop', { dataTransfer: clip });
    await alice.page.getByRole('list', { name: 'Attachments' }).getByRole('listitem', { name: /^clip\.webm, / }).waitFor();
    await alice.page.getByRole('textbox', { name: 'Message' }).press('Enter');
    await row.getByText('🎥 Video').waitFor();
    const tile = bob.page.getByRole('region', { name: 'Messages' }).getByRole('group', { name: 'Video' });
    await tile.locator('canvas.blurhash').waitFor({ state: 'attached' });
    await tile.locator('img.thumb').waitFor({ state: 'attached' });
    const video = await until(
      () => tile.locator('video').evaluate((el) => { const v = /** @type {HTMLVideoElement} */ (el); return v.readyState >= 2 ? { width: v.videoWidth, height: v.videoHeight } : null; }),
      'the video loaded',
    );
    assert.deepEqual(video, { width: 320, height: 180 });
    const me = await sessionOf(alice.page);
    const conv = /** @type {string} */ (await alice.page.evaluate(() => decodeURIComponent(location.hash.slice(4))));
    const sentVideo = (await mediaOnServer(srv, conv, me.token)).find((m) => m.body.name === 'clip.webm');
    assert.equal(sentVideo.body.width, 320);
    assert.equal(sentVideo.body.height, 180);
    assert.ok(sentVideo.body.duration_ms > 1000 && sentVideo.body.duration_ms < 5000, `duration_ms ${sentVideo.body.duration_ms}`);

    // Files sent together arrive in their order, though the small one is ready first.
    const chooser = alice.page.waitForEvent('filechooser');
    await alice.page.getByRole('button', { name: 'Attach files' }).click();
    await (await chooser).setFiles([
      { name: 'first.png', mimeType: 'image/png', buffer: png(1600, 1200) },
      { name: 'second.txt', mimeType: 'text/plain', buffer: Buffer.from('the second file') },
    ]);
    await alice.page.getByRole('list', { name: 'Attachments' }).getByRole('listitem').nth(1).waitFor();
    await alice.page.getByRole('textbox', { name: 'Message' }).press('Enter');
    await row.getByText('📎 second.txt').waitFor();
    const names = (await mediaOnServer(srv, conv, me.token)).map((m) => m.body.name);
    assert.deepEqual(names.slice(-2), ['first.png', 'second.txt']);
    noErrors(alice.errors);
    noErrors(bob.errors);
  });

  test('screenshots of the main screens at desktop and phone width', async (t) => {
    const srv = await server(t);
    const [bob, carol, dave] = await Promise.all([restUser(srv, 'bob'), restUser(srv, 'carol'), restUser(srv, 'dave')]);
    const desk = await openApp(browser, srv, { viewport: DESKTOP });
    t.after(() => desk.context.close());
    await screenshot(desk.page, 'desktop-sign-in');
    const phone = await openApp(browser, srv, { viewport: PHONE, mobile: true });
    t.after(() => phone.context.close());
    await screenshot(phone.page, 'phone-sign-in');
    await signUp(desk.page, 'alice');
    // (The invitation to turn on notifications is a screen of its own; not in these pictures.)
    await desk.page.getByRole('button', { name: 'Dismiss' }).click();
    const me = await desk.page.evaluate(() => JSON.parse(localStorage.getItem('parley.session') || '{}'));

    // Some life: a direct chat with Bob, a group with everyone.
    /** @param {{token: string}} who @param {string} conv @param {string} text @param {object} [extra] */
    const post = (who, conv, text, extra = {}) =>
      rest(srv, 'POST', `/v1/conversations/${conv}/messages`, { client_id: crypto.randomUUID(), kind: 'text', body: { text, ...extra } }, who.token);
    const direct = (await rest(srv, 'POST', '/v1/conversations', { kind: 'direct', user_id: me.user_id }, bob.token)).conversation.conversation_id;
    const group = (
      await rest(srv, 'POST', '/v1/conversations', { kind: 'group', title: 'Climbing crew', member_ids: [me.user_id, carol.user_id, dave.user_id] }, bob.token)
    ).conversation.conversation_id;
    await rest(srv, 'PATCH', `/v1/conversations/${group}/members/${me.user_id}`, { role: 'admin' }, bob.token);
    await post(carol, group, 'Anyone up for the gym on Thursday?');
    await post(dave, group, 'I can do 7pm, after work');
    await post(bob, group, 'Same, I will bring the spare harness');
    const dm = [
      [bob, 'Hey! Did you get the tickets for Friday?'],
      [bob, 'The early show sold out fast last time'],
    ];
    for (const [who, text] of dm) await post(/** @type {{token: string}} */ (who), direct, /** @type {string} */ (text));

    // Bob also has the chat open in a browser (another device of his), so Alice sees ticks.
    const bobWeb = await openApp(browser, srv);
    t.after(() => bobWeb.context.close());
    await signIn(bobWeb.page, 'bob');
    await conversation(bobWeb.page, 'alice').click();

    await conversation(desk.page, 'bob').click();
    await message(desk.page, 'sold out fast').waitFor();
    await send(desk.page, 'Got two, row F!');
    await status(message(desk.page, 'row F'), 'Read');
    const bobLast = await post(bob, direct, 'Perfect. Dinner before?');
    await rest(srv, 'POST', `/v1/conversations/${direct}/messages`, { client_id: crypto.randomUUID(), kind: 'reaction', body: { target_seq: bobLast.message.seq - 1, emoji: '❤️' } }, bob.token);
    await message(desk.page, 'Dinner before?').waitFor();
    await message(desk.page, 'Dinner before?').hover();
    await message(desk.page, 'Dinner before?').getByRole('button', { name: 'Message actions' }).click();
    await desk.page.getByRole('menuitem', { name: 'Reply' }).click();
    await send(desk.page, 'Yes! The ramen place at 6?');
    await status(message(desk.page, 'ramen place'), 'Read');
    await desk.page.mouse.move(0, 0);
    await screenshot(desk.page, 'desktop-chat');

    await conversation(desk.page, 'Climbing crew').click();
    await message(desk.page, 'spare harness').waitFor();
    await desk.page.getByRole('button', { name: 'Group info' }).click();
    await desk.page.getByRole('complementary', { name: 'Group info' }).getByText('4 members').first().waitFor();
    await screenshot(desk.page, 'desktop-group-info');

    // The phone is another device of Alice's.
    await signIn(phone.page, 'alice');
    await phone.page.getByRole('button', { name: 'Dismiss' }).click();
    await conversation(phone.page, 'Climbing crew').waitFor();
    await screenshot(phone.page, 'phone-conversations');
    await conversation(phone.page, 'bob').click();
    await message(phone.page, 'ramen place').waitFor();
    await screenshot(phone.page, 'phone-chat');
    await phone.page.getByRole('button', { name: 'Back to chats' }).click();
    await conversation(phone.page, 'Climbing crew').click();
    await phone.page.getByRole('button', { name: 'Group info' }).click();
    await phone.page.getByRole('complementary', { name: 'Group info' }).getByText('4 members').first().waitFor();
    await screenshot(phone.page, 'phone-group-info');

    // Dark mode follows the system.
    const dark = await openApp(browser, srv, { viewport: DESKTOP, colorScheme: 'dark' });
    t.after(() => dark.context.close());
    await signIn(dark.page, 'alice');
    await dark.page.getByRole('button', { name: 'Dismiss' }).click();
    await conversation(dark.page, 'bob').click();
    await message(dark.page, 'ramen place').waitFor();
    await screenshot(dark.page, 'desktop-chat-dark');
    const bg = await dark.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(bg, 'rgb(255, 255, 255)', 'dark mode has a dark background');

    // The list is most recent first, live: a new group message moves the group to the top.
    /** @param {import('playwright-core').Page} p */
    const titles = (p) => p.getByRole('list', { name: 'Conversations' }).locator('.conv-title').allTextContents();
    await until(async () => JSON.stringify(await titles(desk.page)) === '["bob","Climbing crew"]', 'bob first');
    await post(carol, group, 'See you there');
    await until(async () => JSON.stringify(await titles(desk.page)) === '["Climbing crew","bob"]', 'the group first');

    for (const u of [desk, phone, dark]) noErrors(u.errors);
  });
});
