//! Live delivery: send, receive, ack, read and `receipt` frames; unread counts; several devices
//! per user (the sending device gets `sent` and never its own message back); idempotent sends.

use serde_json::{Value, json};

use crate::harness::*;

fn is_msg(f: &Value, client_id: &str) -> bool {
    f["type"] == "message" && f["client_id"] == client_id
}

fn receipt_of<'a>(user: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |f: &Value| f["type"] == "receipt" && f["user_id"] == user
}

/// The same message as the original `sent`: same conversation, message id and seq.
fn assert_same_sent(reply: &Value, original: &Value) {
    assert_eq!(reply["type"], "sent", "{reply}");
    for f in ["conversation_id", "message_id", "seq", "client_id"] {
        assert_eq!(reply[f], original[f], "{f}: {reply} vs {original}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_receive_ack_read_with_receipts_and_unread_counts() {
    let srv = TestServer::start().await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let b2 = b.user.login().await;
    let ab = a.direct(b.user_id()).await;
    let wa = a.connect_synced().await;
    let wb = b.connect_synced().await;
    let wb2 = b2.connect_synced().await;

    let sent = wa.send_text(&ab, "hello").await;
    let seq = i(&sent, "seq");
    assert_eq!(s(&sent, "conversation_id"), ab);
    assert!(sent["message_id"].is_string() && sent["ts"].is_i64(), "{sent}");
    let cid = s(&sent, "client_id");
    for w in [&wb, &wb2] {
        let m = w.wait_for(|f| is_msg(f, &cid), T).await;
        assert_eq!(m["seq"], sent["seq"]);
        assert_eq!(m["message_id"], sent["message_id"]);
        assert_eq!(m["ts"], sent["ts"]);
        assert_eq!(s(&m, "conversation_id"), ab);
        assert_eq!(s(&m, "sender_id"), a.user_id());
        assert_eq!(s(&m, "sender_device_id"), a.device_id);
        assert_eq!(m["kind"], "text");
        assert_eq!(m["body"], json!({"text": "hello"}));
    }
    assert_eq!(i(&b.conversation(&ab).await, "unread_count"), 1);
    assert_eq!(i(&a.conversation(&ab).await, "unread_count"), 0);

    // b acknowledges: a, and b's other device, learn that b has it.
    wb.send_json(&json!({"type": "ack", "conversation_id": ab, "seq": seq})).await;
    let b_id = b.user_id();
    for w in [&wa, &wb2] {
        let r = w.wait_for(|f| receipt_of(b_id)(f) && f["delivered_seq"].as_i64() >= Some(seq), T).await;
        assert_eq!(s(&r, "conversation_id"), ab);
        assert!(i(&r, "read_seq") < seq, "not read yet: {r}");
    }
    assert_eq!(i(&b.conversation(&ab).await, "unread_count"), 1, "delivered is not read");

    // b reads it.
    wb.send_json(&json!({"type": "read", "conversation_id": ab, "seq": seq})).await;
    for w in [&wa, &wb2] {
        let r = w.wait_for(|f| receipt_of(b_id)(f) && f["read_seq"].as_i64() >= Some(seq), T).await;
        assert!(i(&r, "delivered_seq") >= seq, "read implies delivered: {r}");
    }
    wb.barrier().await;
    let view = b.conversation(&ab).await;
    assert_eq!(i(&view, "unread_count"), 0);
    assert_eq!(i(&view, "read_seq"), seq);
    assert_eq!(i(&view, "delivered_seq"), seq);
    let a_view = a.conversation(&ab).await;
    let b_member =
        a_view["members"].as_array().unwrap().iter().find(|m| m["user_id"] == b_id).cloned().expect("b is a member");
    assert_eq!(i(&b_member, "read_seq"), seq);

    // Pointers only grow.
    wb.send_json(&json!({"type": "read", "conversation_id": ab, "seq": 1})).await;
    wb.send_json(&json!({"type": "ack", "conversation_id": ab, "seq": 1})).await;
    wb.barrier().await;
    let view = b.conversation(&ab).await;
    assert_eq!((i(&view, "read_seq"), i(&view, "delivered_seq")), (seq, seq));

    // Unread counts follow reads; one's own messages never count.
    let s2 = wa.send_text(&ab, "two").await;
    let s3 = wa.send_text(&ab, "three").await;
    wb.wait_for(|f| is_msg(f, &s(&s3, "client_id")), T).await;
    assert_eq!(i(&b.conversation(&ab).await, "unread_count"), 2);
    wb.send_json(&json!({"type": "read", "conversation_id": ab, "seq": s2["seq"]})).await;
    wb.barrier().await;
    let view = b.conversation(&ab).await;
    assert_eq!(i(&view, "unread_count"), 1);
    assert_eq!(view["last_message"]["body"]["text"], "three");
    // b's other device sees the same count (unread is per user).
    assert_eq!(i(&b2.conversation(&ab).await, "unread_count"), 1);
    wb2.wait_for(|f| receipt_of(b_id)(f) && f["read_seq"].as_i64() == s2["seq"].as_i64(), T).await;

    let back = wb.send_text(&ab, "reply").await;
    wa.wait_for(|f| is_msg(f, &s(&back, "client_id")), T).await;
    assert_eq!(i(&a.conversation(&ab).await, "unread_count"), 1);
    assert_eq!(i(&b.conversation(&ab).await, "unread_count"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_devices_get_the_message_the_sender_only_sent() {
    let srv = TestServer::start().await;
    let v = srv.logins(2).await;
    let (a1, b) = (&v[0], &v[1]);
    let a2 = a1.user.login().await;
    let ab = a1.direct(b.user_id()).await;
    let w1 = a1.connect_synced().await;
    let w2 = a2.connect_synced().await;
    let wb = b.connect_synced().await;

    let sent = w1.send_text(&ab, "from a1").await;
    let cid = s(&sent, "client_id");
    for w in [&w2, &wb] {
        let m = w.wait_for(|f| is_msg(f, &cid), T).await;
        assert_eq!(s(&m, "sender_device_id"), a1.device_id);
        assert_eq!(m["seq"], sent["seq"]);
    }
    // The same device over REST: no echo on its WebSocket either.
    let rest_cid = unique("rest");
    let (status, _) = a1.post_text(&ab, &rest_cid, "a1 over rest").await;
    assert_eq!(status, 201);
    w2.wait_for(|f| is_msg(f, &rest_cid), T).await;
    // A later message from b, delivered in log order, proves nothing else is on its way.
    let fence = wb.send_text(&ab, "from b").await;
    let fence_cid = s(&fence, "client_id");
    w1.wait_for(|f| is_msg(f, &fence_cid), T).await;
    w2.wait_for(|f| is_msg(f, &fence_cid), T).await;
    let own: Vec<Value> = w1
        .frames()
        .into_iter()
        .filter(|f| f["type"] == "message" && f["sender_device_id"] == a1.device_id.as_str())
        .collect();
    assert!(own.is_empty(), "the sending device got its own messages: {own:?}");
    let answers: Vec<Value> = w1.frames().into_iter().filter(|f| f["ref"] == sent["ref"]).collect();
    assert_eq!(answers.len(), 1, "one answer to one send: {answers:?}");
    assert_eq!(w2.texts(&ab).len(), 3, "{:?}", w2.messages(&ab));
    w1.close().await;
    w2.close().await;

    // Not on replay either (nothing was acknowledged, so the replay is the whole log).
    let w1 = a1.connect().await;
    let at = w1.wait_synced(LONG).await;
    let replay: Vec<Value> = w1.frames()[..at].iter().filter(|f| f["type"] == "message").cloned().collect();
    assert!(replay.iter().all(|m| m["sender_device_id"] != a1.device_id.as_str()), "own messages replayed: {replay:?}");
    let texts: Vec<&Value> = replay.iter().filter(|m| m["kind"] == "text").collect();
    assert_eq!(texts.len(), 1, "{replay:?}");
    assert_eq!(texts[0]["client_id"], fence_cid.as_str());
    assert!(replay.iter().any(|m| m["seq"] == 1), "the log's first entry is replayed");

    // a's other device replays a1's messages too.
    let w2 = a2.connect().await;
    let at = w2.wait_synced(LONG).await;
    let texts: Vec<String> = w2.frames()[..at]
        .iter()
        .filter(|f| f["type"] == "message" && f["kind"] == "text")
        .map(|m| s(m, "client_id"))
        .collect();
    assert_eq!(texts, vec![cid, rest_cid, fence_cid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_send_on_every_path_and_after_restart() {
    let mut srv = TestServer::start().await;
    let v = srv.logins(2).await;
    let (a1, b) = (&v[0], &v[1]);
    let a2 = a1.user.login().await;
    let ab = a1.direct(b.user_id()).await;
    let aa = a1.direct(a1.user_id()).await;
    let w1 = a1.connect_synced().await;
    let w1b = a1.connect_synced().await;
    let w2 = a2.connect_synced().await;
    let wb = b.connect_synced().await;

    let cid = unique("idem");
    let orig = w1.send_text_with(&ab, &cid, "original").await;
    // Same connection, another connection of the same device, another device, another
    // conversation and body: always the original.
    assert_same_sent(&w1.send_text_with(&ab, &cid, "original").await, &orig);
    assert_same_sent(&w1b.send_text_with(&ab, &cid, "original").await, &orig);
    assert_same_sent(&w2.send_text_with(&ab, &cid, "original").await, &orig);
    assert_same_sent(&w1.send_text_with(&aa, &cid, "something else").await, &orig);
    // Pipelined repeats on one connection.
    let repeats = w2.pipeline((0..5).map(|_| Ws::text_frame(&ab, &cid, "again")).collect()).await;
    for r in &repeats {
        assert_same_sent(r, &orig);
    }
    let (status, m) = a2.post_text(&aa, &cid, "over rest").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["seq"], orig["seq"]);
    assert_eq!(m["message_id"], orig["message_id"]);
    assert_eq!(s(&m, "conversation_id"), ab);
    assert_eq!(m["body"]["text"], "original");

    // Delivered once per device: a later message, delivered in log order, fences the check.
    let fence = w1.send_text(&ab, "fence").await;
    let fence_cid = s(&fence, "client_id");
    for w in [&wb, &w2] {
        w.wait_for(|f| is_msg(f, &fence_cid), T).await;
        let copies: Vec<Value> = w.frames().into_iter().filter(|f| is_msg(f, &cid)).collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(copies[0]["body"]["text"], "original");
    }
    let fence_b = wb.send_text(&ab, "fence from b").await;
    for w in [&w1, &w1b] {
        w.wait_for(|f| is_msg(f, &s(&fence_b, "client_id")), T).await;
        assert!(!w.frames().iter().any(|f| is_msg(f, &cid)), "the sending device got its own message");
    }
    let in_log = |h: Vec<Value>| h.into_iter().filter(|m| m["client_id"] == cid.as_str()).count();
    assert_eq!(in_log(a1.history(&ab).await), 1);
    assert_eq!(in_log(a1.history(&aa).await), 0);

    // After a crash and restart: still the original, still delivered once.
    drop((w1, w1b, w2, wb));
    srv.kill9().await;
    srv.restart().await;
    let w1 = a1.connect_synced().await;
    let wb = b.connect_synced().await;
    let replayed = wb.frames().iter().filter(|f| is_msg(f, &cid)).count();
    assert!(replayed <= 1);
    assert_same_sent(&w1.send_text_with(&ab, &cid, "after restart").await, &orig);
    let (status, m) = a2.post_text(&ab, &cid, "after restart, rest").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["message_id"], orig["message_id"]);
    let fence2 = w1.send_text(&ab, "fence2").await;
    assert_eq!(i(&fence2, "seq"), i(&fence_b, "seq") + 1, "no seq was used by a repeat");
    wb.wait_for(|f| is_msg(f, &s(&fence2, "client_id")), T).await;
    assert_eq!(
        wb.frames().iter().filter(|f| is_msg(f, &cid)).count(),
        replayed,
        "a repeat after the restart was delivered again"
    );
    assert_eq!(in_log(a1.history(&ab).await), 1);
}

/// "Frames from one connection are processed in order": pipelined sends are logged in the
/// order they were sent, so on each connection the seqs increase with the frames. (A mix-up
/// shows only now and then, so several connections pipeline at once, for a few rounds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_logged_in_frame_order() {
    const CONNS: usize = 4;
    const ROUNDS: usize = 5;
    const N: usize = 2500;
    let srv = TestServer::start_with(&["--send-rate-per-sec", "100000", "--send-burst", "100000"]).await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        conns.push(std::sync::Arc::new(a.user.login().await.connect_synced().await));
    }
    for round in 0..ROUNDS {
        let tasks: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(c, ws)| {
                let (ws, ab) = (ws.clone(), ab.clone());
                tokio::spawn(async move { ws.send_texts(&ab, &format!("r{round}c{c}-"), N).await })
            })
            .collect();
        for (c, task) in tasks.into_iter().enumerate() {
            let sent = task.await.expect("sender task");
            let seqs: Vec<i64> = sent.iter().map(|f| i(f, "seq")).collect();
            let mixed: Vec<(usize, i64, i64)> = seqs
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w[1] <= w[0])
                .map(|(k, w)| (k + 1, w[0], w[1]))
                .take(5)
                .collect();
            assert!(
                mixed.is_empty(),
                "round {round}, connection {c}: a later frame got a lower seq \
                 (frame, previous frame's seq, its seq): {mixed:?}"
            );
        }
    }
    // The log agrees: each connection's texts appear in the order they were sent.
    let history = a.history(&ab).await;
    for c in 0..CONNS {
        for round in 0..ROUNDS {
            let prefix = format!("r{round}c{c}-");
            let texts: Vec<String> = history
                .iter()
                .filter_map(|m| m["body"]["text"].as_str())
                .filter(|t| t.starts_with(&prefix))
                .map(str::to_owned)
                .collect();
            let want: Vec<String> = (0..N).map(|k| format!("{prefix}{k}")).collect();
            assert!(texts == want, "{prefix}: the log has them in another order");
        }
    }
}
