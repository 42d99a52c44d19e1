//! "Acknowledged ⇒ delivered" in a cluster: a sender hears `sent` only once fanout has handed
//! the message to the router and the router has flushed it to the other nodes (or stored it as a
//! durable fanout job).
//!
//! The store answers a send after publishing its event, but fanout handles the event a moment
//! later, so the answer has to wait for fanout. A send records its interest in its conversation
//! *before* it is queued ([`Routed::expect`]); fanout reports each message it routed, in commit
//! order ([`Routed::done`]); the send then waits until its conversation has been routed up to
//! its seq ([`Routed::wait`]). Only conversations with a send in flight are tracked, so the map
//! stays as small as the number of concurrent sends. In embedded mode there is no other node to
//! reach and this is not used: fanout runs in the same process, and if the process dies every
//! connection resyncs from the log.
//!
//! # In depth
//!
//! **Acknowledged ⇒ delivered.** The promise: once a sender has `sent`, every recipient device
//! that is online gets the message live, or through resync if its own node dies. The store's
//! "publish events, then answer" contract is not enough in a cluster, because fanout runs after
//! the answer and the sender's node could die in between, leaving recipients on other nodes
//! connected and unaware. So in a cluster a send waits for routing too (`routed.rs`):
//! - `service::enqueue` records interest in the conversation *before* queueing the send (so the
//!   outcome cannot be missed); after each commit batch, fanout calls `Router::flush`, a marker
//!   behind everything it handed to the router, which resolves once the publisher has published all
//!   of it and NATS has flushed on a connection that did not drop meanwhile, and with no frame
//!   dropped since the previous marker. Large conversations' acks are JetStream's "stored". A task
//!   awaits each batch's acks in commit order and reports (conversation, seq) → outcome; the send
//!   resolves when its seq is reported.
//! - A failure (NATS down, a flush that spanned a reconnect) or no outcome within 10 s answers
//!   `unavailable`: the message is stored, and a retry with the same `client_id` returns it and
//!   *routes it again*, so that retry's `sent` keeps the promise.
//! - Why this and not the store waiting for the router: the writer must not stall group commit on
//!   a network flush, and the store should not know about routing. Why not the connection: REST
//!   sends need it too, and `service::finish` is the one place both pass. The cost is one NATS
//!   flush per commit batch (not per message) on the way to `sent`. In embedded mode none of this
//!   runs: there is no other node, and if the process dies every connection resyncs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parley_core::ids::{ConversationId, Seq};
use parley_router::RouteError;
use tokio::sync::oneshot;

/// The longest a send waits for routing before it is answered `unavailable` (the message is
/// stored; a retry with the same `client_id` returns it and routes it again).
const WAIT: Duration = Duration::from_secs(10);

type Waiter = (Seq, oneshot::Sender<Result<(), RouteError>>);

#[derive(Default)]
struct Entry {
    /// Sends to this conversation between `expect` and the end of their wait.
    interest: usize,
    /// The highest seq fanout has routed (or failed to) while this entry existed.
    routed: Seq,
    /// Seqs whose routing failed, while this entry exists.
    failed: Vec<Seq>,
    waiters: Vec<Waiter>,
}

#[derive(Default)]
pub(crate) struct Routed {
    map: Mutex<HashMap<ConversationId, Entry>>,
}

/// A send's interest in its conversation's routing; dropping it ends the interest.
pub(crate) struct Interest {
    routed: Arc<Routed>,
    conv: ConversationId,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut map = self.routed.lock();
        if let Some(e) = map.get_mut(&self.conv) {
            e.interest -= 1;
            if e.interest == 0 {
                map.remove(&self.conv);
            }
        }
    }
}

impl Routed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationId, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before a send to `conv` is queued: from now on fanout's progress in `conv` is recorded.
    pub(crate) fn expect(self: &Arc<Self>, conv: ConversationId) -> Interest {
        self.lock().entry(conv).or_default().interest += 1;
        Interest { routed: self.clone(), conv }
    }

    /// Fanout routed these messages (in commit order), with this outcome.
    pub(crate) fn done(&self, messages: &[(ConversationId, Seq)], result: &Result<(), RouteError>) {
        let mut map = self.lock();
        for &(conv, seq) in messages {
            let Some(e) = map.get_mut(&conv) else { continue };
            e.routed = e.routed.max(seq);
            if result.is_err() {
                e.failed.push(seq);
            }
            let routed = e.routed;
            let mut i = 0;
            while i < e.waiters.len() {
                if e.waiters[i].0 <= routed {
                    let (seq, tx) = e.waiters.swap_remove(i);
                    let _ = tx.send(outcome(&e.failed, seq, result));
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Waits until fanout has routed `seq` of the interest's conversation.
    pub(crate) async fn wait(&self, interest: &Interest, seq: Seq) -> Result<(), RouteError> {
        let rx = {
            let mut map = self.lock();
            let e = map.entry(interest.conv).or_default();
            if e.routed >= seq {
                return if e.failed.contains(&seq) { Err(unrouted()) } else { Ok(()) };
            }
            let (tx, rx) = oneshot::channel();
            e.waiters.push((seq, tx));
            rx
        };
        match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(unrouted()),
            Err(_) => Err(RouteError::Unavailable("routing timed out".into())),
        }
    }
}

fn outcome(failed: &[Seq], seq: Seq, last: &Result<(), RouteError>) -> Result<(), RouteError> {
    match last {
        Err(e) if failed.contains(&seq) => Err(e.clone()),
        _ if failed.contains(&seq) => Err(unrouted()),
        _ => Ok(()),
    }
}

fn unrouted() -> RouteError {
    RouteError::Unavailable("the message could not be routed to every node".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_its_seq_and_reports_failures() {
        let r = Arc::new(Routed::default());
        let a = r.expect(ConversationId(1));
        let b = r.expect(ConversationId(1));
        r.done(&[(ConversationId(1), Seq(4))], &Ok(()));
        assert!(r.wait(&a, Seq(4)).await.is_ok(), "already routed");
        let r2 = r.clone();
        let waiting = tokio::spawn(async move { r2.wait(&b, Seq(6)).await });
        tokio::task::yield_now().await;
        r.done(&[(ConversationId(1), Seq(5))], &Ok(()));
        r.done(
            &[(ConversationId(2), Seq(9)), (ConversationId(1), Seq(6))],
            &Err(RouteError::Unavailable("down".into())),
        );
        assert!(waiting.await.unwrap().is_err(), "its routing failed");
        drop(a);
        assert!(r.lock().is_empty(), "nothing kept once no send waits");
    }
}
