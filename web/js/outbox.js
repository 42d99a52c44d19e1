// Sends that have not been answered `sent` yet, kept in localStorage so that neither a lost
// connection nor a closed tab loses them. Each keeps the `client_id` it was given when the user
// wrote it; every retry reuses it, and the server turns repeats into the original message, so a
// message is stored once however many times it is sent. Tabs of the same browser profile share
// the queue (and learn of each other's changes through the `storage` event).

/** @typedef {import('./types.js').OutboxItem} OutboxItem */

export class Outbox {
  /** @param {string} userId */
  constructor(userId) {
    this.key = `parley.outbox.${userId}`;
    /** @type {OutboxItem[]} */
    this.items = this.load();
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    this.onStorage = (/** @type {StorageEvent} */ e) => {
      if (e.key !== this.key) return;
      this.items = this.load();
      this.emit();
    };
    window.addEventListener('storage', this.onStorage);
  }

  close() {
    window.removeEventListener('storage', this.onStorage);
    this.listeners.clear();
  }

  /** @returns {OutboxItem[]} */
  load() {
    try {
      const raw = localStorage.getItem(this.key);
      const parsed = raw ? JSON.parse(raw) : [];
      return Array.isArray(parsed) ? parsed : [];
    } catch {
      return [];
    }
  }

  save() {
    try {
      if (this.items.length) localStorage.setItem(this.key, JSON.stringify(this.items));
      else localStorage.removeItem(this.key);
    } catch {
      // Storage full or disabled: the queue still lives in memory for this tab.
    }
    this.emit();
  }

  emit() {
    for (const fn of this.listeners) fn();
  }

  /** @param {() => void} fn */
  subscribe(fn) {
    this.listeners.add(fn);
  }

  /** @param {OutboxItem} item */
  add(item) {
    this.items = [...this.load().filter((i) => i.client_id !== item.client_id), item];
    this.save();
  }

  /** @param {string} clientId */
  get(clientId) {
    return this.items.find((i) => i.client_id === clientId);
  }

  /** @param {string} clientId @returns {boolean} whether it was there */
  remove(clientId) {
    const before = this.load();
    const after = before.filter((i) => i.client_id !== clientId);
    const had = after.length !== before.length || this.items.some((i) => i.client_id === clientId);
    this.items = after;
    if (had) this.save();
    return had;
  }

  /** @param {string} clientId @param {Partial<OutboxItem>} patch */
  update(clientId, patch) {
    this.items = this.load().map((i) => (i.client_id === clientId ? { ...i, ...patch } : i));
    this.save();
  }

  /** The items of one conversation, oldest first. @param {string} conversationId */
  of(conversationId) {
    return this.items.filter((i) => i.conversation_id === conversationId);
  }

  /**
   * Everything ready to be (re)sent, oldest first: refused items stay until the user acts, and
   * an attachment waits for its upload, and for the uploads of the attachments sent before it to
   * the same conversation (files sent together arrive in their order; texts do not wait).
   */
  pending() {
    /** Conversations with an attachment still on its way. */
    const uploading = new Set();
    return this.items.filter((i) => {
      if (i.kind !== 'media') return !i.error;
      const ready = !i.error && i.upload?.phase === 'done' && !uploading.has(i.conversation_id);
      if (!ready && (!i.error || i.upload?.auto)) uploading.add(i.conversation_id);
      return ready;
    });
  }

  /** Everything on its way: not sent yet and not stuck on an error (uploads, and those waiting for the network, included). */
  unsent() {
    return this.items.filter((i) => !i.error || i.upload?.auto);
  }
}
