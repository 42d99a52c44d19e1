//! What this node does with what other nodes tell it (presence changes, privacy changes,
//! membership invalidations). The cluster router itself is chosen and built by the binary.

use std::sync::Arc;

use parley_router::ClusterEvent;
use tokio::sync::mpsc;

use crate::state::App;

/// Acts on what the cluster says, until the router stops.
pub(crate) async fn listen(app: Arc<App>, mut events: mpsc::Receiver<ClusterEvent>) {
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
                            tracing::warn!(error = %e, user = %state.user_id, "cannot record last seen");
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
