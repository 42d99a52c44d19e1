//! The storage boundary: the [`Store`] trait, its errors and events, and the conformance suite
//! that every backend runs.
//!
//! The trait speaks in domain records (`parley-core`) and knows nothing of SQL; this crate must
//! never depend on a database driver. The backends live in crates of their own
//! (`parley-store-sqlite`, `parley-store-postgres`) and keep the same promises, checked by one
//! conformance suite ([`conformance`], stamped out in each backend's tests):
//! - a message is durable when `send` returns, and `seq` is gap-free per conversation;
//! - `(sender, client_id)` identifies a message forever: a repeat returns the original;
//! - committed messages and pointer changes are published as [`StoreEvent`]s in commit order,
//!   before the callers that caused them are answered;
//! - delivery cursors and receipt pointers only grow. They may be written lazily (a crash may
//!   lose the last fraction of a second of them, which only causes re-delivery), but a read
//!   issued after `ack`/`read` returned sees them.

use async_trait::async_trait;
use parley_core::ids::*;
use parley_core::model::*;

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod e2ee;
pub mod entry;
pub mod media;
pub mod push;

use parley_core::media::Media;
use parley_core::push::{MemberSettings, PushAddress, PushKind, PushRegistration, SettingsPatch};
pub use push::{PushDecisions, PushDone, PushJob, PushOutcome};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A unique thing already exists (a username, say).
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// The user is not (or no longer) a member of the conversation.
    #[error("not a member of this conversation")]
    NotMember,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    /// An encrypted send made for another device set than the conversation's current one.
    #[error("the conversation's devices changed (device_epoch {0})")]
    StaleDevices(i64),
    /// A queue or a quota is full; `retry_after_ms` says when trying again makes sense.
    #[error("{message}")]
    Full { message: String, retry_after_ms: u64 },
    /// The store is shutting down or cannot be reached; the caller may retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reports. Logged by the server, never shown to clients.
    #[error("storage error: {0}")]
    Backend(String),
}

/// A rule's refusal as the store reports it; the messages are the rules' own.
impl From<parley_core::rules::Refusal> for StoreError {
    fn from(r: parley_core::rules::Refusal) -> Self {
        use parley_core::rules::Refusal as R;
        match r {
            R::NotFound => StoreError::NotFound,
            R::NotMember => StoreError::NotMember,
            R::NotAdmin | R::EditByOther | R::DeleteByOther => StoreError::Forbidden(r.to_string()),
            R::NoSuchUser(_)
            | R::NotAGroup
            | R::GroupFull
            | R::LastAdmin
            | R::EditOfNonText
            | R::PlaintextInEncrypted(_)
            | R::SeqOutOfRange { .. } => StoreError::Invalid(r.to_string()),
            R::StaleDevices { current } => StoreError::StaleDevices(current),
        }
    }
}

/// What a backend publishes after each commit, in commit order.
#[derive(Clone, Debug)]
pub enum StoreEvent {
    /// A new log entry (never a repeat of an idempotent send). A system entry carries its typed
    /// body in [`Message::system`].
    Message(Message),
    /// A member's delivery or read pointer moved.
    Receipt(ReceiptChange),
    /// The commit's messages could push some devices: what was decided (a worker claims the
    /// queued ones). Not sent when no member had a live registration.
    Pushes(PushDecisions),
    /// A user's device list changed: a device was added, published its identity, or was removed.
    DeviceListChanged { user: UserId, list_version: i64 },
    /// These devices have new to-device payloads queued.
    ToDevice(Vec<(UserId, DeviceId)>),
    /// A claim left this device with fewer than [`e2ee::KEYS_LOW`] one-time keys.
    KeysLow { user: UserId, device: DeviceId, count: u32 },
}

/// How a backend's group commit behaves, for `/metrics`.
pub struct WriterStats {
    /// Jobs per committed batch.
    pub batch_size: parley_core::histogram::Histogram,
    /// Microseconds from the start of a batch's transaction to its commit returning.
    pub commit_micros: parley_core::histogram::Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            batch_size: parley_core::histogram::Histogram::new(parley_core::histogram::COUNTS),
            commit_micros: parley_core::histogram::Histogram::new(parley_core::histogram::MICROS),
        }
    }
}

