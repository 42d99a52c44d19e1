//! Chooses and builds the backends `parley serve` runs on, from the settings: SQLite or
//! PostgreSQL for the store, the in-process router or the cluster router over NATS and Redis.
//! The server itself never names a backend; it runs on what it is handed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parley_router::{ClusterBus, LocalRouter, Router};
use parley_router_cluster::{ClusterConfig, ClusterRouter};
use parley_server::{Backends, Config};
use parley_store::{EventSender, Store};
use parley_store_postgres::{ConnectError, PgStore};
use parley_store_sqlite::SqliteStore;

/// The store and router the settings ask for.
pub(crate) async fn connect(config: &Config) -> anyhow::Result<Backends> {
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
            c.presence_grace = Duration::from_millis(config.presence_grace_ms);
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
async fn connect_postgres(config: &Config, url: &str, events: EventSender) -> anyhow::Result<PgStore> {
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
    #[test]
    fn node_names_are_safe_and_unique() {
        let a = super::node_name("eu west.1");
        assert!(a.starts_with("eu_west_1-"), "{a}");
        assert_ne!(a, super::node_name("eu west.1"));
    }
}
