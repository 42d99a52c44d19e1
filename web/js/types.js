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
 * @property {number | null} [dnd_until] do not disturb until then (ms); only in `GET /v1/me`
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
 * @property {string[]} [mentions] user ids of the members a text names with `@username`
 * @property {string} [media_id] of `media`: the upload
 * @property {string} [content_type] of `media`
 * @property {number} [size] of `media`, bytes
 * @property {string} [name] of `media`: the file name (none for a recorded voice message)
 * @property {number} [width] of `media`: pictures and videos, pixels
 * @property {number} [height]
 * @property {number} [duration_ms] of `media`: videos and sounds
 * @property {string} [thumbnail] of `media`: a small JPEG or WebP, standard base64 (≤ 8 KiB)
 * @property {string} [blurhash] of `media`: the picture's colours (see js/blurhash.js)
 */

/**
 * An upload as the server keeps it (`media` of `/v1/media/...`).
 * @typedef {object} MediaRecord
 * @property {string} media_id
 * @property {number} size
 * @property {string} content_type
 * @property {string} sha256
 * @property {'pending' | 'ready'} state
 * @property {number} created_at
 */

/**
 * The answer to `POST /v1/media`: where to PUT the bytes, with exactly these headers.
 * @typedef {object} MediaCreated
 * @property {string} media_id
 * @property {{method: string, url: string, headers: Record<string, string>, expires_at: number}} upload
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
 * @property {ConversationSettings} [settings] the user's own, for notifications
 */

/**
 * How the user wants to hear about a conversation: `muted_until` silences it for a while,
 * `notify` says which messages notify at all ("none" is muted for good).
 * @typedef {object} ConversationSettings
 * @property {number | null} muted_until
 * @property {'all' | 'mentions' | 'none'} notify
 */

/**
 * This device's push registration as the server sees it (`GET /v1/push/status`).
 * @typedef {object} PushRegistration
 * @property {string} kind
 * @property {number} registered_at
 * @property {number | null} last_success_at
 * @property {string | null} last_error
 * @property {number | null} invalidated_at
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
 * @property {'text' | 'edit' | 'delete' | 'reaction' | 'media'} kind
 * @property {MessageBody} body
 * @property {number} created_at
 * @property {string} [error] set when the server refused it for good (or an upload failed)
 * @property {Upload} [upload] of `media`: where its upload is; it is sent once `phase` is `done`
 */

/**
 * The upload behind a media message in the outbox. The file itself stays in this browser
 * (memory and IndexedDB, see js/uploads.js); this record, in localStorage, is what survives a
 * reload and lets a retry continue where it stopped (an upload the server already has is not
 * sent again).
 * @typedef {object} Upload
 * @property {'preparing' | 'uploading' | 'done'} phase
 * @property {boolean} [described] the thumbnail, blurhash and dimensions are in the body
 * @property {string} [sha256] of the bytes, standard base64
 * @property {string} [media_id] announced to the server (not necessarily uploaded yet)
 * @property {string} [url] where to PUT the bytes, until `expires_at`
 * @property {Record<string, string>} [headers]
 * @property {number} [expires_at] server ms
 * @property {boolean} [fatal] the error cannot be cured by retrying (too large, file gone)
 * @property {boolean} [auto] the upload is retried by itself (offline, rate limited)
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
 * @property {string} [kind] of `push_invalidated`: which push registration died
 */

export {};
