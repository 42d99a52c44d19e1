//! Fanout: turns the store's committed events into frames for the router, in commit order.
//!
//! Each message is encoded once and the same bytes are queued for every recipient connection.
//! Membership comes from an in-memory cache, filled on first use and dropped when a membership
//! entry passes through the log, so a send never reads the member list from disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parley_core::MessageKind;
use parley_core::ids::{ConversationId, UserId};
use parley_core::limits::RECEIPTS_LIVE_MAX_MEMBERS;
use parley_core::model::{Message, ReceiptChange};
use parley_proto::Id;
use parley_proto::frames::{Receipt, ServerFrame};
use parley_router::{LogPosition, Outbound};
use parley_store::StoreEvent;
use tokio::sync::mpsc;

use crate::convert;
use crate::metrics::Metrics;
use crate::state::App;

/// Most conversations whose members are cached; past it the cache starts over.
const MEMBER_CACHE_MAX: usize = 100_000;

#[derive(Default)]
pub struct MemberCache {
    map: Mutex<HashMap<ConversationId, Arc<[UserId]>>>,
}

impl MemberCache {
    pub async fn get(&self, app: &App, conv: ConversationId) -> Option<Arc<[UserId]>> {
        if let Some(m) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&conv) {
            return Some(m.clone());
        }
        let members: Arc<[UserId]> = match app.store.member_ids(conv).await {
            Ok(m) => m.into(),
            Err(e) => {
                tracing::error!(error = %e, conv, "cannot load members for fanout");
                return None;
            }
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MEMBER_CACHE_MAX {
            map.clear();
        }
        map.insert(conv, members.clone());
        Some(members)
    }

    pub fn invalidate(&self, conv: ConversationId) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&conv);
    }
}

pub async fn run(app: Arc<App>, mut events: mpsc::Receiver<Vec<StoreEvent>>) {
    while let Some(batch) = events.recv().await {
        for event in batch {
            match event {
                StoreEvent::Message(m) => message(&app, m).await,
                StoreEvent::Receipt(r) => receipt(&app, r).await,
            }
        }
    }
}

fn changes_membership(kind: MessageKind) -> bool {
    matches!(
        kind,
        MessageKind::ConversationCreated
            | MessageKind::MembersAdded
            | MessageKind::MemberRemoved
            | MessageKind::MemberLeft
    )
}

async fn message(app: &Arc<App>, m: Message) {
    Metrics::inc(&app.metrics.messages_persisted);
    // A removal entry still goes to the removed member: deliver to the members as they were
    // before the entry, and only then forget them.
    let Some(members) = app.members.get(app, m.conversation_id).await else {
        return;
    };
    let frame = Outbound {
        json: Bytes::from(ServerFrame::Message(&convert::message(&m)).to_json()),
        position: Some(LogPosition {
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_device_id: m.sender_device_id,
        }),
    };
    app.router.deliver(&members, &frame);
    if changes_membership(m.kind) || m.kind == MessageKind::TitleChanged {
        app.members.invalidate(m.conversation_id);
        conversation_frames(app, m.conversation_id, &members).await;
    }
}

/// Sends each affected member their own view of the conversation (their pointers and unread
/// count differ), off the fanout task so a large group does not hold up other conversations.
async fn conversation_frames(app: &Arc<App>, conv: ConversationId, before: &[UserId]) {
    let Some(after) = app.members.get(app, conv).await else {
        return;
    };
    let mut users: Vec<UserId> = before.iter().chain(after.iter()).copied().collect();
    users.sort_unstable();
    users.dedup();
    let app = app.clone();
    tokio::spawn(async move {
        for user in users {
            match app.store.conversation(user, conv, true).await {
                Ok(Some(view)) => {
                    let json = ServerFrame::Conversation(&convert::conversation(&view)).to_json();
                    app.router.deliver(&[user], &Outbound { json: Bytes::from(json), position: None });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, conv, user, "cannot build conversation frame"),
            }
        }
    });
}

async fn receipt(app: &Arc<App>, r: ReceiptChange) {
    let Some(members) = app.members.get(app, r.conversation_id).await else {
        return;
    };
    // Larger groups read the aggregate from the receipts endpoint instead.
    if members.len() as i64 > RECEIPTS_LIVE_MAX_MEMBERS {
        return;
    }
    let json = ServerFrame::Receipt(Receipt {
        conversation_id: Id(r.conversation_id),
        user_id: Id(r.user_id),
        delivered_seq: r.delivered_seq,
        read_seq: r.read_seq,
    })
    .to_json();
    app.router.deliver(&members, &Outbound { json: Bytes::from(json), position: None });
}
