//! The server's side of cluster mode: the router chosen from the settings, and what the node does
//! with what other nodes tell it (presence changes, privacy changes, membership invalidations).

use std::sync::Arc;
use std::time::Duration;

use parley_router::cluster::{ClusterConfig, ClusterError, ClusterRouter};
use parley_router::{ClusterBus, ClusterEvent, LocalRouter, Router};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::state::App;

/// The routers of this node: the in-process one, or a cluster router that is both router and bus.
pub struct Routers {
    pub router: Arc<dyn Router>,
    pub cluster: Option<Arc<ClusterRouter>>,
}

impl Routers {
    /// A cluster router when NATS and Redis are both configured, else the in-process one.
    pub async fn connect(config: &Config) -> Result<Routers, ClusterError> {
        let (Some(nats), Some(redis)) = (&config.nats, &config.redis) else {
            return Ok(Routers { router: Arc::new(LocalRouter::new()), cluster: None });
        };
        let mut c = ClusterConfig::new(nats, redis, &config.cluster, &node_name(&config.node_id));
        c.presence_grace = Duration::from_millis(config.presence_grace_ms);
        let cluster = Arc::new(ClusterRouter::connect(c).await?);
        Ok(Routers { router: cluster.clone(), cluster: Some(cluster) })
    }

    pub fn bus(&self) -> Option<Arc<dyn ClusterBus>> {
        self.cluster.clone().map(|c| c as Arc<dyn ClusterBus>)
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

/// Acts on what the cluster says, until the router stops.
pub async fn listen(app: Arc<App>, mut events: mpsc::Receiver<ClusterEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            ClusterEvent::Presence { state, from_here } => {
                app.presence.apply(state);
                // This node's sweeper found a dead node's user offline: it keeps the last seen.
                if from_here
                    && !state.online
                    && let Some(at) = state.last_seen
                {
                    let store = app.store.clone();
                    app.tasks.spawn(async move {
                        if let Err(e) = store.set_last_seen(state.user_id, at).await {
                            tracing::warn!(error = %e, user = state.user_id, "cannot record last seen");
                        }
                    });
                }
            }
            ClusterEvent::Visibility { user_id, visible } => app.presence.visibility(user_id, visible),
            ClusterEvent::MembersChanged { conversation_id, removed } => {
                app.members.invalidate(conversation_id);
                if let Some(user) = removed {
                    let presence = app.presence.clone();
                    app.tasks.spawn(async move { presence.revalidate(user).await });
                }
            }
        }
    }
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
