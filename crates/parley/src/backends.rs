//! Chooses and builds the backends `parley serve` runs on, from the settings: SQLite or
//! PostgreSQL for the store, the in-process router or the cluster router over NATS and Redis.
//! The server itself never names a backend; it runs on what it is handed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parley_router::{ClusterBus, LocalRouter, Router};
use parley_router_cluster::{ClusterConfig, ClusterRouter};
use parley_server::{Backends, Config};
use parley_store::{EventSender, Store};
use parley_store_postgres::{ConnectError, PgStore};
use parley_store_sqlite::SqliteStore;

/// The backends' settings, layered like the server's (file, environment, flags) from the same
/// TOML file and command line; the server never sees them. No `Debug`: `store` may hold a
/// database password, and nothing here should ever be printed whole.
#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BackendSettings {
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
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            data_dir: PathBuf::from("./parley-data"),
            node_id: "0".into(),
            store: None,
            migrate_on_start: true,
            nats: None,
            redis: None,
            cluster: "parley".into(),
        }
    }
}

impl BackendSettings {
    /// The keys of the settings file that are these settings.
    pub(crate) const KEYS: [&'static str; 7] =
        ["data_dir", "node_id", "store", "migrate_on_start", "nats", "redis", "cluster"];

    /// The node number (0–1023) in every id this node makes: `node_id` itself when it is one,
    /// else a stable hash of the name (FNV-1a), so a restarted node keeps its number.
    pub(crate) fn node_number(&self) -> u16 {
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
    pub(crate) fn clustered(&self) -> bool {
        self.nats.is_some() && self.redis.is_some()
    }
}

/// The store and router the settings ask for (`server` for the presence grace period the
/// cluster router keeps).
pub(crate) async fn connect(config: &BackendSettings, server: &Config) -> anyhow::Result<Backends> {
    let (events_tx, events) = parley_server::event_channel();
    let store: Arc<dyn Store> = match &config.store {
        Some(url) => Arc::new(connect_postgres(config, url, events_tx).await?),
        None => Arc::new(
            SqliteStore::open(&config.data_dir, config.node_number(), events_tx)
                .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?,
        ),
    };
    // A cluster router when NATS and Redis are both configured, else the in-process one.
    let (router, cluster): (Arc<dyn Router>, Option<Arc<dyn ClusterBus>>) = match (&config.nats, &config.redis) {
        (Some(nats), Some(redis)) => {
            let mut c = ClusterConfig::new(nats, redis, &config.cluster, &node_name(&config.node_id));
            c.presence_grace = Duration::from_millis(server.presence_grace_ms);
            let cluster = Arc::new(ClusterRouter::connect(c).await.context("cluster")?);
            (cluster.clone(), Some(cluster))
        }
        _ => (Arc::new(LocalRouter::new()), None),
    };
    let description = match (&config.store, &cluster) {
        (Some(_), Some(_)) => format!("PostgreSQL, NATS, Redis; node {} of cluster {}", config.node_id, config.cluster),
        (Some(_), None) => "PostgreSQL".to_owned(),
        (None, _) => format!("SQLite in {}", config.data_dir.display()),
    };
    Ok(Backends { store, events, router, cluster, description })
}

/// Connects to PostgreSQL as this node. A numeric `node_id` is the node number, and a second node
/// with it is refused. A named node starts from its name's hash and takes the next number no
/// live node holds (ids only need a number unique among live nodes: each node also starts its
/// ids above every stored one).
async fn connect_postgres(config: &BackendSettings, url: &str, events: EventSender) -> anyhow::Result<PgStore> {
    let first = config.node_number();
    let named = config.node_id.parse::<u16>().is_err();
    let mut n = first;
    loop {
        match PgStore::connect(url, n, config.migrate_on_start, events.clone()).await {
            Err(ConnectError::NodeTaken(_)) if named => {
                n = (n + 1) % 1024;
                if n == first {
                    anyhow::bail!("storage: all 1,024 node numbers are in use");
                }
                tracing::info!(node = %config.node_id, number = n, "node number taken; trying the next");
            }
            other => return other.context("storage"),
        }
    }
}

/// This process's name in the cluster: the configured node id (made safe for NATS subjects)
/// and a random suffix, so two processes never share a name, even a node restarted before its
/// old entries expired, or two nodes given the same id by mistake.
fn node_name(node_id: &str) -> String {
    let base: String = node_id
        .chars()
        .take(40)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    format!("{base}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::BackendSettings;

    #[test]
    fn node_numbers_come_from_numbers_or_names() {
        let with = |id: &str| BackendSettings { node_id: id.into(), ..BackendSettings::default() };
        assert_eq!(with("7").node_number(), 7);
        assert_eq!(with("1023").node_number(), 1023);
        let a = with("gateway-a").node_number();
        assert!(a < 1024);
        assert_eq!(a, with("gateway-a").node_number(), "stable across restarts");
        assert_ne!(a, with("gateway-b").node_number());
        assert!(with("1024").node_number() < 1024);
    }

    #[test]
    fn node_names_are_safe_and_unique() {
        let a = super::node_name("eu west.1");
        assert!(a.starts_with("eu_west_1-"), "{a}");
        assert_ne!(a, super::node_name("eu west.1"));
    }
}
