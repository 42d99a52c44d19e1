// Shapes of the Parley protocol (docs/PROTOCOL.md) and of the client's own records, as JSDoc
// types for `tsc --checkJs`. This module has no code; others import its types with
// `@typedef {import('./types.js').Name} Name`.

/**
 * A signed-in device, kept in localStorage so a reload stays signed in.
 * @typedef {object} Session
 * @property {string} token
 * @property {string} user_id
 * @property {string} device_id
 * @property {string} username
 * @property {string} display_name
 */

/**
 * @typedef {object} User
 * @property {string} user_id
 * @property {string} username
 * @property {string} display_name
 */

/**
 * @typedef {object} Member
 * @property {string} user_id
 * @property {string} username
 * @property {string} display_name
 * @property {'admin' | 'member'} role
 * @property {number} read_seq
 * @property {number} delivered_seq
 */

/**
 * A log entry of a conversation. `body` depends on `kind`.
 * @typedef {object} Message
 * @property {string} conversation_id
 * @property {number} seq
 * @property {string} message_id
 * @property {string} sender_id
 * @property {string | null} sender_device_id
 * @property {string | null} client_id
 * @property {number} ts
 * @property {string} kind
 * @property {MessageBody} body
 */

/**
 * The union of the body fields of every kind; each kind uses some.
 * @typedef {object} MessageBody
 * @property {string} [text]
 * @property {number} [reply_to_seq]
 * @property {number} [target_seq]
 * @property {string} [emoji]
 * @property {boolean} [edited]
 * @property {string} [title]
 * @property {string} [kind]
 * @property {string[]} [user_ids]
 * @property {string} [user_id]
 * @property {string} [by]
 * @property {string} [role]
 * @property {string} [caption]
 * @property {string} [algorithm]
 */

/**
 * @typedef {object} Conversation
 * @property {string} conversation_id
 * @property {'direct' | 'group'} kind
 * @property {string | null} title
 * @property {number} created_at
 * @property {number} last_seq
 * @property {Message | null} last_message
 * @property {number} unread_count
 * @property {number} read_seq
 * @property {number} delivered_seq
 * @property {number} members_count
 * @property {Member[]} [members]
 */

/**
 * @typedef {object} Presence
 * @property {string} user_id
 * @property {boolean} online
 * @property {number | null} last_seen
 */

/**
 * A send waiting in the outbox until the server answers `sent`. `client_id` is chosen once and
 * reused by every retry, so the server stores the message once whatever happens.
 * @typedef {object} OutboxItem
 * @property {string} client_id
 * @property {string} conversation_id
 * @property {'text' | 'edit' | 'delete' | 'reaction'} kind
 * @property {MessageBody} body
 * @property {number} created_at
 * @property {string} [error] set when the server refused it for good
 */

/**
 * Frames the server sends on the WebSocket.
 * @typedef {object} ServerFrame
 * @property {string} type
 * @property {string} [ref]
 * @property {string} [code]
 * @property {string} [message]
 * @property {number} [retry_after_ms]
 * @property {string} [user_id]
 * @property {string} [device_id]
 * @property {number} [server_time]
 * @property {string} [conversation_id]
 * @property {string} [client_id]
 * @property {string} [message_id]
 * @property {number} [seq]
 * @property {number} [ts]
 * @property {number} [delivered_seq]
 * @property {number} [read_seq]
 * @property {boolean} [active]
 * @property {boolean} [online]
 * @property {number | null} [last_seen]
 */

export {};