/// Where a backend sends its [`StoreEvent`]s: one batch per commit.
pub type EventSender = tokio::sync::mpsc::Sender<Vec<StoreEvent>>;

#[derive(Clone, Debug)]
pub struct NewMessage {
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    pub sender_device_id: Option<DeviceId>,
    pub client_id: Option<String>,
    pub kind: parley_core::MessageKind,
    pub body: String,
    /// The entry an `edit`, `delete` or `reaction` refers to.
    pub target_seq: Option<Seq>,
    /// The uploads the message shows; each must be ready and the sender's (checked in the
    /// send's transaction, which also records the reference).
    pub media: Vec<parley_core::validate::MediaRef>,
    /// The `device_epoch` an `encrypted` body was made for (checked against the conversation's).
    pub device_epoch: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct SendOutcome {
    pub message: Message,
    /// True when `(sender, client_id)` already existed and `message` is the original.
    pub duplicate: bool,
}

/// The answer to a queued write, available once the write is committed.
#[derive(Debug)]
pub struct Ticket<T> {
    rx: tokio::sync::oneshot::Receiver<Result<T>>,
}

impl<T> Ticket<T> {
    pub fn new(rx: tokio::sync::oneshot::Receiver<Result<T>>) -> Self {
        Ticket { rx }
    }

    pub async fn wait(self) -> Result<T> {
        self.rx.await.map_err(|_| StoreError::Unavailable("the store stopped before answering".into()))?
    }
}

/// Which page of history to read; see PROTOCOL.md for the rules.
#[derive(Clone, Copy, Debug, Default)]
pub struct HistoryQuery {
    pub after_seq: Option<Seq>,
    pub before_seq: Option<Seq>,
    pub limit: u32,
}

/// A device's position in one conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    pub conversation_id: ConversationId,
    /// The device's cursor (or the seq before the member joined).
    pub after_seq: Seq,
    /// The last seq the member may see.
    pub upto_seq: Seq,
}

