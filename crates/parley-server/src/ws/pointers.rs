//! The `ack` and `read` frames: move this device's delivery pointer or the user's read pointer.
//!
//! Pointer moves are queued in frame order like sends, so one that precedes a send rides on that
//! send's commit instead of waiting for a commit of its own.

use parley_core::ids::{ConversationId, Seq};

use super::conn::{Conn, Pending, error_reply};

impl Conn {
    pub(super) async fn ack(&mut self, conv: ConversationId, seq: Seq, r#ref: Option<String>, pending: &mut Pending) {
        let queued = self.app.store.enqueue_ack(self.device, self.user, conv, seq).await;
        self.pointer_reply(pending, queued, r#ref)
    }

    pub(super) async fn read(&mut self, conv: ConversationId, seq: Seq, r#ref: Option<String>, pending: &mut Pending) {
        let queued = self.app.store.enqueue_read(self.user, conv, seq).await;
        self.pointer_reply(pending, queued, r#ref)
    }

    /// An `ack` or `read` has no reply of its own; its place in `pending` only holds back later
    /// replies (a `pong`) until it has taken effect, and carries its error if it fails.
    fn pointer_reply(
        &self,
        pending: &mut Pending,
        queued: parley_store::Result<parley_store::Ticket<()>>,
        r#ref: Option<String>,
    ) {
        match queued {
            Ok(ticket) => {
                let app = self.app.clone();
                pending.push_back(Box::pin(async move {
                    match ticket.wait().await {
                        Ok(()) => Vec::new(),
                        Err(e) => error_reply(&app, e.into(), r#ref),
                    }
                }))
            }
            Err(e) => self.reply_now(pending, e.into(), r#ref),
        }
    }
}
