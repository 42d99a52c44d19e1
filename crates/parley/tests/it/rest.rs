//! The REST API of 1:1 chat: accounts, sessions, devices, user lookup, direct conversations,
//! history, posting, receipts, and how bad input and unknown routes are answered.

use std::time::Instant;

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_validation_and_conflict() {
    let srv = TestServer::start().await;
    let name = unique("acc");
    let r = srv
        .post(
            "/v1/accounts",
            &json!({"username": name.to_uppercase(), "password": "longenough", "display_name": "Ann Example"}),
            None,
        )
        .await;
    let body = r.expect(201);
    assert_eq!(s(&body, "username"), name, "usernames are stored lower-case");
    assert_eq!(s(&body, "display_name"), "Ann Example");
    assert!(!s(&body, "user_id").is_empty());

    // Taken, whatever the case.
    for taken in [name.clone(), name.to_uppercase()] {
        let r = srv.post("/v1/accounts", &json!({"username": taken, "password": "otherpassword"}), None).await;
        r.expect_error(409, "conflict");
    }

    // The limits themselves are accepted: 3 and 32 characters of [a-z0-9_.-], passwords of
    // 8 and 1024 bytes (bytes, not characters: four 'é' are eight bytes).
    let long = format!("{:_<32}", unique("l"));
    assert_eq!(long.len(), 32);
    for (username, password) in [
        ("a.9".to_string(), "x".repeat(8)),
        (long, "x".repeat(1024)),
        ("with-dash_under.dot".to_string(), "éééé".to_string()),
    ] {
        let r = srv.post("/v1/accounts", &json!({"username": username, "password": password}), None).await;
        assert_eq!(r.status, 201, "{username}: {}", r.body);
    }

    // Out of bounds → 400 bad_request.
    let ok = "longenough";
    let fresh = unique("v");
    for (username, password) in [
        ("ab".to_string(), ok.to_string()),
        ("x".repeat(33), ok.to_string()),
        ("bad name".to_string(), ok.to_string()),
        ("semi;colon".to_string(), ok.to_string()),
        ("ümlaut".to_string(), ok.to_string()),
        (String::new(), ok.to_string()),
        (fresh.clone(), "x".repeat(7)),
        (fresh.clone(), "ééé".to_string()),
        (fresh.clone(), "x".repeat(1025)),
        (fresh.clone(), String::new()),
    ] {
        let r = srv.post("/v1/accounts", &json!({"username": username, "password": password}), None).await;
        assert_eq!(r.status, 400, "{username:?} / {} bytes: {}", password.len(), r.body);
        r.expect_error(400, "bad_request");
    }
    // None of the refused names was created.
    let probe = srv.login().await;
    let r = probe.get(&format!("/v1/users/{fresh}")).await;
    r.expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_me_and_logout() {
    let srv = TestServer::start().await;
    let u = srv.user().await;

    // Usernames are case-insensitive at sign-in too.
    let r = srv
        .post(
            "/v1/sessions",
            &json!({"username": u.username.to_uppercase(), "password": u.password, "device_name": "laptop"}),
            None,
        )
        .await;
    let first = r.expect(201);
    assert_eq!(s(&first, "user_id"), u.user_id);
    let token = s(&first, "token");
    assert!(token.len() >= 22, "a token carries at least 128 bits: {token}");
    assert!(!s(&first, "device_id").is_empty());

    // Every sign-in is a new device with its own token.
    let second = u.login().await;
    assert_ne!(second.token, token);
    assert_ne!(second.device_id, s(&first, "device_id"));

    // Wrong password and unknown user: the same 401.
    let wrong_pw =
        srv.post("/v1/sessions", &json!({"username": u.username, "password": "not the password"}), None).await;
    let no_user =
        srv.post("/v1/sessions", &json!({"username": unique("nosuch"), "password": "not the password"}), None).await;
    wrong_pw.expect_error(401, "unauthorized");
    no_user.expect_error(401, "unauthorized");
    assert_eq!(wrong_pw.body, no_user.body, "a wrong user and a wrong password get the same answer");

    // /v1/me
    let me = srv.get("/v1/me", Some(&token)).await.expect(200);
    assert_eq!(s(&me, "user_id"), u.user_id);
    assert_eq!(s(&me, "username"), u.username);
    assert!(me["display_name"].is_string());
    srv.get("/v1/me", None).await.expect_error(401, "unauthorized");
    srv.get("/v1/me", Some("garbage-token")).await.expect_error(401, "unauthorized");
    let r = srv
        .api()
        .http
        .get(srv.api().url("/v1/me"))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "only Bearer tokens are accepted");

    // Logout revokes this token and only this one.
    let r = srv.delete("/v1/sessions/current", Some(&token)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    srv.get("/v1/me", Some(&token)).await.expect_error(401, "unauthorized");
    srv.delete("/v1/sessions/current", Some(&token)).await.expect_error(401, "unauthorized");
    assert_eq!(second.get("/v1/me").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_list_and_delete() {
    let srv = TestServer::start().await;
    let u = srv.user().await;
    let phone = u.login_as("phone").await;
    let laptop = u.login_as("laptop").await;
    let other = srv.login().await;

    let list = phone.get("/v1/devices").await.expect(200);
    let devices = list["devices"].as_array().expect("devices").clone();
    assert_eq!(devices.len(), 2, "{list}");
    for d in &devices {
        assert!(d["created_at"].is_i64() && d["last_active_at"].is_i64(), "{d}");
    }
    let mut names: Vec<(String, String)> = devices.iter().map(|d| (s(d, "device_id"), s(d, "name"))).collect();
    names.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        names,
        vec![(laptop.device_id.clone(), "laptop".to_string()), (phone.device_id.clone(), "phone".to_string())]
    );

    // Only your own devices: another user's device is not found, and keeps working.
    phone.delete(&format!("/v1/devices/{}", other.device_id)).await.expect_error(404, "not_found");
    assert_eq!(other.get("/v1/me").await.status, 200);
    for missing in ["999999999", "garbage"] {
        phone.delete(&format!("/v1/devices/{missing}")).await.expect_error(404, "not_found");
    }

    let r = phone.delete(&format!("/v1/devices/{}", laptop.device_id)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    laptop.get("/v1/me").await.expect_error(401, "unauthorized");
    let list = phone.get("/v1/devices").await.expect(200);
    let ids: Vec<String> = list["devices"].as_array().unwrap().iter().map(|d| s(d, "device_id")).collect();
    assert_eq!(ids, vec![phone.device_id.clone()]);
    // Deleting it again: it is gone.
    phone.delete(&format!("/v1/devices/{}", laptop.device_id)).await.expect_error(404, "not_found");
    srv.get("/v1/devices", None).await.expect_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_lookup() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let b = srv.user().await;
    for name in [b.username.clone(), b.username.to_uppercase()] {
        let found = a.get(&format!("/v1/users/{name}")).await.expect(200);
        assert_eq!(s(&found, "user_id"), b.user_id);
        assert_eq!(s(&found, "username"), b.username);
        assert!(found["display_name"].is_string());
    }
    for missing in [unique("nobody"), "x".to_string(), "bad%20name".to_string()] {
        a.get(&format!("/v1/users/{missing}")).await.expect_error(404, "not_found");
    }
    srv.get(&format!("/v1/users/{}", b.username), None).await.expect_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_conversations() {
    let srv = TestServer::start().await;
    let (a, b) = {
        let v = srv.logins(2).await;
        (v[0].clone(), v[1].clone())
    };
    let create = |d: &Device, user_id: Value| {
        let d = d.clone();
        async move { d.post("/v1/conversations", &json!({"kind": "direct", "user_id": user_id})).await }
    };

    let r = create(&a, json!(b.user_id())).await;
    let conv = r.expect(201)["conversation"].clone();
    let id = s(&conv, "conversation_id");
    assert_eq!(conv["kind"], "direct");
    assert_eq!(i(&conv, "members_count"), 2);
    for field in ["created_at", "last_seq", "unread_count", "read_seq", "delivered_seq"] {
        assert!(conv[field].is_i64(), "{field} in {conv}");
    }
    if let Some(members) = conv["members"].as_array() {
        let mut ids: Vec<String> = members.iter().map(|m| s(m, "user_id")).collect();
        ids.sort();
        let mut want = vec![a.user_id().to_string(), b.user_id().to_string()];
        want.sort();
        assert_eq!(ids, want);
    }

    // The same pair gets the same conversation, whoever asks: 200 from now on.
    let again = create(&a, json!(b.user_id())).await.expect(200);
    assert_eq!(s(&again["conversation"], "conversation_id"), id);
    let reverse = create(&b, json!(a.user_id())).await.expect(200);
    assert_eq!(s(&reverse["conversation"], "conversation_id"), id);

    // Talking to yourself is a direct conversation of one.
    let own = create(&a, json!(a.user_id())).await.expect(201);
    let own_id = s(&own["conversation"], "conversation_id");
    assert_ne!(own_id, id);
    assert_eq!(own["conversation"]["kind"], "direct");
    assert_eq!(i(&own["conversation"], "members_count"), 1);
    let own_again = create(&a, json!(a.user_id())).await.expect(200);
    assert_eq!(s(&own_again["conversation"], "conversation_id"), own_id);

    // Unknown users.
    for missing in ["999999999", "garbage", ""] {
        create(&a, json!(missing)).await.expect_error(404, "not_found");
    }
    // A numeric id, a missing id, an unknown kind: bad requests.
    for body in [
        json!({"kind": "direct", "user_id": 5}),
        json!({"kind": "direct"}),
        json!({"kind": "channel", "user_id": b.user_id()}),
        json!({"user_id": b.user_id()}),
    ] {
        a.post("/v1/conversations", &body).await.expect_error(400, "bad_request");
    }
    srv.post("/v1/conversations", &json!({"kind": "direct", "user_id": b.user_id()}), None)
        .await
        .expect_error(401, "unauthorized");
}

/// Posts over REST until the message's `ts` is past `after_ts`, so activity order is not a tie
/// of one millisecond. Returns the last message.
async fn post_later(dev: &Device, conv: &str, text: &str, after_ts: i64) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (status, m) = dev.post_text(conv, &unique("c"), text).await;
        assert_eq!(status, 201, "{m}");
        if i(&m, "ts") > after_ts {
            return m;
        }
        assert!(Instant::now() < deadline, "the server clock does not advance");
    }
}

fn texts_of(history: &[Value], sender: &str) -> usize {
    history.iter().filter(|m| m["kind"] == "text" && m["sender_id"] == sender).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_list_and_get() {
    let srv = TestServer::start().await;
    let v = srv.logins(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let ab = a.direct(b.user_id()).await;
    let ac = a.direct(c.user_id()).await;
    let aa = a.direct(a.user_id()).await;

    b.post_text(&ab, &unique("c"), "b1").await;
    let (_, b2) = b.post_text(&ab, &unique("c"), "b2").await;
    let c1 = post_later(c, &ac, "c1", i(&b2, "ts")).await;
    let note = post_later(a, &aa, "note", i(&c1, "ts")).await;

    let list = |d: &Device| {
        let d = d.clone();
        async move {
            d.get("/v1/conversations").await.expect(200)["conversations"].as_array().expect("conversations").clone()
        }
    };
    let ids = |l: &[Value]| -> Vec<String> { l.iter().map(|c| s(c, "conversation_id")).collect() };

    let l = list(a).await;
    assert_eq!(ids(&l), vec![aa.clone(), ac.clone(), ab.clone()], "most recent activity first");
    // (post_later may have posted a text more than once: count from the logs.)
    let want_unread =
        [0, texts_of(&a.history(&ac).await, c.user_id()) as i64, texts_of(&a.history(&ab).await, b.user_id()) as i64];
    assert!(want_unread[1] >= 1 && want_unread[2] >= 2);
    for (conv, unread) in l.iter().zip(want_unread) {
        assert_eq!(i(conv, "unread_count"), unread, "{conv}");
    }
    assert_eq!(l[0]["last_message"]["body"]["text"], "note");
    assert_eq!(l[1]["last_message"]["body"]["text"], "c1");
    assert_eq!(l[2]["last_message"]["body"]["text"], "b2");
    assert_eq!(s(&l[1]["last_message"], "message_id"), s(&c1, "message_id"));

    // A message of a's own moves the conversation up, without counting as unread for a.
    let a1 = post_later(a, &ab, "a1", i(&note, "ts")).await;
    let l = list(a).await;
    assert_eq!(ids(&l), vec![ab.clone(), aa.clone(), ac.clone()]);
    assert_eq!(i(&l[0], "unread_count"), want_unread[2]);
    assert_eq!(l[0]["last_message"]["body"]["text"], "a1");
    assert_eq!(i(&l[0], "last_seq"), i(&a1, "seq"));
    // ... and counts for b.
    let lb = list(b).await;
    assert_eq!(ids(&lb), vec![ab.clone()]);
    let a_texts = texts_of(&a.history(&ab).await, a.user_id()) as i64;
    assert_eq!(i(&lb[0], "unread_count"), a_texts);
    let lc = list(c).await;
    assert_eq!(ids(&lc), vec![ac.clone()]);

    // One conversation, with its members.
    let one = a.conversation(&ab).await;
    assert_eq!(s(&one, "conversation_id"), ab);
    let members = one["members"].as_array().expect("GET one lists members");
    assert_eq!(members.len(), 2);
    for m in members {
        for f in ["user_id", "username", "display_name", "role"] {
            assert!(m[f].is_string(), "{f} in {m}");
        }
        assert!(m["read_seq"].is_i64() && m["delivered_seq"].is_i64(), "{m}");
    }
    let names: Vec<String> = members.iter().map(|m| s(m, "username")).collect();
    assert!(names.contains(&a.user.username) && names.contains(&b.user.username));

    // Non-members and non-ids: 404.
    c.get(&format!("/v1/conversations/{ab}")).await.expect_error(404, "not_found");
    for bad in ["0", "999999999", "garbage"] {
        a.get(&format!("/v1/conversations/{bad}")).await.expect_error(404, "not_found");
    }
    srv.get(&format!("/v1/conversations/{ab}"), None).await.expect_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_paging() {
    let srv = TestServer::start().await;
    let v = srv.logins(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let ab = a.direct(b.user_id()).await;
    let ws = a.connect_synced().await;
    ws.send_texts(&ab, "h", 60).await;

    let page = |q: &str| {
        let (a, ab, q) = (a.clone(), ab.clone(), q.to_string());
        async move {
            let r = a.get(&format!("/v1/conversations/{ab}/messages{q}")).await;
            seqs(r.expect(200)["messages"].as_array().expect("messages"))
        }
    };

    // The whole log: gap-free from 1, ascending.
    let all = a.history(&ab).await;
    let last = i(&a.conversation(&ab).await, "last_seq");
    assert_eq!(seqs(&all), (1..=last).collect::<Vec<_>>());
    assert_eq!(texts_of(&all, a.user_id()), 60);
    for m in &all {
        for f in ["conversation_id", "message_id", "sender_id"] {
            assert!(m[f].is_string(), "{f} in {m}");
        }
        assert!(m["ts"].is_i64() && m["kind"].is_string() && m["body"].is_object(), "{m}");
        assert!(m.get("client_id").is_some() && m.get("sender_device_id").is_some(), "{m}");
    }
    let range = |lo: i64, hi: i64| (lo..=hi).collect::<Vec<i64>>();

    // Neither bound: the newest page, default 50.
    assert_eq!(page("").await, range(last - 49, last));
    assert_eq!(page("?limit=3").await, range(last - 2, last));
    assert_eq!(page("?limit=200").await, range(1, last));
    // before_seq alone: the newest page before it.
    assert_eq!(page("?before_seq=5&limit=2").await, range(3, 4));
    assert_eq!(page("?before_seq=3").await, range(1, 2));
    assert_eq!(page("?before_seq=1").await, Vec::<i64>::new());
    // after_seq: the oldest page after it.
    assert_eq!(page("?after_seq=5&limit=3").await, range(6, 8));
    assert_eq!(page("?after_seq=0&limit=1").await, range(1, 1));
    assert_eq!(page("?after_seq=10").await, range(11, 60));
    assert_eq!(page(&format!("?after_seq={last}")).await, Vec::<i64>::new());
    // Both: the oldest page after after_seq and before before_seq.
    assert_eq!(page("?after_seq=2&before_seq=7").await, range(3, 6));
    assert_eq!(page("?after_seq=2&before_seq=7&limit=2").await, range(3, 4));
    assert_eq!(page("?after_seq=7&before_seq=7").await, Vec::<i64>::new());

    // Bad parameters: 400, never 500.
    for q in ["?limit=0", "?limit=201", "?limit=-1", "?limit=abc", "?after_seq=x", "?before_seq=-3", "?after_seq=1.5"] {
        let r = a.get(&format!("/v1/conversations/{ab}/messages{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        r.expect_error(400, "bad_request");
    }
    // Members only.
    c.get(&format!("/v1/conversations/{ab}/messages")).await.expect_error(404, "not_found");
    b.get(&format!("/v1/conversations/{ab}/messages?limit=1")).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_messages_and_idempotency() {
    let srv = TestServer::start().await;
    let v = srv.logins(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let ab = a.direct(b.user_id()).await;
    let aa = a.direct(a.user_id()).await;
    let path = format!("/v1/conversations/{ab}/messages");

    let r = a.post(&path, &json!({"client_id": "cid-1", "kind": "text", "body": {"text": "hello"}})).await;
    let m = r.expect(201)["message"].clone();
    assert_eq!(s(&m, "conversation_id"), ab);
    assert_eq!(s(&m, "sender_id"), a.user_id());
    assert_eq!(s(&m, "sender_device_id"), a.device_id);
    assert_eq!(s(&m, "client_id"), "cid-1");
    assert_eq!(m["kind"], "text");
    assert_eq!(m["body"], json!({"text": "hello"}));
    assert!(m["seq"].is_i64() && m["ts"].is_i64() && m["message_id"].is_string());

    // A repeat is answered 200 with the original, even naming another body or conversation,
    // and from another device of the same user.
    let again =
        a.post(&path, &json!({"client_id": "cid-1", "kind": "text", "body": {"text": "hello"}})).await.expect(200);
    assert_eq!(again["message"], m);
    let other_body = a
        .post(
            &format!("/v1/conversations/{aa}/messages"),
            &json!({"client_id": "cid-1", "kind": "text", "body": {"text": "changed"}}),
        )
        .await
        .expect(200);
    assert_eq!(other_body["message"], m);
    let a2 = a.user.login().await;
    let (status, from_a2) = a2.post_text(&ab, "cid-1", "from a2").await;
    assert_eq!(status, 200);
    assert_eq!(from_a2, m);
    let with_id: Vec<Value> = a.history(&ab).await.into_iter().filter(|x| x["client_id"] == "cid-1").collect();
    assert_eq!(with_id, vec![m.clone()], "one message for one client_id");
    assert!(
        a.history(&aa).await.iter().all(|x| x["client_id"] != "cid-1"),
        "the repeat naming another conversation wrote nothing there"
    );

    // Client ids belong to their sender: b may use the same one.
    let (status, mb) = b.post_text(&ab, "cid-1", "b's own").await;
    assert_eq!(status, 201, "{mb}");
    assert_ne!(s(&mb, "message_id"), s(&m, "message_id"));
    assert_eq!(i(&mb, "seq"), i(&m, "seq") + 1);

    // Text limits are in UTF-8 bytes: 16,384 is fine, one more is too large.
    let (status, _) = a.post_text(&ab, &unique("c"), &"é".repeat(8192)).await;
    assert_eq!(status, 201);
    let r =
        a.post(&path, &json!({"client_id": unique("c"), "kind": "text", "body": {"text": "x".repeat(16_385)}})).await;
    r.expect_error(413, "payload_too_large");
    for body in [
        json!({"client_id": unique("c"), "kind": "text", "body": {"text": ""}}),
        json!({"client_id": unique("c"), "kind": "shout", "body": {"text": "x"}}),
        json!({"client_id": unique("c"), "kind": "members_added", "body": {"user_ids": []}}),
        json!({"client_id": "", "kind": "text", "body": {"text": "x"}}),
        json!({"client_id": "x".repeat(1000), "kind": "text", "body": {"text": "x"}}),
        json!({"client_id": unique("c"), "kind": "text", "body": {"text": "x", "reply_to_seq": 0}}),
    ] {
        let r = a.post(&path, &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        r.expect_error(400, "bad_request");
    }
    // Not a member (or no such conversation): 404.
    let (status, _) = c.post_text(&ab, &unique("c"), "intruder").await;
    assert_eq!(status, 404);
    c.post(&path, &json!({"client_id": unique("c"), "kind": "text", "body": {"text": "x"}}))
        .await
        .expect_error(404, "not_found");
    a.post(
        "/v1/conversations/999999999/messages",
        &json!({"client_id": unique("c"), "kind": "text", "body": {"text": "x"}}),
    )
    .await
    .expect_error(404, "not_found");
    srv.post(&path, &json!({"client_id": unique("c"), "kind": "text", "body": {"text": "x"}}), None)
        .await
        .expect_error(401, "unauthorized");
    // Refused posts wrote nothing: the log is still gap-free and holds 4 texts.
    let hist = a.history(&ab).await;
    assert_eq!(seqs(&hist), (1..=hist.len() as i64).collect::<Vec<_>>());
    assert_eq!(hist.iter().filter(|x| x["kind"] == "text").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_endpoint() {
    let srv = TestServer::start().await;
    let v = srv.logins(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let ab = a.direct(b.user_id()).await;
    let (status, m) = a.post_text(&ab, &unique("c"), "read me").await;
    assert_eq!(status, 201);
    let seq = i(&m, "seq");
    let path = format!("/v1/conversations/{ab}/messages/{seq}/receipts");
    let counts = |r: &Value| (i(r, "members_count"), i(r, "delivered_count"), i(r, "read_count"));
    let member = |r: &Value, user: &str| -> Option<(bool, bool)> {
        r["members"].as_array().map(|ms| {
            let m = ms.iter().find(|m| m["user_id"] == user).unwrap_or_else(|| panic!("{user} listed in {r}"));
            (m["delivered"] == true, m["read"] == true)
        })
    };

    // The author has their own message; b has not received it yet.
    let r = a.get(&path).await.expect(200);
    assert_eq!(counts(&r), (2, 1, 1), "{r}");
    if let Some(st) = member(&r, b.user_id()) {
        assert_eq!(st, (false, false));
    }

    let ws = b.connect_synced().await;
    ws.send_json(&json!({"type": "ack", "conversation_id": ab, "seq": seq})).await;
    ws.barrier().await;
    let r = a.get(&path).await.expect(200);
    assert_eq!(counts(&r), (2, 2, 1), "{r}");
    if let Some(st) = member(&r, b.user_id()) {
        assert_eq!(st, (true, false));
    }

    ws.send_json(&json!({"type": "read", "conversation_id": ab, "seq": seq})).await;
    ws.barrier().await;
    let r = b.get(&path).await.expect(200);
    assert_eq!(counts(&r), (2, 2, 2), "{r}");
    if let Some(st) = member(&r, b.user_id()) {
        assert_eq!(st, (true, true));
    }

    c.get(&path).await.expect_error(404, "not_found");
    for bad_seq in ["0", "999999"] {
        a.get(&format!("/v1/conversations/{ab}/messages/{bad_seq}/receipts")).await.expect_error(404, "not_found");
    }
    a.get(&format!("/v1/conversations/{ab}/messages/abc/receipts")).await.expect_error(400, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let aa = a.direct(a.user_id()).await;
    let messages = format!("/v1/conversations/{aa}/messages");
    let common = ["", "{", "not json", "[]", "null", "42", "\"text\"", "{}", "{\"a\":1,}"];
    let cases: Vec<(&str, bool, Vec<String>)> = vec![
        (
            "/v1/accounts",
            false,
            vec![
                r#"{"username": 5, "password": []}"#.into(),
                r#"{"username": "abcdef"}"#.into(),
                r#"{"password": "longenough"}"#.into(),
                r#"{"username": "abcdef", "password": "longenough", "display_name": 7}"#.into(),
            ],
        ),
        (
            "/v1/sessions",
            false,
            vec![
                r#"{"username": [], "password": {}}"#.into(),
                r#"{"username": "abcdef"}"#.into(),
                r#"{"username": "abcdef", "password": "longenough", "device_name": false}"#.into(),
            ],
        ),
        (
            "/v1/conversations",
            true,
            vec![
                r#"{"kind": "direct", "user_id": 5}"#.into(),
                r#"{"kind": "direct"}"#.into(),
                r#"{"kind": 3, "user_id": "1"}"#.into(),
                r#"{"user_id": "1"}"#.into(),
            ],
        ),
        (
            messages.as_str(),
            true,
            vec![
                r#"{"client_id": 5, "kind": "text", "body": {"text": "x"}}"#.into(),
                r#"{"kind": "text", "body": {"text": "x"}}"#.into(),
                r#"{"client_id": "x", "body": {"text": "x"}}"#.into(),
                r#"{"client_id": "x", "kind": "text"}"#.into(),
                r#"{"client_id": "x", "kind": "text", "body": "x"}"#.into(),
                r#"{"client_id": "x", "kind": "text", "body": {"text": 5}}"#.into(),
                r#"{"client_id": "x", "kind": "text", "body": {}}"#.into(),
            ],
        ),
    ];
    for (path, authed, specific) in cases {
        let token = authed.then_some(a.token.as_str());
        let bodies = common.iter().map(|b| b.to_string()).chain(specific);
        for body in bodies {
            let r = srv.post_raw(path, &body, token).await;
            assert_eq!(r.status, 400, "POST {path} with {body:?}: {} {}", r.status, r.body);
            r.expect_error(400, "bad_request");
        }
        // Far too large a body: refused, never a 500.
        let huge = format!("{{\"x\": \"{}\"}}", "a".repeat(300 * 1024));
        let r = srv.post_raw(path, &huge, token).await;
        r.expect_error(413, "payload_too_large");
    }
    // Nothing got written.
    assert!(a.history(&aa).await.iter().all(|m| m["kind"] != "text"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404_json() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    for path in ["/v1/nope", "/nope", "/v2/me", "/v1/conversations/1/messages/2/receipts/3", "/v1/users/"] {
        for token in [None, Some(a.token.as_str())] {
            let r = srv.get(path, token).await;
            assert_eq!(r.status, 404, "GET {path}: {}", r.body);
            r.expect_error(404, "not_found");
        }
    }
    let r = srv.post("/v1/accounts/extra", &json!({}), None).await;
    r.expect_error(404, "not_found");
    let r = srv.get("/healthz", None).await;
    assert_eq!(r.status, 200);
}

/// "REST errors: the HTTP status plus `{"error": {"code", "message"}}`" holds for a known path
/// with a method it does not serve, too (the status may be 405 or 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_gets_a_json_error() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let http = &srv.api().http;
    for (method, path) in [
        (reqwest::Method::PUT, "/v1/me"),
        (reqwest::Method::DELETE, "/v1/accounts"),
        (reqwest::Method::GET, "/v1/sessions"),
        (reqwest::Method::PATCH, "/v1/devices"),
    ] {
        let r = http.request(method.clone(), srv.api().url(path)).bearer_auth(&a.token).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(status == 405 || status == 404, "{method} {path}: {status}");
        let json: Option<Value> = serde_json::from_str(&body).ok();
        assert!(
            json.as_ref().is_some_and(|j| j["error"]["code"].is_string() && j["error"]["message"].is_string()),
            "{method} {path}: {status} with body {body:?}, not a JSON error"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_counters_histograms_and_errors_by_code() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let conv = a.direct(a.user_id()).await;
    let body = json!({"client_id": "m1", "kind": "text", "body": {"text": "counted"}});
    a.post(&format!("/v1/conversations/{conv}/messages"), &body).await.expect(201);
    let ws = a.connect_synced().await;
    ws.send_json(&json!({"type": "ack", "conversation_id": "1", "seq": 1})).await;
    ws.barrier().await;
    // A stranger's history request and an unknown path: REST errors are counted by code too.
    a.get("/v1/conversations/999/messages").await.expect(404);
    a.get("/v1/no-such-thing").await.expect(404);
    let text = srv.api().http.get(srv.api().url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "parley_http_errors_total{code=\"not_found\"} 2",
        "parley_sends_total 1",
        "parley_send_to_persist_seconds_count 1",
        "parley_errors_total{code=\"not_member\"} 1",
        "parley_commit_seconds_bucket{le=\"+Inf\"}",
        "parley_commit_batch_size_count",
        "parley_fanout_seconds_count",
        "parley_outbound_queue_depth_bucket",
        "parley_connections 1",
    ] {
        assert!(text.contains(line), "/metrics lacks {line:?}:\n{text}");
    }
}
