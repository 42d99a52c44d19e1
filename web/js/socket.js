// The WebSocket half of the protocol: one connection to `/v1/ws` kept alive for as long as the
// user is signed in. It authenticates, tells its owner when the backlog replay starts (`ready`)
// and ends (`synced`), notices dead sockets (the browser's offline event, and a `ping` that gets
// no answer), and reconnects with exponential backoff and jitter. What to resend and refetch on a
// new connection is the owner's business (state.js).

/** @typedef {import('./types.js').ServerFrame} ServerFrame */

/**
 * `connecting`: opening and authenticating; `syncing`: authenticated, the backlog is replaying;
 * `online`: synced and live; `waiting`: closed, a retry is scheduled; `offline`: the browser says
 * there is no network (a retry is still scheduled, in case it is wrong); `stopped`: signed out.
 * @typedef {'connecting' | 'syncing' | 'online' | 'waiting' | 'offline' | 'stopped'} Status
 */

/**
 * @typedef {object} Hooks
 * @property {() => string | null} token
 * @property {(frame: ServerFrame) => void} onFrame every frame but `ready`, `synced` and `pong`
 * @property {(ready: ServerFrame) => void} onReady authenticated; the replay follows
 * @property {() => void} onSynced the replay is over
 * @property {(status: Status) => void} onStatus
 * @property {(code: number) => void} onRevoked the token is no longer valid (4001, 4010)
 */

/** Silence after which the client pings to learn whether the socket still works. */
const IDLE_PING_MS = 25_000;
/** How long a ping may go unanswered before the socket counts as dead. */
const PONG_TIMEOUT_MS = 8_000;
/** How long opening and authenticating may take. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Backoff: the first retry waits about BASE, each failure doubles it, up to MAX. */
const BACKOFF_BASE_MS = 800;
const BACKOFF_MAX_MS = 30_000;
/** After a policy close (4008) the server wants us gone for a while. */
const POLICY_BACKOFF_MS = 60_000;

export class Connection {
  /** @param {Hooks} hooks */
  constructor(hooks) {
    this.hooks = hooks;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {Status} */
    this.status = 'stopped';
    /** Failed attempts since the last good connection. */
    this.attempts = 0;
    /** When the next retry is due (ms since the epoch), while `waiting`/`offline`. */
    this.retryAt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.connectTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.heartbeat = undefined;
    this.lastFrameAt = 0;
    /** When the outstanding ping was sent, or 0. */
    this.pingSentAt = 0;
    this.pings = 0;
    this.authenticated = false;

    this.onOnline = () => this.retryNow();
    this.onOffline = () => this.drop('offline');
    this.onVisible = () => {
      if (document.visibilityState !== 'visible') return;
      if (this.authenticated) this.probe();
      else if (this.status === 'waiting' || this.status === 'offline') this.retryNow();
    };
  }

  /** Starts connecting (and keeps doing so until `stop`). */
  start() {
    if (this.status !== 'stopped') return;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.heartbeat = setInterval(() => this.tick(), 1_000);
    this.attempts = 0;
    this.connect();
  }

  /** Closes the connection for good (sign-out). */
  stop() {
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    document.removeEventListener('visibilitychange', this.onVisible);
    clearInterval(this.heartbeat);
    clearTimeout(this.retryTimer);
    this.teardown(1000);
    this.setStatus('stopped');
  }

  /** Sends a frame if the connection is authenticated; false when it is not (the caller keeps it). @param {object} frame */
  send(frame) {
    if (!this.ws || !this.authenticated || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Whether frames can be sent now. */
  get ready() {
    return this.authenticated && this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Reconnects at once if a retry is pending (the network came back, the user asked). */
  retryNow() {
    if (this.status === 'waiting' || this.status === 'offline') {
      clearTimeout(this.retryTimer);
      this.attempts = 0;
      this.connect();
    } else if (this.authenticated) {
      this.probe();
    }
  }

  /** Pings now, so a dead socket is found within PONG_TIMEOUT_MS. */
  probe() {
    if (this.pingSentAt || !this.ready) return;
    this.pingSentAt = Date.now();
    this.send({ type: 'ping', ref: `hb${++this.pings}` });
  }

  // --- internals ---

  /** @param {Status} status */
  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.hooks.onStatus(status);
  }

  connect() {
    this.teardown(1000);
    const token = this.hooks.token();
    if (!token) return;
    this.setStatus('connecting');
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.authenticated = false;
    this.pingSentAt = 0;
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && !this.authenticated) this.drop('timeout');
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
      ws.send(JSON.stringify({ type: 'auth', token }));
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      // Any frame proves the socket alive, as a pong would.
      this.lastFrameAt = Date.now();
      this.pingSentAt = 0;
      /** @type {ServerFrame} */
      let frame;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return;
      }
      this.onServerFrame(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.onClosed(event.code);
    };
  }

  /** @param {ServerFrame} frame */
  onServerFrame(frame) {
    switch (frame.type) {
      case 'ready':
        clearTimeout(this.connectTimer);
        this.authenticated = true;
        this.setStatus('syncing');
        this.hooks.onReady(frame);
        return;
      case 'synced':
        this.attempts = 0;
        this.setStatus('online');
        this.hooks.onSynced();
        return;
      case 'pong':
        if (frame.ref && frame.ref.startsWith('hb')) return;
        break;
      case 'error':
        if (!this.authenticated && frame.code === 'unauthorized') {
          // The close with 4001 follows; nothing else to do here.
          return;
        }
        break;
    }
    this.hooks.onFrame(frame);
  }

  /** @param {number} code */
  onClosed(code) {
    this.teardown(code);
    if (code === 4001 || code === 4010) {
      this.stop();
      this.hooks.onRevoked(code);
      return;
    }
    this.scheduleRetry(code === 4008 ? POLICY_BACKOFF_MS : 0);
  }

  /**
   * Gives up on the current socket at once: without waiting for a close handshake that a dead
   * network would never complete.
   * @param {'offline' | 'timeout' | 'dead'} why
   */
  drop(why) {
    if (this.status === 'stopped') return;
    this.teardown(4000);
    this.scheduleRetry(0, why === 'offline');
  }

  /** @param {number} code */
  teardown(code) {
    clearTimeout(this.connectTimer);
    const ws = this.ws;
    this.ws = null;
    this.authenticated = false;
    this.pingSentAt = 0;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
        try {
          ws.close(code >= 4000 || code === 1000 ? code : 1000);
        } catch {
          ws.close();
        }
      }
    }
  }

  /**
   * @param {number} [atLeastMs]
   * @param {boolean} [offline]
   */
  scheduleRetry(atLeastMs = 0, offline = !navigator.onLine) {
    clearTimeout(this.retryTimer);
    // Exponential backoff with "equal jitter": half the step fixed, half random, so a server
    // restart does not bring every client back in the same millisecond.
    const step = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempts);
    const delay = Math.max(atLeastMs, step / 2 + Math.random() * (step / 2));
    this.attempts = Math.min(this.attempts + 1, 16);
    this.retryAt = Date.now() + delay;
    this.setStatus(offline ? 'offline' : 'waiting');
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Runs every second: keeps the socket honest. */
  tick() {
    if (!this.authenticated) return;
    const now = Date.now();
    if (this.pingSentAt && now - this.pingSentAt > PONG_TIMEOUT_MS) {
      this.drop('dead');
    } else if (!this.pingSentAt && now - this.lastFrameAt > IDLE_PING_MS) {
      this.probe();
    }
  }
}
