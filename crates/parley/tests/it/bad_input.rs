//! What the WebSocket does with bad input: malformed and unknown frames get an `error` (with
//! the `ref` echoed) and the connection stays open; oversized frames; non-members; bad or
//! missing authentication; revoked devices; the send rate limit; and a client too slow to read.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_connection_stays_open() {
    let srv = TestServer::start().await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let ws = a.connect_synced().await;

    // Frames from which no ref can be read: an error without one.
    for raw in [
        "{not json",
        "[1, 2, 3]",
        "42",
        "\"ping\"",
        "",
        r#"{"type": "ping", "ref": 7}"#,
        &format!(r#"{{"type": "ping", "ref": "{}"}}"#, "r".repeat(65)),
    ] {
        let start = ws.len();
        ws.send_text_raw(raw).await;
        let e = ws.wait_for_from(start, |f| f["type"] == "error", T).await;
        assert_eq!(e["code"], "invalid_frame", "{raw:?}: {e}");
        assert!(e["message"].is_string());
        ws.barrier().await;
    }

    // Frames with a readable ref: the error carries it.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"type": "dance"}), "unknown_type"),
        (json!({"type": "SEND"}), "unknown_type"),
        (json!({"no_type": true}), "invalid_frame"),
        (json!({"type": 5}), "invalid_frame"),
        (json!({"type": "ack", "conversation_id": ab}), "invalid_frame"),
        (json!({"type": "ack", "seq": 1}), "invalid_frame"),
        (json!({"type": "ack", "conversation_id": ab, "seq": "1"}), "invalid_frame"),
        (json!({"type": "read", "conversation_id": 5, "seq": 1}), "invalid_frame"),
        (json!({"type": "auth"}), "invalid_frame"),
        (json!({"type": "send", "conversation_id": ab, "kind": "text", "body": {"text": "x"}}), "invalid_frame"),
        (
            json!({"type": "send", "conversation_id": ab, "client_id": 5, "kind": "text", "body": {"text": "x"}}),
            "invalid_frame",
        ),
        (json!({"type": "send", "conversation_id": ab, "client_id": "c", "kind": "text"}), "invalid_frame"),
        (json!({"type": "typing", "conversation_id": ab, "active": "yes"}), "invalid_frame"),
        (json!({"type": "presence_subscribe", "user_ids": "x"}), "invalid_frame"),
        // Well-formed frames with bad content.
        (
            json!({"type": "send", "conversation_id": ab, "client_id": unique("c"), "kind": "text", "body": {"text": ""}}),
            "bad_request",
        ),
        (
            json!({"type": "send", "conversation_id": ab, "client_id": unique("c"), "kind": "text", "body": {"text": 5}}),
            "bad_request",
        ),
        (
            json!({"type": "send", "conversation_id": ab, "client_id": unique("c"), "kind": "text", "body": "hi"}),
            "bad_request",
        ),
        (
            json!({"type": "send", "conversation_id": ab, "client_id": unique("c"), "kind": "shout", "body": {"text": "x"}}),
            "bad_request",
        ),
        (
            json!({"type": "send", "conversation_id": ab, "client_id": "", "kind": "text", "body": {"text": "x"}}),
            "bad_request",
        ),
        (
            json!({"type": "send", "conversation_id": ab, "client_id": unique("c"), "kind": "text", "body": {"text": "x".repeat(16_385)}}),
            "payload_too_large",
        ),
        (
            json!({"type": "send", "conversation_id": ab, "client_id": unique("c"), "kind": "text", "body": {"text": "é".repeat(8193)}}),
            "payload_too_large",
        ),
    ];
    for (mut frame, code) in cases {
        let r#ref = unique("ref");
        frame["ref"] = Value::String(r#ref.clone());
        let e = ws.expect_error(frame, code).await;
        assert_eq!(s(&e, "ref"), r#ref);
        ws.barrier().await;
    }
    // Authenticating twice is refused, and changes nothing.
    let e = ws.request(json!({"type": "auth", "token": a.token})).await;
    assert_eq!(e["type"], "error", "{e}");
    ws.barrier().await;

    // A 100 KB frame: too large, but the connection stays open.
    let start = ws.len();
    let big = Ws::text_frame(&ab, &unique("c"), &"x".repeat(100 * 1024));
    ws.send_json(&big).await;
    let e = ws.wait_for_from(start, |f| f["type"] == "error", T).await;
    assert_eq!(e["code"], "payload_too_large", "{e}");
    ws.barrier().await;

    // A binary frame.
    let start = ws.len();
    ws.send_binary(br#"{"type":"ping"}"#.to_vec()).await;
    let e = ws.wait_for_from(start, |f| f["type"] == "error", T).await;
    assert_eq!(e["code"], "invalid_frame", "{e}");
    ws.barrier().await;

    // After all that the connection works, and none of it was written.
    let ok = ws.send_text(&ab, &"y".repeat(16_384)).await;
    let wb = b.connect_synced().await;
    wb.barrier().await;
    let texts = a.history(&ab).await.into_iter().filter(|m| m["kind"] == "text").collect::<Vec<_>>();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0]["message_id"], ok["message_id"]);
    assert!(ws.closed().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_member_for_send_ack_and_read() {
    let srv = TestServer::start().await;
    let v = srv.logins(3).await;
    let (a, c, d) = (&v[0], &v[1], &v[2]);
    let cd = c.direct(d.user_id()).await;
    let ws = a.connect_synced().await;
    for conv in [cd.as_str(), "999999999", "garbage"] {
        for frame in [
            json!({"type": "send", "conversation_id": conv, "client_id": unique("c"), "kind": "text", "body": {"text": "intruder"}}),
            json!({"type": "ack", "conversation_id": conv, "seq": 1}),
            json!({"type": "read", "conversation_id": conv, "seq": 1}),
        ] {
            let e = ws.expect_error(frame, "not_member").await;
            assert!(e["ref"].is_string(), "the ref is echoed: {e}");
        }
        ws.barrier().await;
    }
    let history = c.history(&cd).await;
    assert!(history.iter().all(|m| m["kind"] != "text"), "{history:?}");
    let view = c.conversation(&cd).await;
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m["user_id"] != a.user_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2mb_frame_closes_1009() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let aa = a.direct(a.user_id()).await;
    let ws = a.connect_synced().await;
    let huge = Ws::text_frame(&aa, &unique("c"), &"x".repeat(2 * 1024 * 1024));
    // The server may stop reading mid-frame, so the send itself may fail.
    let _ = ws.try_send_json(&huge).await;
    assert_eq!(ws.closed_with().await, Some(1009), "{:?}", ws.closed());
    // The server is fine, and wrote nothing.
    let ws = a.connect_synced().await;
    ws.barrier().await;
    assert!(a.history(&aa).await.iter().all(|m| m["kind"] != "text"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_or_first_frame_not_auth_closes_4001() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let url = srv.ws_url();
    let revoked = a.user.login().await;
    let r = revoked.delete("/v1/sessions/current").await;
    assert_eq!(r.status, 204);

    // A token that is wrong, empty, revoked or not a string.
    for auth in [
        json!({"type": "auth", "token": "not-a-token", "ref": "a1"}),
        json!({"type": "auth", "token": "", "ref": "a1"}),
        json!({"type": "auth", "token": revoked.token, "ref": "a1"}),
        json!({"type": "auth", "token": "x".repeat(10_000), "ref": "a1"}),
    ] {
        let ws = Ws::connect(&url).await;
        ws.send_json(&auth).await;
        let e = ws.wait_for(|f| f["type"] == "error", T).await;
        assert_eq!(e["code"], "unauthorized", "{e}");
        assert_eq!(ws.closed_with().await, Some(4001));
        assert!(!ws.frames().iter().any(|f| f["type"] == "ready"));
    }
    // A first frame that is not auth.
    for first in [
        json!({"type": "ping", "ref": "p"}),
        json!({"type": "send", "conversation_id": "1", "client_id": "c", "kind": "text", "body": {"text": "x"}}),
        json!({"type": "auth", "token": 5}),
        json!({"token": a.token}),
    ] {
        let ws = Ws::connect(&url).await;
        ws.send_json(&first).await;
        assert_eq!(ws.closed_with().await, Some(4001), "{first}: {:?}", ws.frames());
        assert!(!ws.frames().iter().any(|f| f["type"] == "ready" || f["type"] == "pong"), "{first}: {:?}", ws.frames());
    }
    let ws = Ws::connect(&url).await;
    ws.send_text_raw("{not json").await;
    assert_eq!(ws.closed_with().await, Some(4001));
    // The good token still works.
    a.connect_synced().await.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_timeout_closes_4002() {
    let srv = TestServer::start_with(&["--auth-timeout-ms", "300"]).await;
    let a = srv.login().await;
    let authed = a.connect_synced().await;
    let t0 = Instant::now();
    let silent = Ws::connect(&srv.ws_url()).await;
    assert_eq!(silent.closed_with().await, Some(4002), "{:?}", silent.closed());
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(250), "closed after {took:?}, before the 300 ms timeout");
    // A connection that authenticated in time is not affected.
    authed.barrier().await;
    assert!(authed.closed().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_or_device_delete_closes_4010_and_revokes_the_token() {
    let srv = TestServer::start().await;
    let u = srv.user().await;
    let d1 = u.login().await;
    let d2 = u.login().await;
    let d3 = u.login().await;
    let w1 = d1.connect_synced().await;
    let w2 = d2.connect_synced().await;
    let w3 = d3.connect_synced().await;
    let w3b = d3.connect_synced().await;

    // Logout of d1 closes d1's socket.
    let r = d1.delete("/v1/sessions/current").await;
    assert_eq!(r.status, 204);
    assert_eq!(w1.closed_with().await, Some(4010), "{:?}", w1.closed());
    // d2 removes d3: both of d3's sockets close.
    let r = d2.delete(&format!("/v1/devices/{}", d3.device_id)).await;
    assert_eq!(r.status, 204);
    for w in [&w3, &w3b] {
        assert_eq!(w.closed_with().await, Some(4010), "{:?}", w.closed());
    }
    // The other device is untouched.
    w2.barrier().await;
    assert!(w2.closed().is_none());

    // Revoked tokens no longer work, on REST or the WebSocket.
    for d in [&d1, &d3] {
        d.get("/v1/me").await.expect_error(401, "unauthorized");
        let ws = Ws::connect(&srv.ws_url()).await;
        ws.send_json(&json!({"type": "auth", "token": d.token})).await;
        let e = ws.wait_for(|f| f["type"] == "error", T).await;
        assert_eq!(e["code"], "unauthorized");
        assert_eq!(ws.closed_with().await, Some(4001));
    }
    assert_eq!(d2.get("/v1/me").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_rate_limit_over_websocket_and_rest() {
    let srv = TestServer::start_with(&["--send-rate-per-sec", "1", "--send-burst", "3"]).await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let ws = a.connect_synced().await;
    for k in 0..3 {
        ws.send_text(&ab, &format!("burst {k}")).await;
    }
    let limited_cid = unique("limited");
    let e = ws.expect_error(Ws::text_frame(&ab, &limited_cid, "one too many"), "rate_limited").await;
    let wait = e["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(wait > 0 && wait <= 1000, "retry_after_ms {wait}");
    ws.barrier().await;

    // REST shares the device's allowance. (A machine stalled for a second would have
    // refilled one token in between: one success is tolerated, then it must be refused.)
    let mut refused = None;
    for _ in 0..2 {
        let resp = a
            .post(
                &format!("/v1/conversations/{ab}/messages"),
                &json!({"client_id": unique("c"), "kind": "text", "body": {"text": "rest"}}),
            )
            .await;
        if resp.status != 201 {
            refused = Some(resp);
            break;
        }
    }
    let resp = refused.expect("REST sends are rate limited too");
    resp.expect_error(429, "rate_limited");
    let wait = resp.body["error"]["retry_after_ms"].as_u64().expect("retry_after_ms in the error object");
    assert!(wait > 0, "{}", resp.body);
    // A refused send wrote nothing.
    let history = a.history(&ab).await;
    assert!(history.iter().all(|m| m["client_id"] != limited_cid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_closed_4009_then_replayed_everything() {
    const N: usize = 600;
    let srv =
        TestServer::start_with(&["--outbound-queue", "8", "--send-rate-per-sec", "100000", "--send-burst", "100000"])
            .await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let slow = b.connect_synced().await;
    slow.pause_reading();

    // The sender posts over REST, four at a time, so that only the receiver has a socket.
    let filler = "z".repeat(16 * 1024 - 16);
    let posters: Vec<_> = (0..4)
        .map(|p| {
            let (a, ab, filler) = (a.clone(), ab.clone(), filler.clone());
            tokio::spawn(async move {
                let mut posted = Vec::new();
                for k in 0..N / 4 {
                    let (status, m) = a.post_text(&ab, &unique("c"), &format!("{p}-{k:04} {filler}")).await;
                    assert_eq!(status, 201, "{m}");
                    posted.push(m);
                }
                posted
            })
        })
        .collect();
    let mut posted = Vec::new();
    for p in posters {
        posted.extend(p.await.expect("poster task"));
    }
    posted.sort_by_key(|m| i(m, "seq"));

    // Reading again, the slow client finds it was dropped as too slow.
    slow.resume_reading();
    assert_eq!(slow.closed_with().await, Some(4009), "{:?}", slow.closed());
    assert!(slow.texts(&ab).len() < N, "it cannot have kept up");

    // Reconnecting, it gets every message by replay, in order.
    let again = b.connect().await;
    let got = again.wait_count(|f| f["type"] == "message" && f["kind"] == "text", N, LONG).await;
    again.wait_synced(T).await;
    let ids = |ms: &[Value]| -> Vec<(i64, String)> { ms.iter().map(|m| (i(m, "seq"), s(m, "message_id"))).collect() };
    assert_eq!(ids(&got), ids(&posted));
}

/// A connection that reads everything promptly is not "too slow", whatever it sends: its own
/// messages are never written to it, so they must not count against its outbound queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_keeps_up_is_not_closed_as_too_slow() {
    const N: usize = 600;
    let srv =
        TestServer::start_with(&["--outbound-queue", "8", "--send-rate-per-sec", "100000", "--send-burst", "100000"])
            .await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let ab = a.direct(b.user_id()).await;
    let wa = a.connect_synced().await;
    let mut answered = 0;
    for round in 0..N / 50 {
        // Fifty pipelined sends at a time, every answer read before the next fifty.
        let frames = (0..50).map(|k| Ws::text_frame(&ab, &unique("c"), &format!("{round}-{k}"))).collect::<Vec<_>>();
        for f in &frames {
            if let Err(e) = wa.try_send_json(f).await {
                panic!("after {answered} answers: {e}; closed {:?}", wa.closed());
            }
        }
        let start = answered;
        answered = wa
            .try_wait_count(|f| f["type"] == "sent", start + 50, T)
            .await
            .unwrap_or_else(|e| panic!("after {start} answers: {e}"))
            .len();
    }
    wa.barrier().await;
    assert!(wa.closed().is_none(), "{:?}", wa.closed());
}
