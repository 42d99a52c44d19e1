//! Server settings. The binary layers them (defaults, then a TOML file, then `PARLEY_*`
//! environment, then flags) and hands the result to [`crate::run`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the one HTTP listener (REST, WebSocket, health, metrics).
    pub listen: String,
    // The backends' settings: read by the binary, which builds the backends and hands them to
    // `run`; the server itself never looks at them.
    /// Where the embedded database lives.
    pub data_dir: PathBuf,
    /// This node's name. A number 0–1023 is also the node number that is part of every id it
    /// makes; any other name maps to a number by a stable hash (and a node whose number is taken
    /// by another live node is refused at start). In a cluster it names the node in the session
    /// directory and on NATS, so it must be unique there.
    pub node_id: String,
    /// PostgreSQL URL (`postgres://...`): store everything there instead of the embedded
    /// database. Needed for a cluster.
    pub store: Option<String>,
    /// Apply the PostgreSQL migrations at start (else a database that is behind is refused and
    /// `parley migrate` must be run first).
    pub migrate_on_start: bool,
    /// NATS URL (`nats://...`): route between nodes. With `redis`, makes this node part of a cluster.
    pub nats: Option<String>,
    /// Redis URL (`redis://...`): the session directory and presence of a cluster.
    pub redis: Option<String>,
    /// The cluster's name: prefixes its NATS subjects, JetStream streams and Redis keys, so
    /// several clusters can share the same NATS and Redis.
    pub cluster: String,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7700".into(),
            data_dir: PathBuf::from("./parley-data"),
            node_id: "0".into(),
            store: None,
            migrate_on_start: true,
            nats: None,
            redis: None,
            cluster: "parley".into(),
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
        }
    }
}

impl Config {
    /// The node number (0–1023) in every id this node makes: `node_id` itself when it is one,
    /// else a stable hash of the name (FNV-1a), so a restarted node keeps its number.
    pub fn node_number(&self) -> u16 {
        if let Ok(n) = self.node_id.parse::<u16>()
            && n < 1024
        {
            return n;
        }
        let mut h: u32 = 0x811c_9dc5;
        for b in self.node_id.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        (h % 1024) as u16
    }

    /// Whether this node is part of a cluster (routes through NATS and Redis).
    pub fn clustered(&self) -> bool {
        self.nats.is_some() && self.redis.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn node_numbers_come_from_numbers_or_names() {
        let with = |id: &str| Config { node_id: id.into(), ..Config::default() };
        assert_eq!(with("7").node_number(), 7);
        assert_eq!(with("1023").node_number(), 1023);
        let a = with("gateway-a").node_number();
        assert!(a < 1024);
        assert_eq!(a, with("gateway-a").node_number(), "stable across restarts");
        assert_ne!(a, with("gateway-b").node_number());
        assert!(with("1024").node_number() < 1024);
    }
}
