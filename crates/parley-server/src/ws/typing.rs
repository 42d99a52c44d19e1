//! The `typing` frame: forwarded to the other members who are online, never stored, and ended
//! for the others when this connection sends into the conversation or closes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use parley_core::ids::{ConversationId, UserId};
use parley_proto::frames::{ServerFrame, Typing};
use parley_proto::{ErrorCode, Id};
use parley_router::Outbound;

use super::conn::{Conn, Pending};
use crate::error::ApiError;
use crate::state::App;

impl Conn {
    /// `active: true` is thinned to one per `typing_interval_ms` per conversation (receivers keep
    /// showing it for 6 s); `active: false` goes out only if `active: true` did.
    pub(super) async fn typing(
        &mut self,
        conv: ConversationId,
        active: bool,
        r#ref: Option<String>,
        pending: &mut Pending,
    ) {
        let member = self.app.members.get(conv).await.is_some_and(|m| m.is_current(self.user));
        if !member {
            let e = ApiError::new(ErrorCode::NotMember, "not a member of this conversation");
            self.reply_now(pending, e, r#ref);
            return;
        }
        let now = Instant::now();
        let interval = Duration::from_millis(self.app.config.typing_interval_ms);
        let forward = if active {
            match self.typing.get(&conv) {
                Some(at) if now.duration_since(*at) < interval => false,
                _ => {
                    self.typing.insert(conv, now);
                    true
                }
            }
        } else {
            self.typing.remove(&conv).is_some()
        };
        if forward {
            forward_typing(&self.app, self.user, conv, active).await;
        }
    }

    /// Whoever saw this connection typing in `conv` sees it stop (a send ends typing).
    pub(super) async fn stop_typing(&mut self, conv: ConversationId) {
        if self.typing.remove(&conv).is_some() {
            forward_typing(&self.app, self.user, conv, false).await;
        }
    }

    /// The connection closed: whoever saw it typing anywhere sees it stop.
    pub(super) async fn stop_typing_everywhere(&mut self) {
        for conv in std::mem::take(&mut self.typing).into_keys() {
            forward_typing(&self.app, self.user, conv, false).await;
        }
    }
}

/// Sends `user`'s typing state in `conv` to the other current members who are online.
async fn forward_typing(app: &App, user: UserId, conv: ConversationId, active: bool) {
    let Some(members) = app.members.get(conv).await else { return };
    let others: Vec<UserId> = members.current().filter(|&u| u != user).collect();
    let json = ServerFrame::Typing(Typing { conversation_id: Id(conv.0), user_id: Id(user.0), active }).to_json();
    app.router.deliver(&others, &Outbound { json: Bytes::from(json), position: None, device: None });
}
