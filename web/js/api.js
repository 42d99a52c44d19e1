// The REST half of the protocol (docs/PROTOCOL.md, `/v1/...`), over fetch.

/** @typedef {import('./types.js').Session} Session */
/** @typedef {import('./types.js').User} User */
/** @typedef {import('./types.js').Conversation} Conversation */
/** @typedef {import('./types.js').Message} Message */
/** @typedef {import('./types.js').Presence} Presence */
/** @typedef {import('./types.js').ConversationSettings} ConversationSettings */
/** @typedef {import('./types.js').PushRegistration} PushRegistration */
/** @typedef {import('./types.js').MediaRecord} MediaRecord */
/** @typedef {import('./types.js').MediaCreated} MediaCreated */

/** An answer with an error status, or no answer at all (`status` 0: the network failed). */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {number} [retryAfterMs]
   * @param {number} [maxBytes] of a `payload_too_large` upload: the server's limit
   */
  constructor(status, code, message, retryAfterMs, maxBytes) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
    this.maxBytes = maxBytes;
  }

  /** Whether the request never got an answer (offline, server down). */
  get network() {
    return this.status === 0;
  }
}

/** How long a REST call may take before it counts as a network failure. */
const TIMEOUT_MS = 20_000;

export class Api {
  /**
   * @param {() => string | null} token the current bearer token, if signed in
   * @param {() => void} onUnauthorized called when the server says the token is no good
   */
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<any>} the parsed JSON body, or null for 204
   */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (e) {
      throw new ApiError(0, 'network', 'Cannot reach the server.');
    }
    if (response.status === 204) return null;
    /** @type {any} */
    let json = null;
    try {
      json = await response.json();
    } catch {
      if (response.ok) throw new ApiError(response.status, 'internal', 'The server sent an unreadable answer.');
    }
    if (!response.ok) {
      const err = json && json.error ? json.error : {};
      if (response.status === 401 && token && path !== '/v1/sessions') this.onUnauthorized();
      throw new ApiError(
        response.status,
        String(err.code || 'internal'),
        String(err.message || response.statusText || 'Request failed'),
        typeof err.retry_after_ms === 'number' ? err.retry_after_ms : undefined,
        typeof err.max_bytes === 'number' ? err.max_bytes : undefined,
      );
    }
    return json;
  }

  // --- accounts and sessions ---

  /** @param {string} username @param {string} password @returns {Promise<User>} */
  createAccount(username, password) {
    return this.request('POST', '/v1/accounts', { username, password });
  }

  /**
   * @param {string} username @param {string} password @param {string} deviceName
   * @returns {Promise<{user_id: string, device_id: string, token: string}>}
   */
  signIn(username, password, deviceName) {
    return this.request('POST', '/v1/sessions', { username, password, device_name: deviceName });
  }

  /** @returns {Promise<null>} */
  signOut() {
    return this.request('DELETE', '/v1/sessions/current');
  }

  /** @returns {Promise<User>} */
  me() {
    return this.request('GET', '/v1/me');
  }

  /** Do not disturb until `until` (ms), or off with null. @param {number | null} until */
  setDnd(until) {
    return this.request('PATCH', '/v1/me', { dnd_until: until });
  }

  /** @param {string} username @returns {Promise<User>} */
  user(username) {
    return this.request('GET', `/v1/users/${encodeURIComponent(username)}`);
  }

  // --- conversations ---

  /** @returns {Promise<Conversation[]>} */
  async conversations() {
    return (await this.request('GET', '/v1/conversations')).conversations;
  }

  /** @param {string} id @returns {Promise<Conversation>} */
  async conversation(id) {
    return (await this.request('GET', `/v1/conversations/${encodeURIComponent(id)}`)).conversation;
  }

  /** @param {string} userId @returns {Promise<Conversation>} */
  async direct(userId) {
    return (await this.request('POST', '/v1/conversations', { kind: 'direct', user_id: userId })).conversation;
  }

  /** @param {string} title @param {string[]} memberIds @returns {Promise<Conversation>} */
  async group(title, memberIds) {
    return (await this.request('POST', '/v1/conversations', { kind: 'group', title, member_ids: memberIds }))
      .conversation;
  }

  /** @param {string} id @param {string} title @returns {Promise<Conversation>} */
  async rename(id, title) {
    return (await this.request('PATCH', `/v1/conversations/${encodeURIComponent(id)}`, { title })).conversation;
  }

  /** @param {string} id @param {string[]} userIds @returns {Promise<Conversation>} */
  async addMembers(id, userIds) {
    return (await this.request('POST', `/v1/conversations/${encodeURIComponent(id)}/members`, { user_ids: userIds }))
      .conversation;
  }

  /** Removes a member, or leaves when `userId` is your own. @param {string} id @param {string} userId */
  removeMember(id, userId) {
    return this.request(
      'DELETE',
      `/v1/conversations/${encodeURIComponent(id)}/members/${encodeURIComponent(userId)}`,
    );
  }

  /**
   * @param {string} id @param {string} userId @param {'admin' | 'member'} role
   * @returns {Promise<Conversation>}
   */
  async setRole(id, userId, role) {
    const path = `/v1/conversations/${encodeURIComponent(id)}/members/${encodeURIComponent(userId)}`;
    return (await this.request('PATCH', path, { role })).conversation;
  }

  /**
   * Changes the user's notification settings of a conversation (only the fields given).
   * @param {string} id @param {Partial<ConversationSettings>} patch
   * @returns {Promise<ConversationSettings>}
   */
  async conversationSettings(id, patch) {
    return (await this.request('PATCH', `/v1/conversations/${encodeURIComponent(id)}/settings`, patch)).settings;
  }

  /**
   * A page of the log, ascending.
   * @param {string} id
   * @param {{after?: number, before?: number, limit?: number}} range
   * @returns {Promise<Message[]>}
   */
  async history(id, range) {
    const q = new URLSearchParams();
    if (range.after !== undefined) q.set('after_seq', String(range.after));
    if (range.before !== undefined) q.set('before_seq', String(range.before));
    q.set('limit', String(range.limit ?? 50));
    return (await this.request('GET', `/v1/conversations/${encodeURIComponent(id)}/messages?${q}`)).messages;
  }

  // --- media ---

  /**
   * Announces an upload; the answer says where to PUT the bytes.
   * @param {{size: number, content_type: string, sha256: string}} what
   * @returns {Promise<MediaCreated>}
   */
  createMedia(what) {
    return this.request('POST', '/v1/media', what);
  }

  /** The bytes are up: the server checks them. @param {string} id @returns {Promise<MediaRecord>} */
  async completeMedia(id) {
    return (await this.request('POST', `/v1/media/${encodeURIComponent(id)}/complete`)).media;
  }

  /**
   * A media record and a short-lived download URL; for the uploader's own pending upload also a
   * fresh upload target (this server adds it: an interrupted upload can go on with a new URL).
   * @param {string} id
   * @returns {Promise<{media: MediaRecord, download: {url: string, expires_at: number}, upload?: MediaCreated['upload'] | null}>}
   */
  media(id) {
    return this.request('GET', `/v1/media/${encodeURIComponent(id)}`);
  }

  /** Drops an upload no message references. @param {string} id @returns {Promise<null>} */
  deleteMedia(id) {
    return this.request('DELETE', `/v1/media/${encodeURIComponent(id)}`);
  }

  // --- push ---

  /** The server's VAPID public key (base64url), the browser's `applicationServerKey`. @returns {Promise<string>} */
  async vapidKey() {
    return (await this.request('GET', '/v1/push/vapid')).public_key;
  }

  /**
   * Registers this device's Web Push subscription (from `PushSubscription.toJSON()`).
   * @param {{endpoint: string, keys: {p256dh: string, auth: string}}} subscription
   */
  registerPush(subscription) {
    const { endpoint, keys } = subscription;
    return this.request('PUT', '/v1/devices/current/push', { kind: 'webpush', endpoint, keys: { p256dh: keys.p256dh, auth: keys.auth } });
  }

  /** @returns {Promise<null>} */
  unregisterPush() {
    return this.request('DELETE', '/v1/devices/current/push');
  }

  /** @returns {Promise<PushRegistration | null>} */
  async pushStatus() {
    return (await this.request('GET', '/v1/push/status')).push;
  }
}
