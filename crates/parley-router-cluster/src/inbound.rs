//! What a node receives: frames for its connections (on its own subject, or on the subject every
//! node hears when the sender could not read the directory), device kicks, membership
//! invalidations and presence changes. One task per subscription; async-nats resubscribes them
//! after a reconnect. A node ignores its own broadcasts: it acted on them before sending.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::wire::{self, PresenceMsg};
use crate::{ClusterError, Inner};
use parley_router::{ClusterEvent, Router};

#[derive(Clone, Copy)]
enum Kind {
    /// Frames on this node's own subject (from any node, this one included).
    NodeFrames,
    /// Frames sent to every node: this node already delivered its own.
    AllFrames,
    Kick,
    Members,
    Presence,
}

pub(crate) async fn start(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>, ClusterError> {
    let s = &inner.subjects;
    let subs = [
        (s.node(&inner.node), Kind::NodeFrames),
        (s.all.clone(), Kind::AllFrames),
        (s.kick.clone(), Kind::Kick),
        (s.members.clone(), Kind::Members),
        (s.presence.clone(), Kind::Presence),
    ];
    let mut tasks = Vec::with_capacity(subs.len());
    for (subject, kind) in subs {
        let sub = inner.nats.subscribe(subject).await.map_err(|e| ClusterError::Nats(e.to_string()))?;
        tasks.push(tokio::spawn(receive(inner.clone(), sub, kind)));
    }
    // The subscriptions are in place on the server before anyone is told where we are.
    inner.nats.flush().await.map_err(|e| ClusterError::Nats(e.to_string()))?;
    Ok(tasks)
}

async fn receive(inner: Arc<Inner>, mut sub: async_nats::Subscriber, kind: Kind) {
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m {
                Some(m) => m,
                None => return,
            },
            _ = inner.cancel.cancelled() => return,
        };
        if handle(&inner, kind, &msg.payload).is_none() {
            tracing::warn!(subject = %msg.subject, "cluster: a message that does not decode was dropped");
        }
    }
}

fn handle(inner: &Inner, kind: Kind, payload: &bytes::Bytes) -> Option<()> {
    match kind {
        Kind::NodeFrames | Kind::AllFrames => {
            let (origin, frames) = wire::decode_frames(payload)?;
            if matches!(kind, Kind::AllFrames) && origin == inner.node {
                return Some(());
            }
            inner.stats.received.fetch_add(1, Ordering::Relaxed);
            for (users, frame) in frames {
                Router::deliver(&inner.local, &users, &frame);
            }
        }
        Kind::Kick => {
            let (origin, user, device, why) = wire::decode_kick(payload)?;
            if origin != inner.node {
                Router::kick_device(&inner.local, user, device, why);
            }
        }
        Kind::Members => {
            let (origin, conversation_id, removed) = wire::decode_members(payload)?;
            if origin != inner.node {
                inner.event(ClusterEvent::MembersChanged { conversation_id, removed });
            }
        }
        Kind::Presence => {
            let (origin, msg) = wire::decode_presence(payload)?;
            if origin != inner.node {
                inner.event(match msg {
                    PresenceMsg::State(state) => ClusterEvent::Presence { state, from_here: false },
                    PresenceMsg::Visibility(user_id, visible) => ClusterEvent::Visibility { user_id, visible },
                });
            }
        }
    }
    Some(())
}
