//! Test clusters: three `ClusterRouter`s in this process on one NATS and Redis, each test under a
//! cluster name of its own; fake connections and waits come from the router conformance suite.

use std::sync::Arc;
use std::time::Duration;

pub(crate) use parley_router::conformance::{Conn, Harness, Nodes, WAIT, eventually, frame, message, u};
use parley_router_cluster::{ClusterConfig, ClusterRouter};

pub(crate) fn nats_url() -> String {
    std::env::var("PARLEY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub(crate) fn redis_url() -> String {
    std::env::var("PARLEY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A cluster name no other test run uses.
pub(crate) fn cluster_name() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

/// Settings for a test node: short timers so expiry is quick.
pub(crate) fn config(cluster: &str, node: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new(&nats_url(), &redis_url(), cluster, node);
    c.presence_grace = Duration::ZERO;
    c.directory_ttl = Duration::from_millis(1500);
    c.refresh_interval = Duration::from_millis(400);
    c.sweep_interval = Duration::from_millis(200);
    c.job_ack_wait = Duration::from_secs(2);
    c
}

/// Three nodes of one cluster, for the router conformance suite.
pub(crate) struct ClusterNodes {
    name: String,
    routers: [Arc<ClusterRouter>; 3],
}

impl ClusterNodes {
    pub(crate) async fn start() -> ClusterNodes {
        let name = cluster_name();
        let mut routers = Vec::new();
        for node in ["a", "b", "c"] {
            routers.push(Arc::new(ClusterRouter::connect(config(&name, node)).await.expect("cluster router")));
        }
        ClusterNodes { name, routers: routers.try_into().ok().expect("three routers") }
    }
}

impl Harness for ClusterNodes {
    fn nodes(&self) -> Nodes {
        let [a, b, c] = self.routers.clone();
        Nodes { a, b, c, distributed: true }
    }

    async fn cleanup(self) {
        stop_and_purge(&self.name, &self.routers, &nats_url(), &redis_url()).await;
    }
}

/// Stops the nodes and waits for their tasks to end, then deletes the cluster's keys and stream.
pub(crate) async fn stop_and_purge(name: &str, routers: &[Arc<ClusterRouter>], nats: &str, redis: &str) {
    for r in routers {
        r.halt_and_wait().await;
    }
    ClusterRouter::purge(nats, redis, name).await.expect("purge");
}