/// The storage boundary. Methods are in create, read, update, delete order per entity.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- users ---
    /// `username` is already validated and lower-case. Taken → [`StoreError::Conflict`].
    async fn create_user(&self, username: &str, display_name: &str, password_hash: &str) -> Result<User>;
    /// Makes accounts each with one device, all or none (admin tooling, benchmarks). A taken
    /// username → [`StoreError::Conflict`] and nothing is written.
    async fn create_accounts(&self, accounts: Vec<NewAccount>) -> Result<Vec<(User, Device)>>;
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    async fn user_credentials(&self, username: &str) -> Result<Option<UserCredentials>>;
    /// Presence records of the users that exist among `users`.
    async fn presence_records(&self, users: &[UserId]) -> Result<Vec<PresenceRecord>>;
    /// Records when a user was last seen; lazily durable (a crash may lose the last second).
    async fn set_last_seen(&self, user: UserId, at: i64) -> Result<()>;
    async fn set_last_seen_visible(&self, user: UserId, visible: bool) -> Result<()>;

    // --- devices ---
    async fn create_device(&self, user_id: UserId, name: &str, token_hash: [u8; 32]) -> Result<Device>;
    async fn device_by_token(&self, token_hash: [u8; 32]) -> Result<Option<Device>>;
    async fn devices(&self, user_id: UserId) -> Result<Vec<Device>>;
    /// Records activity; lazily durable.
    async fn touch_device(&self, device_id: DeviceId, at: i64) -> Result<()>;
    /// Deletes one of `user_id`'s devices with its token and cursors; false if there was none.
    async fn delete_device(&self, user_id: UserId, device_id: DeviceId) -> Result<bool>;

    // --- conversations ---
    /// The direct conversation of `a` and `b` (who may be the same user), created on first use
    /// with a `conversation_created` entry. Returns its id and whether it was created now.
    /// `b` unknown → [`StoreError::NotFound`].
    async fn create_direct(&self, a: UserId, b: UserId, encrypted: bool) -> Result<(ConversationId, bool)>;
    /// A group with `creator` as its admin and `member_ids` (existing users; the creator is added
    /// if missing) as members; at most 1,024 in all. Seq 1 is `conversation_created`.
    async fn create_group(
        &self,
        creator: UserId,
        title: &str,
        member_ids: &[UserId],
        encrypted: bool,
    ) -> Result<ConversationId>;
    /// The conversation as `user` sees it; `None` unless `user` is a current member.
    async fn conversation(
        &self,
        user: UserId,
        id: ConversationId,
        with_members: bool,
    ) -> Result<Option<ConversationView>>;
    /// [`Store::conversation`] for each of `users`, read together (a membership change shows
    /// every member their own view): `(user, view)` in the order of `users`, leaving out those
    /// who are not current members. What the views share is read once, so the number of queries
    /// does not grow with the number of users.
    async fn conversation_views(
        &self,
        id: ConversationId,
        users: &[UserId],
        with_members: bool,
    ) -> Result<Vec<(UserId, ConversationView)>>;
    /// `user`'s current conversations, most recent activity first.
    async fn conversations(&self, user: UserId) -> Result<Vec<ConversationView>>;
    /// Those of `candidates` who share a conversation with `user` as current members (who may
    /// see each other's presence and typing).
    async fn contacts_among(&self, user: UserId, candidates: &[UserId]) -> Result<Vec<UserId>>;
    /// Every member's window, past members included, for routing.
    async fn member_windows(&self, id: ConversationId) -> Result<Vec<MemberWindow>>;
    /// Renames a group (admins only), logging `title_changed`.
    async fn set_title(&self, actor: UserId, id: ConversationId, title: &str) -> Result<()>;
    /// Adds existing users to a group (admins only), logging one `members_added` for those not
    /// already members; past 1,024 members → [`StoreError::Invalid`] and nothing changes.
    async fn add_members(&self, actor: UserId, id: ConversationId, user_ids: &[UserId]) -> Result<()>;
    /// Removes `user` (admins only; `member_removed`) or lets them leave when `actor == user`
    /// (`member_left`). If no admin is left, the longest-standing member is promoted.
    async fn remove_member(&self, actor: UserId, id: ConversationId, user: UserId) -> Result<()>;
    /// Makes a member admin or member (admins only; a group keeps at least one admin).
    async fn set_role(&self, actor: UserId, id: ConversationId, user: UserId, role: Role) -> Result<()>;

    // --- messages ---
    /// Queues a message to be appended and returns once it is queued; the [`Ticket`] resolves
    /// when it is durable. Sends queued one after another from one task are appended in that
    /// order, which is how a connection keeps its pipelined frames in order. Idempotent on
    /// `(sender_id, client_id)`; the repeat check comes before the membership check, so a repeat
    /// always gets the original.
    async fn enqueue_send(&self, msg: NewMessage) -> Result<Ticket<SendOutcome>>;
    /// [`Store::enqueue_send`], then waits until the message is durable.
    async fn send(&self, msg: NewMessage) -> Result<SendOutcome> {
        self.enqueue_send(msg).await?.wait().await
    }
    /// A page of history for a current member; others get [`StoreError::NotFound`].
    async fn history(&self, user: UserId, id: ConversationId, q: HistoryQuery) -> Result<Vec<Message>>;
    /// Where `device` stands in every conversation its user is or was in: entries with
    /// `after_seq < seq <= upto_seq` are pending (none when `upto_seq <= after_seq`). Listing the
    /// up-to-date ones too tells a connection where each conversation's live stream resumes.
    async fn backlog(&self, device: DeviceId, user: UserId) -> Result<Vec<Backlog>>;
    /// Entries with `after_seq < seq <= upto_seq`, ascending, at most `limit`.
    async fn log_range(&self, id: ConversationId, after_seq: Seq, upto_seq: Seq, limit: u32) -> Result<Vec<Message>>;

    // --- pointers ---
    /// Queues moving `device`'s cursor and its user's `delivered_seq` up to `seq`; the ticket
    /// resolves when it has taken effect. Like sends, pointer moves queued one after another from
    /// one task take effect in that order, and may be written lazily (see the module docs), so a
    /// backend is free to hold them briefly and let them ride on the next durable commit.
    async fn enqueue_ack(&self, device: DeviceId, user: UserId, id: ConversationId, seq: Seq) -> Result<Ticket<()>>;
    /// [`Store::enqueue_ack`], then waits until it has taken effect.
    async fn ack(&self, device: DeviceId, user: UserId, id: ConversationId, seq: Seq) -> Result<()> {
        self.enqueue_ack(device, user, id, seq).await?.wait().await
    }
    /// Queues moving `user`'s `read_seq` (and `delivered_seq`) up to `seq`; as `enqueue_ack`.
    async fn enqueue_read(&self, user: UserId, id: ConversationId, seq: Seq) -> Result<Ticket<()>>;
    /// [`Store::enqueue_read`], then waits until it has taken effect.
    async fn read(&self, user: UserId, id: ConversationId, seq: Seq) -> Result<()> {
        self.enqueue_read(user, id, seq).await?.wait().await
    }
    async fn receipts(&self, user: UserId, id: ConversationId, seq: Seq) -> Result<ReceiptSummary>;

    // --- notification settings ---
    /// Changes `user`'s settings in a conversation they are a current member of (`None` if not).
    async fn set_settings(
        &self,
        user: UserId,
        id: ConversationId,
        patch: SettingsPatch,
    ) -> Result<Option<MemberSettings>>;
    /// Do not disturb for all of `user`'s conversations until `until` (`None` ends it).
    async fn set_dnd(&self, user: UserId, until: Option<i64>) -> Result<()>;
    async fn dnd_until(&self, user: UserId) -> Result<Option<i64>>;

    // --- push registrations and the push queue (see [`push`]) ---
    /// Replaces `device`'s registration (a fresh `registered_at`, not invalidated).
    async fn set_push(
        &self,
        device: DeviceId,
        user: UserId,
        kind: PushKind,
        address: PushAddress,
    ) -> Result<PushRegistration>;
    /// Drops `device`'s registration and its queued pushes; false if it had none.
    async fn delete_push(&self, device: DeviceId) -> Result<bool>;
    async fn push_registration(&self, device: DeviceId) -> Result<Option<PushRegistration>>;
    /// The kind of `device`'s invalidated registration if the device has not been told yet;
    /// marks it told.
    async fn take_push_invalidated(&self, device: DeviceId) -> Result<Option<PushKind>>;
    /// Claims up to `limit` due pushes for `node` until `now + lease_ms`, earliest first.
    async fn claim_pushes(&self, node: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<PushJob>>;
    /// When the next unclaimed push is due, if any is pending.
    async fn next_push_due(&self) -> Result<Option<i64>>;
    /// Records what became of claimed pushes.
    async fn finish_pushes(&self, done: Vec<PushDone>) -> Result<()>;
    /// Ends `node`'s leases (a node that restarts takes its own pushes back at once).
    async fn release_pushes(&self, node: &str) -> Result<()>;

    // --- server secrets ---
    /// The secret called `name`, created as `fresh` by the first caller (every later call, on
    /// any node, gets the first one's). Kept in the database: the VAPID key, the topic key.
    async fn secret(&self, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>>;

    // Media (the records; the bytes live in a media store). A send that names an upload
    // checks it is ready and the sender's, and records the reference, in its own transaction.
    // A `delete` of that message drops the reference.

    // End-to-end encryption: the key directory and the to-device queue.

    /// Stores a device's keys (see `PUT /v1/keys`): the identity once (the same again is fine,
    /// another is `Conflict`), one-time keys (an identical one again is a no-op, the same id with
    /// another key `Conflict`, more than 500 stored `Invalid`), a fallback key replacing the
    /// last. Returns the unused one-time keys stored.
    async fn put_keys(&self, user: UserId, device: DeviceId, keys: e2ee::KeyUpload) -> Result<u32>;
    /// Whether the device has published its identity key.
    async fn has_identity(&self, device: DeviceId) -> Result<bool>;
    /// Unused one-time keys, and whether an unused fallback key is stored.
    async fn key_counts(&self, device: DeviceId) -> Result<(u32, bool)>;
    /// A key per asked device that has an identity and whose user is `claimer` or shares a
    /// conversation with them (others are left out): a one-time key, handed out at most once
    /// even to concurrent claims, else the fallback key.
    async fn claim_keys(&self, claimer: UserId, devices: Vec<(UserId, DeviceId)>) -> Result<Vec<e2ee::ClaimedKey>>;
    /// Everyone who shares a current conversation with `user`, `user` included.
    async fn co_members(&self, user: UserId) -> Result<Vec<UserId>>;
    /// `user`'s devices, for `viewer` if it is `user` or shares a conversation with them.
    async fn device_list(&self, viewer: UserId, user: UserId) -> Result<Option<e2ee::DeviceList>>;
    /// Queues payloads from `sender`'s device `device` (a repeated `client_id` queues nothing);
    /// recipients who share no conversation with the sender are dropped. `Full` when a
    /// recipient's queue is full.
    async fn queue_to_device(
        &self,
        sender: UserId,
        device: DeviceId,
        client_id: String,
        messages: Vec<e2ee::ToDeviceOut>,
    ) -> Result<()>;
    /// `device`'s queued payloads after `after_id`, in order.
    async fn to_device_after(&self, device: DeviceId, after_id: i64, limit: u32) -> Result<Vec<e2ee::ToDeviceMessage>>;
    /// Removes `device`'s payloads up to `up_to_id`.
    async fn ack_to_device(&self, device: DeviceId, up_to_id: i64) -> Result<()>;

    /// Records a new upload by `uploader`, pending until completed.
    async fn create_media(&self, uploader: UserId, size: u64, content_type: &str, sha256: [u8; 32]) -> Result<Media>;
    async fn media(&self, id: MediaId) -> Result<Option<Media>>;
    /// Pending → ready. False when it is not pending (already ready, or being removed).
    async fn media_ready(&self, id: MediaId) -> Result<bool>;
    /// Marks `uploader`'s upload for removal while no message references it: false when there
    /// is no such upload of theirs, `Conflict` when a message references it. The caller
    /// removes the object, then [`Store::forget_media`].
    async fn doom_upload(&self, uploader: UserId, id: MediaId) -> Result<bool>;
    /// Whether `user` may fetch it: the uploader, or a member whose window holds a message
    /// that references it.
    async fn media_visible(&self, user: UserId, id: MediaId) -> Result<bool>;
    /// The uploads `user` created at or after `since`.
    async fn media_usage(&self, user: UserId, since: i64) -> Result<media::MediaUsage>;
    /// The collector's first step: marks up to `limit` unreferenced uploads for removal (those
    /// a message once referenced, and those created before `orphan_before`) and returns up to
    /// `limit` of every upload so marked, including ones an interrupted run left.
    async fn doom_media(&self, orphan_before: i64, limit: u32) -> Result<Vec<MediaId>>;
    /// Records that the objects of these uploads marked for removal are gone. Their records
    /// stay as tombstones (they still count against the uploader's daily budget, and a URL
    /// handed out earlier could still put an object back) until [`Store::purge_media`].
    async fn forget_media(&self, ids: &[MediaId]) -> Result<()>;
    /// Up to `limit` tombstones of uploads created before `before`.
    async fn media_tombstones(&self, before: i64, limit: u32) -> Result<Vec<MediaId>>;
    /// Drops tombstones for good (the caller has removed their objects once more).
    async fn purge_media(&self, ids: &[MediaId]) -> Result<()>;

    /// Finishes queued writes and stops accepting new ones.
    async fn shutdown(&self);

    /// Group-commit statistics, for metrics.
    fn writer_stats(&self) -> std::sync::Arc<WriterStats>;
}
