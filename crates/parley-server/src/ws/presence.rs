//! The `presence_subscribe` and `presence_unsubscribe` frames: watch (or stop watching) contacts'
//! presence on this connection, with the privacy rules of [`crate::presence`].

use parley_core::ids::UserId;
use parley_proto::Id;
use parley_proto::frames::ServerFrame;

use super::conn::{Conn, Pending, error_reply};
use crate::presence::Watcher;

impl Conn {
    /// Answered with one `presence` frame per id asked about; later changes follow as they come.
    pub(super) fn presence_subscribe(&self, user_ids: Vec<String>, r#ref: Option<String>, pending: &mut Pending) {
        let watcher = Watcher {
            conn_id: self.handle.id,
            user_id: self.user,
            frames: self.handle.frames.clone(),
            kicks: self.handle.kicks.clone(),
        };
        let app = self.app.clone();
        pending.push_back(Box::pin(async move {
            match app.presence.subscribe(watcher, &user_ids).await {
                Ok(frames) => frames.into_iter().map(|f| ServerFrame::Presence(f).to_json()).collect(),
                Err(e) => error_reply(&app, e, r#ref),
            }
        }));
    }

    /// Has no reply: ids not watched (or not ids at all) are simply ignored.
    pub(super) fn presence_unsubscribe(&self, user_ids: &[String]) {
        let ids: Vec<UserId> = user_ids.iter().map(|i| UserId(Id::parse(i).0)).collect();
        self.app.presence.unsubscribe(self.handle.id, &ids);
    }
}
