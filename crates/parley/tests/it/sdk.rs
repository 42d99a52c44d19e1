//! The Rust SDK against the real server: what its users rely on (receipts, sync, retry with the
//! same client_id across a crash, reconnect with resync and de-duplication).

use std::time::Duration;

use parley_client::{ConnectOptions, Connection, Event};
use parley_proto::Id;
use tokio::sync::mpsc::Receiver;

use crate::harness::TestServer;

const WAIT: Duration = Duration::from_secs(20);

/// The next event matching `pred`, skipping others; fails after [`WAIT`].
async fn next_matching(events: &mut Receiver<Event>, mut pred: impl FnMut(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.recv().await.expect("event stream ended");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

fn quick() -> ConnectOptions {
    ConnectOptions {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_receive_and_delivery_receipt_through_the_sdk() {
    let srv = TestServer::start().await;
    let (a, b) = (srv.login().await, srv.login().await);
    let conv = Id::parse(&a.direct(b.user_id()).await);
    let (ca, mut ea) = Connection::connect(&srv.api().base, &a.token, quick()).await.unwrap();
    let (_cb, mut eb) = Connection::connect(&srv.api().base, &b.token, quick()).await.unwrap();
    next_matching(&mut eb, |e| matches!(e, Event::Synced)).await;
    let sent = ca.send_text(conv, "hello through the sdk").await.unwrap();
    let Event::Message(m) = next_matching(&mut eb, |e| matches!(e, Event::Message(m) if m.kind == "text")).await else {
        unreachable!()
    };
    assert_eq!((m.seq, m.message_id), (sent.seq, sent.message_id));
    // The SDK acknowledges what it hands over, so the sender sees it delivered.
    next_matching(&mut ea, |e| matches!(e, Event::Receipt(r) if r.delivered_seq >= sent.seq)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_during_a_crash_is_retried_with_its_client_id_and_stored_once() {
    let mut srv = TestServer::start().await;
    let (a, b) = (srv.login().await, srv.login().await);
    let conv_s = a.direct(b.user_id()).await;
    let conv = Id::parse(&conv_s);
    let (ca, mut ea) = Connection::connect(&srv.api().base, &a.token, quick()).await.unwrap();
    let (cb, mut eb) = Connection::connect(&srv.api().base, &b.token, quick()).await.unwrap();
    let before = ca.send_text(conv, "before the crash").await.unwrap();

    srv.kill9().await;
    next_matching(&mut ea, |e| matches!(e, Event::Disconnected { .. })).await;
    // Issued while the server is down: the SDK holds it and resends after reconnecting.
    let pending = tokio::spawn({
        let ca = ca.clone();
        async move { ca.send_with_client_id(conv, "retry-me", "text", serde_json::json!({"text": "during"})).await }
    });
    srv.restart().await;
    let during = pending.await.unwrap().expect("the retried send succeeds");
    assert_eq!(during.seq, before.seq + 1);
    // The same client_id again, as an app retrying after its own crash would: the original.
    let again = ca.send_with_client_id(conv, "retry-me", "text", serde_json::json!({"text": "other"})).await.unwrap();
    assert_eq!((again.seq, again.message_id), (during.seq, during.message_id));

    // b's SDK reconnected too; it sees each message once, in order.
    let mut texts = Vec::new();
    while texts.len() < 2 {
        if let Event::Message(m) = next_matching(&mut eb, |e| matches!(e, Event::Message(m) if m.kind == "text")).await
        {
            texts.push(m.seq);
        }
    }
    assert_eq!(texts, vec![before.seq, during.seq]);
    cb.ping().await.unwrap();
    let history = a.history(&conv_s).await;
    let stored: Vec<i64> = history.iter().filter(|m| m["kind"] == "text").map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(stored, vec![before.seq, during.seq], "exactly one copy of each");
}
