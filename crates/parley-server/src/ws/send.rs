//! The `send` frame: a message into a conversation, answered with `sent` once it is durable (and,
//! in a cluster, routed), through the same service as REST's `POST .../messages`.

use parley_core::ids::ConversationId;
use parley_proto::Id;
use parley_proto::frames::{SendFrame, Sent, ServerFrame};

use super::conn::{Conn, Pending, error_reply};
use crate::service;

impl Conn {
    pub(super) async fn send(&mut self, frame: SendFrame, r#ref: Option<String>, pending: &mut Pending) {
        // Sending into a conversation ends typing there.
        self.stop_typing(ConversationId(frame.conversation_id.0)).await;
        // Queued here, in frame order, so pipelined sends keep their order in the log; only the
        // wait for durability is deferred into `pending`.
        let app = self.app.clone();
        match service::enqueue(&app, self.user, self.device, frame).await {
            Ok(queued) => pending.push_back(Box::pin(async move {
                match service::finish(&app, queued).await {
                    Ok(o) => vec![
                        ServerFrame::Sent(Sent {
                            r#ref,
                            conversation_id: Id(o.message.conversation_id.0),
                            client_id: o.message.client_id.unwrap_or_default(),
                            message_id: Id(o.message.message_id.0),
                            seq: o.message.seq.0,
                            ts: o.message.ts,
                        })
                        .to_json(),
                    ],
                    Err(e) => error_reply(&app, e, r#ref),
                }
            })),
            Err(e) => self.reply_now(pending, e, r#ref),
        }
    }
}
