//! The server side of end-to-end encryption against the real binary, with made-up key
//! material (the server never reads it): the key directory over REST (rules, conflicts, claims
//! racing each other), device lists and `device_list_changed`, `keys_low`, the to-device queue
//! over the WebSocket (order, idempotency, acknowledgement, survival of `kill -9`), and encrypted
//! conversations with `device_epoch` and `stale_devices`. The cryptography itself is tested with
//! real Olm and Megolm in `e2ee.rs`.

use serde_json::{Value, json};

use crate::harness::*;

fn identity(tag: &str) -> Value {
    json!({"algorithm": "olm.v1", "keys": {"curve25519": format!("cv-{tag}"), "ed25519": format!("ed-{tag}")}})
}

fn keys(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"key_id": format!("{prefix}{i:03}"), "key": format!("otk-{prefix}-{i}")})).collect()
}

async fn publish(d: &Device, tag: &str, n: usize) -> Value {
    d.api()
        .put("/v1/keys", &json!({"identity": identity(tag), "one_time_keys": keys(tag, n), "fallback_key": {"key_id": "fb", "key": format!("fb-{tag}")}}), Some(&d.token))
        .await
        .expect(200)
}

#[tokio::test]
async fn the_key_directory_hands_out_each_key_once() {
    let srv = TestServer::start().await;
    let (a, b, stranger) = (srv.login().await, srv.login().await, srv.login().await);
    a.direct(b.user_id()).await;
    assert_eq!(publish(&b, "b", 20).await["one_time_key_count"], 20);
    // Idempotent: the same upload again changes nothing; real conflicts are 409.
    assert_eq!(publish(&b, "b", 20).await["one_time_key_count"], 20);
    let put = |body: Value| {
        let (api, token) = (b.api().clone(), b.token.clone());
        async move { api.put("/v1/keys", &body, Some(&token)).await }
    };
    put(json!({"identity": identity("other")})).await.expect_error(409, "conflict");
    put(json!({"one_time_keys": [{"key_id": "b000", "key": "different"}]})).await.expect_error(409, "conflict");
    put(json!({"one_time_keys": keys("x", 101)})).await.expect_error(400, "bad_request");
    put(json!({"identity": "not an object"})).await.expect_error(400, "bad_request");
    put(json!({"one_time_keys": [{"key_id": "big", "key": "k".repeat(5000)}]})).await.expect_error(400, "bad_request");
    for i in 0..4 {
        put(json!({"one_time_keys": keys(&format!("y{i}"), 100)})).await.expect(200);
    }
    let r = put(json!({"one_time_keys": keys("z", 100)})).await;
    r.expect_error(400, "bad_request");
    let count = b.get("/v1/keys/count").await.expect(200);
    assert_eq!((count["one_time_key_count"].as_u64(), count["fallback_key"].as_bool()), (Some(420), Some(true)));

    // Device lists: the user and those who share a conversation; a stranger gets 404.
    let list = a.get(&format!("/v1/users/{}/devices", b.user_id())).await.expect(200);
    assert_eq!(list["devices"][0]["device_id"], b.device_id.as_str());
    assert_eq!(list["devices"][0]["identity"], identity("b"));
    stranger.get(&format!("/v1/users/{}/devices", b.user_id())).await.expect_error(404, "not_found");
    stranger.get("/v1/users/424242/devices").await.expect_error(404, "not_found");

    // Fifty claims at once: every one-time key once, and never the same twice.
    let claim = json!({"devices": [{"user_id": b.user_id(), "device_id": b.device_id}]});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (api, token, claim) = (a.api().clone(), a.token.clone(), claim.clone());
        tasks.push(tokio::spawn(async move { api.post("/v1/keys/claim", &claim, Some(&token)).await.expect(200) }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        let d = &r["devices"][0];
        assert_eq!(d["fallback"], false);
        assert_eq!(d["identity"], identity("b"));
        ids.push(d["one_time_key"]["key_id"].as_str().unwrap().to_owned());
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a one-time key was handed out twice");
    assert_eq!(b.get("/v1/keys/count").await.expect(200)["one_time_key_count"], 370);
    // A stranger's claim leaves the device out.
    let r = stranger.post("/v1/keys/claim", &claim).await.expect(200);
    assert_eq!(r["devices"], json!([]));
    stranger.post("/v1/keys/claim", &json!({"devices": []})).await.expect_error(400, "bad_request");
}

#[tokio::test]
async fn exhausted_keys_fall_back_and_say_so() {
    let srv = TestServer::start().await;
    let (a, b) = (srv.login().await, srv.login().await);
    a.direct(b.user_id()).await;
    publish(&b, "b", 10).await;
    let bws = b.connect_synced().await;
    let claim = json!({"devices": [{"user_id": b.user_id(), "device_id": b.device_id}]});
    a.post("/v1/keys/claim", &claim).await.expect(200);
    let low = bws.wait_for(|f| f["type"] == "keys_low", T).await;
    assert_eq!(low["one_time_key_count"], 9);
    for _ in 0..9 {
        a.post("/v1/keys/claim", &claim).await.expect(200);
    }
    let r = a.post("/v1/keys/claim", &claim).await.expect(200);
    assert_eq!(r["devices"][0]["fallback"], true);
    assert_eq!(r["devices"][0]["one_time_key"]["key_id"], "fb");
    // On its next connect the device hears it again, right after `ready`.
    let again = b.connect().await;
    let frames = again.wait_count(|f| matches!(f["type"].as_str(), Some("ready" | "keys_low")), 2, T).await;
    assert_eq!(frames[1]["one_time_key_count"], 0);
}

#[tokio::test]
async fn device_lists_change_and_everyone_sharing_a_conversation_hears() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let b_user = srv.api().user().await;
    let b = b_user.login().await;
    let stranger = srv.login().await;
    a.direct(b.user_id()).await;
    let aws = a.connect_synced().await;
    let sws = stranger.connect_synced().await;
    let v1 = a.get(&format!("/v1/users/{}/devices", b.user_id())).await.expect(200)["list_version"].as_i64().unwrap();
    let b2 = b_user.login_as("laptop").await;
    let f = aws.wait_for(|f| f["type"] == "device_list_changed", T).await;
    assert_eq!(f["user_id"], b.user_id());
    let v2 = f["list_version"].as_i64().unwrap();
    assert!(v2 > v1);
    publish(&b2, "b2", 1).await;
    let f = aws
        .wait_for_from(
            aws.len().saturating_sub(1),
            |f| f["type"] == "device_list_changed" && f["list_version"].as_i64() > Some(v2),
            T,
        )
        .await;
    let v3 = f["list_version"].as_i64().unwrap();
    b2.delete(&format!("/v1/devices/{}", b2.device_id)).await;
    aws.wait_for(|f| f["type"] == "device_list_changed" && f["list_version"].as_i64() > Some(v3), T).await;
    let list = a.get(&format!("/v1/users/{}/devices", b.user_id())).await.expect(200);
    assert_eq!(list["devices"].as_array().unwrap().len(), 1);
    // Someone who shares nothing heard none of it.
    sws.send_json(&json!({"type": "ping", "ref": "p"})).await;
    sws.wait_for(|f| f["type"] == "pong", T).await;
    assert!(!sws.frames().iter().any(|f| f["type"] == "device_list_changed"));
}

fn to_device(client_id: &str, to: &Device, payloads: &[Value]) -> Value {
    json!({
        "type": "to_device",
        "client_id": client_id,
        "messages": payloads.iter().map(|p| json!({"user_id": to.user_id(), "device_id": to.device_id, "payload": p})).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn to_device_messages_arrive_in_order_once_and_survive_kill_9() {
    let mut srv = TestServer::start().await;
    let (a, b, stranger) = (srv.login().await, srv.login().await, srv.login().await);
    a.direct(b.user_id()).await;
    let aws = a.connect_synced().await;
    // b is offline: the payloads wait for it.
    for n in 0..5 {
        let r = aws.request(to_device(&format!("c{n}"), &b, &[json!({"n": n * 2}), json!({"n": n * 2 + 1})])).await;
        assert_eq!(
            (r["type"].as_str(), r["client_id"].as_str()),
            (Some("to_device_sent"), Some(format!("c{n}").as_str()))
        );
    }
    // A repeated client id queues nothing; a stranger's device is dropped silently.
    let r = aws.request(to_device("c0", &b, &[json!({"n": 99})])).await;
    assert_eq!(r["type"], "to_device_sent");
    assert_eq!(aws.request(to_device("s", &stranger, &[json!({"x": 1})])).await["type"], "to_device_sent");
    aws.expect_error(json!({"type": "to_device", "client_id": "bad", "messages": []}), "bad_request").await;
    aws.expect_error(to_device("bad2", &b, &[json!("not an object")]), "bad_request").await;
    aws.expect_error(json!({"type": "to_device_ack", "up_to_id": "x"}), "bad_request").await;

    srv.kill9().await;
    srv.restart().await;
    let bws = b.connect().await;
    let synced_at = bws.wait_synced(LONG).await;
    let got: Vec<Value> = bws.frames()[..synced_at].iter().filter(|f| f["type"] == "to_device").cloned().collect();
    let ns: Vec<i64> = got.iter().map(|f| f["payload"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>(), "every payload once, in order, before synced");
    assert!(got.iter().all(|f| f["sender_user_id"] == a.user_id() && f["sender_device_id"] == a.device_id.as_str()));
    let ids: Vec<i64> = got.iter().map(|f| f["id"].as_str().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Live: a new payload arrives on the open connection.
    let aws = a.connect_synced().await;
    aws.request(to_device("live", &b, &[json!({"n": 10})])).await;
    let live = bws.wait_for(|f| f["type"] == "to_device" && f["payload"]["n"] == 10, T).await;
    assert!(live["id"].as_str().unwrap().parse::<i64>().unwrap() > ids[9]);
    // Acknowledged up to the 6th: a new connection gets the rest only.
    bws.send_json(&json!({"type": "to_device_ack", "up_to_id": ids[5].to_string()})).await;
    bws.request(json!({"type": "ping"})).await;
    let again = b.connect().await;
    let at = again.wait_synced(LONG).await;
    let rest: Vec<i64> = again.frames()[..at]
        .iter()
        .filter(|f| f["type"] == "to_device")
        .map(|f| f["payload"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(rest, vec![6, 7, 8, 9, 10]);
    // The stranger got nothing.
    let sws = stranger.connect().await;
    let at = sws.wait_synced(LONG).await;
    assert!(!sws.frames()[..at].iter().any(|f| f["type"] == "to_device"));
}

#[tokio::test]
async fn encrypted_conversations_take_only_ciphertext_for_the_current_devices() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let b_user = srv.api().user().await;
    let b = b_user.login().await;
    let r = a.post("/v1/conversations", &json!({"kind": "direct", "user_id": b.user_id(), "encrypted": true})).await;
    let conv = r.expect(201)["conversation"].clone();
    assert_eq!(conv["encrypted"], true);
    let id = s(&conv, "conversation_id");
    let e0 = conv["device_epoch"].as_i64().unwrap();
    let plain = a.group("plain", &[b.user_id()]).await;
    assert_eq!(a.conversation(&plain).await["encrypted"], false);
    let aws = a.connect_synced().await;
    aws.expect_error(Ws::text_frame(&id, &unique("t"), "hi"), "bad_request").await;
    let (status, _) = a.post_text(&id, &unique("t"), "hi").await;
    assert_eq!(status, 400);
    let cipher = |cid: &str, epoch: i64| {
        json!({"type": "send", "conversation_id": id, "client_id": cid, "kind": "encrypted",
               "body": {"algorithm": "megolm.v1", "ciphertext": "AAAA", "session_id": "s", "device_epoch": epoch}})
    };
    let sent = aws.request(cipher("e1", e0)).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    // Bob signs in on a second device: the epoch moves and the old one is refused, storing nothing.
    b_user.login_as("tablet").await;
    let e1 = a.conversation(&id).await["device_epoch"].as_i64().unwrap();
    assert!(e1 > e0);
    let err = aws.expect_error(cipher("e2", e0), "stale_devices").await;
    assert_eq!(err["device_epoch"], e1);
    let r = a
        .post(
            &format!("/v1/conversations/{id}/messages"),
            &json!({"client_id": "e2", "kind": "encrypted", "body": {"algorithm": "megolm.v1", "ciphertext": "A", "device_epoch": e0}}),
        )
        .await;
    r.expect_error(409, "stale_devices");
    assert_eq!(r.body["error"]["device_epoch"], e1);
    // The retry with the same client id goes through once.
    let ok = aws.request(cipher("e2", e1)).await;
    assert_eq!(ok["type"], "sent");
    let again = aws.request(cipher("e2", e1)).await;
    assert_eq!(again["seq"], ok["seq"]);
    let kinds: Vec<String> = b.history(&id).await.iter().map(|m| s(m, "kind")).collect();
    assert_eq!(kinds, ["conversation_created", "encrypted", "encrypted"]);
}
