//! Server settings. The binary layers them (defaults, then a TOML file, then `PARLEY_*`
//! environment, then flags) and hands the result to [`crate::run`]. The backends' own settings
//! (data directory, PostgreSQL, NATS, Redis, node id) are the binary's: the server never sees
//! them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the one HTTP listener (REST, WebSocket, health, metrics).
    pub listen: String,
    /// Sustained sends per second allowed per device (REST and WebSocket together).
    pub send_rate_per_sec: f64,
    /// Sends a device may make in a burst above the sustained rate.
    pub send_burst: u32,
    /// Frames queued for one connection before it is closed with 4009 (too slow).
    pub outbound_queue: usize,
    /// Frames a connection may have in flight (sent to the store, not yet answered) before the
    /// server stops reading from it.
    pub max_pipeline: usize,
    /// Most open WebSocket connections; further upgrades get 503.
    pub max_connections: usize,
    /// How long a new WebSocket has to send `auth` (close 4002 after).
    pub auth_timeout_ms: u64,
    /// How often an idle connection is pinged.
    pub ping_interval_ms: u64,
    /// A connection silent for this long (no frame, no pong) is closed as dead.
    pub idle_timeout_ms: u64,
    /// The most a graceful shutdown waits for connections and writes.
    pub shutdown_timeout_ms: u64,
    /// Password hashes computed at once (each is ~50 ms of one core).
    pub password_hash_concurrency: usize,
    /// Enables the admin API (`/v1/admin/...`) for requests bearing this token. Unset: off.
    pub admin_token: Option<String>,
    /// Conversations with more members than this fan out on the worker pool, in batches.
    pub fanout_worker_threshold: usize,
    /// Fanout workers (each a task; a conversation always goes to the same one, keeping order).
    pub fanout_workers: usize,
    /// Shortest interval between two `receipt` pushes for one conversation, in milliseconds;
    /// receipts in between are coalesced.
    pub receipt_interval_ms: u64,
    /// How long after a user's last device goes away they are shown offline; a device back
    /// within it causes no offline/online flap.
    pub presence_grace_ms: u64,
    /// Shortest interval between two forwarded `typing` `active: true` frames per connection and
    /// conversation; more frequent ones are dropped (thinned), never an error.
    pub typing_interval_ms: u64,
    /// Further messages to a (device, conversation) within this many ms of a push are merged
    /// into one push sent when the window ends.
    pub push_coalesce_ms: u64,
    /// Accept Web Push/UnifiedPush endpoints on loopback and private addresses (a LAN
    /// distributor, tests). Off: such endpoints are refused (400) and never connected to.
    pub push_allow_private_endpoints: bool,
    /// How long a provider keeps a push for an unreachable device, in seconds.
    pub push_ttl_secs: u64,
    /// Most pushes one device gets per minute; more wait for the next minute (merged meanwhile).
    pub push_device_per_minute: u32,
    /// Pushes in flight at once, over all providers.
    pub push_concurrency: usize,
    /// How long a node holds a claimed push before another node may take it, in ms.
    pub push_lease_ms: u64,
    /// Milliseconds a provider has to answer one push.
    pub push_timeout_ms: u64,
    /// Largest upload, in bytes.
    pub media_max_bytes: u64,
    /// Uploads a user may start per minute (sustained), and in a burst.
    pub media_uploads_per_minute: u32,
    pub media_upload_burst: u32,
    /// Bytes a user may upload in any 24 hours.
    pub media_daily_bytes: u64,
    /// An upload no message references is removed this long after it was created, in ms.
    pub media_orphan_after_ms: u64,
    /// How often the media collector runs, in ms.
    pub media_gc_interval_ms: u64,
    /// How long upload and download URLs stay valid, in ms (at most 15 minutes).
    pub media_url_ttl_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7700".into(),
            send_rate_per_sec: 200.0,
            send_burst: 2000,
            outbound_queue: 4096,
            max_pipeline: 256,
            max_connections: 500_000,
            auth_timeout_ms: 10_000,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            shutdown_timeout_ms: 8_000,
            password_hash_concurrency: 2,
            admin_token: None,
            fanout_worker_threshold: 64,
            fanout_workers: 4,
            receipt_interval_ms: 250,
            presence_grace_ms: 5_000,
            typing_interval_ms: 3_000,
            push_coalesce_ms: 2_000,
            push_allow_private_endpoints: false,
            push_ttl_secs: 86_400,
            push_device_per_minute: 30,
            push_concurrency: 256,
            push_lease_ms: 30_000,
            push_timeout_ms: 10_000,
            media_max_bytes: parley_core::media::DEFAULT_MAX_BYTES,
            media_uploads_per_minute: 60,
            media_upload_burst: 30,
            media_daily_bytes: 4 * 1024 * 1024 * 1024,
            media_orphan_after_ms: parley_core::media::ORPHAN_AFTER_MS as u64,
            media_gc_interval_ms: 60_000,
            media_url_ttl_ms: parley_core::media::URL_TTL_MS as u64,
        }
    }
}
