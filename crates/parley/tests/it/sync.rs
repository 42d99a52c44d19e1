//! Connect-time sync: the backlog is replayed in seq order before `synced`, the delivery cursor
//! moves only by `ack`, and live messages arriving during a replay are neither lost nor
//! reordered.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::*;

/// The `sent` answers of `send_texts(conv, prefix, n)` with their texts, in seq order. (Seq
/// order is the log's order; whether it matches the order of the frames is checked on its own
/// in `delivery::pipelined_sends_are_logged_in_frame_order`.)
fn in_log_order(sent: Vec<Value>, prefix: &str) -> Vec<(Value, String)> {
    let mut v: Vec<(Value, String)> = sent.into_iter().enumerate().map(|(k, a)| (a, format!("{prefix}{k}"))).collect();
    v.sort_by_key(|(a, _)| i(a, "seq"));
    v
}

/// A replayed text message is exactly the one that was sent.
fn assert_same(m: &Value, sent: &Value, text: &str) {
    assert_eq!(m["seq"], sent["seq"], "{m} vs {sent}");
    assert_eq!(m["message_id"], sent["message_id"], "{m} vs {sent}");
    assert_eq!(m["client_id"], sent["client_id"], "{m} vs {sent}");
    assert_eq!(m["body"]["text"], text, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_1000_replayed_in_order_then_synced() {
    let srv = TestServer::start().await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let wa = a.connect_synced().await;
    let sent = in_log_order(wa.send_texts(&ab, "m", 1000).await, "m");
    let first = i(&sent[0].0, "seq");
    assert_eq!(
        sent.iter().map(|(a, _)| i(a, "seq")).collect::<Vec<_>>(),
        (first..first + 1000).collect::<Vec<_>>(),
        "seqs are gap-free"
    );

    let wb = b.connect().await;
    let synced_at = wb.wait_synced(LONG).await;
    let replay = replayed(&wb, &ab, synced_at);
    // The whole log, from the conversation's first entry, in seq order, with nothing else.
    assert_eq!(seqs(&replay), (1..first + 1000).collect::<Vec<_>>());
    let texts: Vec<&Value> = replay.iter().filter(|m| m["kind"] == "text").collect();
    assert_eq!(texts.len(), 1000);
    for (m, (s, text)) in texts.iter().zip(&sent) {
        assert_same(m, s, text);
        assert_eq!(m["sender_id"], a.user_id());
        assert_eq!(m["sender_device_id"], a.device_id.as_str());
    }
    // Nothing more after synced: the replay was the whole backlog.
    wb.barrier().await;
    assert_eq!(wb.messages(&ab).len(), replay.len());
    assert!(
        wb.frames()[1..synced_at].iter().all(|f| f["type"] == "message"),
        "between ready and synced come only messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_cursor_after_partial_ack() {
    let srv = TestServer::start().await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let wa = a.connect_synced().await;
    let sent = in_log_order(wa.send_texts(&ab, "m", 300).await, "m");
    let last = i(&sent[299].0, "seq");

    let wb = b.connect().await;
    let at = wb.wait_synced(LONG).await;
    assert_eq!(seqs(&replayed(&wb, &ab, at)), (1..=last).collect::<Vec<_>>());
    // Acknowledge up to the 120th text message, then a lower seq (cursors only grow).
    let cursor = i(&sent[119].0, "seq");
    wb.send_json(&json!({"type": "ack", "conversation_id": ab, "seq": cursor})).await;
    wb.send_json(&json!({"type": "ack", "conversation_id": ab, "seq": 2})).await;
    wb.barrier().await;
    wb.close().await;

    // The reconnect gets exactly the rest, and again until acknowledged (at least once).
    for _ in 0..2 {
        let wb = b.connect().await;
        let at = wb.wait_synced(LONG).await;
        let replay = replayed(&wb, &ab, at);
        assert_eq!(seqs(&replay), (cursor + 1..=last).collect::<Vec<_>>());
        for (k, m) in replay.iter().enumerate() {
            assert_same(m, &sent[120 + k].0, &sent[120 + k].1);
        }
        wb.barrier().await;
        assert_eq!(wb.messages(&ab).len(), replay.len());
        wb.close().await;
    }

    // Another device of b has its own cursor: it gets everything.
    let b2 = b.user.login().await;
    let w2 = b2.connect().await;
    let at = w2.wait_synced(LONG).await;
    assert_eq!(seqs(&replayed(&w2, &ab, at)), (1..=last).collect::<Vec<_>>());

    // Everything acknowledged: an empty replay.
    let wb = b.connect().await;
    wb.wait_synced(LONG).await;
    wb.send_json(&json!({"type": "ack", "conversation_id": ab, "seq": last})).await;
    wb.barrier().await;
    wb.close().await;
    let wb = b.connect().await;
    let at = wb.wait_synced(LONG).await;
    assert!(replayed(&wb, &ab, at).is_empty(), "{:?}", wb.frames());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_during_replay_are_neither_lost_nor_reordered() {
    const BACKLOG: usize = 1000;
    /// Live sends after the receiver's `synced`.
    const MORE: usize = 20;
    /// A bound on live sends, in case `synced` never comes.
    const MAX_LIVE: usize = 5_000;
    let srv = TestServer::start_with(&["--send-rate-per-sec", "100000", "--send-burst", "100000"]).await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let wa = Arc::new(a.connect_synced().await);
    let filler = "x".repeat(512);
    let frames = (0..BACKLOG).map(|k| Ws::text_frame(&ab, &unique("c"), &format!("old{k} {filler}"))).collect();
    let backlog = wa.pipeline(frames).await;
    assert!(backlog.iter().all(|f| f["type"] == "sent"));

    // The sender keeps sending, one message at a time, while b connects and replays, and
    // stops a little after b has seen `synced`.
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let sender = {
        let (wa, ab) = (wa.clone(), ab.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut after_synced = 0;
            while after_synced < MORE && sent.len() < MAX_LIVE {
                sent.push(wa.send_text(&ab, &format!("live{}", sent.len())).await);
                if *done_rx.borrow() {
                    after_synced += 1;
                }
            }
            sent
        })
    };
    wa.wait_count(|f| f["type"] == "sent", BACKLOG + 20, T).await;
    let wb = b.connect().await;
    let synced_at = wb.wait_synced(LONG).await;
    done_tx.send_replace(true);
    let live = sender.await.expect("sender task");
    assert!(live.len() < MAX_LIVE, "the replay outlasted {MAX_LIVE} live sends");
    wb.wait_count(|f| f["type"] == "message" && f["kind"] == "text", BACKLOG + live.len(), LONG).await;
    wb.barrier().await;

    let mut all_sent: Vec<&Value> = backlog.iter().chain(live.iter()).collect();
    all_sent.sort_by_key(|a| i(a, "seq"));
    let want: Vec<i64> = all_sent.iter().map(|s| i(s, "seq")).collect();
    let got_texts: Vec<Value> = wb.texts(&ab);
    assert_eq!(seqs(&got_texts), want, "exactly the sent messages, in seq order, without gaps or repeats");
    for (m, s) in got_texts.iter().zip(&all_sent) {
        assert_eq!(m["message_id"], s["message_id"]);
    }
    let all = seqs(&wb.messages(&ab));
    assert_eq!(all, (1..=*want.last().unwrap()).collect::<Vec<_>>());

    // The scenario really overlapped: live messages came both in the replay and after it.
    let before_synced = replayed(&wb, &ab, synced_at);
    let live_in_replay =
        before_synced.iter().filter(|m| m["body"]["text"].as_str().is_some_and(|t| t.starts_with("live"))).count();
    assert!(live_in_replay >= 20, "live messages sent before connecting are replayed");
    assert!(before_synced.len() < all.len(), "some live messages arrived after synced");
}
