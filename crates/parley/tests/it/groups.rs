//! Group conversations: the membership lifecycle and its log entries, member windows (what a
//! removed or re-added member sees, live and in replay), fanout to 1,024 members, concurrent
//! senders, limits and permissions, edits, deletes and reactions, and receipts in small and
//! large groups.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::*;

fn is_entry<'a>(conv: &'a str, seq: i64) -> impl Fn(&Value) -> bool + 'a {
    move |f: &Value| f["type"] == "message" && f["conversation_id"] == conv && f["seq"] == seq
}

fn conv_path(conv: &str) -> String {
    format!("/v1/conversations/{conv}")
}

fn member_path(conv: &str, user: &str) -> String {
    format!("/v1/conversations/{conv}/members/{user}")
}

/// `(user_id, role)` of every listed member of a conversation object, sorted.
fn roles(view: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = view["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members listed: {view}"))
        .iter()
        .map(|m| (s(m, "user_id"), s(m, "role")))
        .collect();
    v.sort();
    v
}

fn role_of(view: &Value, user: &str) -> Option<String> {
    roles(view).into_iter().find(|(u, _)| u == user).map(|(_, r)| r)
}

fn sorted_roles(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list.iter().map(|(u, r)| (u.to_string(), r.to_string())).collect();
    v.sort();
    v
}

/// A system entry's body with its `user_ids` sorted (their order is not part of the contract).
fn normalized(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(ids) = b.get_mut("user_ids").and_then(Value::as_array_mut) {
        ids.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
    }
    b
}

/// Waits on each connection for entry `seq` of `conv` and checks it is the system entry `kind`
/// written on behalf of `sender` with `body`.
async fn expect_entry(ws: &[&Ws], conv: &str, seq: i64, kind: &str, sender: &str, body: Value) {
    for w in ws {
        let m = w.wait_for(is_entry(conv, seq), T).await;
        assert_eq!(m["kind"], kind, "entry {seq}: {m}");
        assert_eq!(m["sender_id"], sender, "entry {seq}: {m}");
        assert_eq!(normalized(&m["body"]), normalized(&body), "entry {seq}: {m}");
        assert!(m["client_id"].is_null() && m["sender_device_id"].is_null(), "system entries have no device: {m}");
        assert!(m["message_id"].is_string() && m["ts"].is_i64(), "{m}");
    }
}

/// How many frames each connection has now: where to look for what comes next.
fn marks(ws: &[&Ws]) -> Vec<usize> {
    ws.iter().map(|w| w.len()).collect()
}

/// Waits on each connection for a `conversation` frame of `conv`, after its mark, that
/// satisfies `pred`.
async fn expect_conv_frame(ws: &[&Ws], marks: &[usize], conv: &str, what: &str, pred: impl Fn(&Value) -> bool) {
    for (w, &from) in ws.iter().zip(marks) {
        w.try_wait_for_from(from, |f| f["type"] == "conversation" && f["conversation_id"] == conv && pred(f), T)
            .await
            .unwrap_or_else(|e| panic!("no `conversation` frame ({what}): {e}"));
    }
}

/// A `send` frame of any kind, with a fresh client id.
fn send_frame(conv: &str, kind: &str, body: Value) -> Value {
    json!({"type": "send", "conversation_id": conv, "client_id": unique("c"), "kind": kind, "body": body})
}

/// Sends `frame` and asserts it is accepted; returns the seq it got.
async fn sent_seq(ws: &Ws, frame: Value) -> i64 {
    let reply = ws.request(frame).await;
    assert_eq!(reply["type"], "sent", "refused: {reply}");
    i(&reply, "seq")
}

/// A text message `from` posts to their direct conversation with `to`. Conversations below the
/// fanout worker threshold fan out in commit order, so once `to`'s connections have it, nothing
/// committed earlier in such a conversation is still on its way.
async fn fence(from: &Device, to: &Device) -> String {
    let dm = from.direct(to.user_id()).await;
    let cid = unique("fence");
    let (status, m) = from.post_text(&dm, &cid, "fence").await;
    assert_eq!(status, 201, "{m}");
    cid
}

fn is_msg(client_id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f: &Value| f["type"] == "message" && f["client_id"] == client_id
}

/// Asserts a REST error answer: the status and the JSON error with `code`.
fn refused(r: Resp, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    r.expect_error(status, code);
}

// ------------------------------------------------------------------------------------------
// 1. The lifecycle
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_create_rename_add_remove_leave_roles_and_rejoin() {
    let srv = TestServer::start().await;
    let v = srv.logins(6).await;
    let (a, b, c, d, e, z) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
    let (ia, ib, ic, id, ie) = (a.user_id(), b.user_id(), c.user_id(), d.user_id(), e.user_id());
    let wa = a.connect_synced().await;
    let wb = b.connect_synced().await;
    let wc = c.connect_synced().await;
    let wd = d.connect_synced().await;
    let we = e.connect_synced().await;

    // seq 1: created by a (admin) with b and c.
    let m = marks(&[&wa, &wb, &wc]);
    let r = a.post("/v1/conversations", &json!({"kind": "group", "title": "Team", "member_ids": [ib, ic]})).await;
    let view = r.expect(201)["conversation"].clone();
    let g = s(&view, "conversation_id");
    assert_eq!(view["kind"], "group");
    assert_eq!(view["title"], "Team");
    assert_eq!((i(&view, "last_seq"), i(&view, "members_count")), (1, 3), "{view}");
    assert_eq!(roles(&view), sorted_roles(&[(ia, "admin"), (ib, "member"), (ic, "member")]));
    let created = json!({"kind": "group", "title": "Team", "user_ids": [ia, ib, ic]});
    expect_entry(&[&wa, &wb, &wc], &g, 1, "conversation_created", ia, created).await;
    expect_conv_frame(&[&wa, &wb, &wc], &m, &g, "create", |f| {
        f["kind"] == "group"
            && f["title"] == "Team"
            && f["members_count"] == 3
            && role_of(f, ia).as_deref() == Some("admin")
    })
    .await;

    // seq 2: a message from b.
    assert_eq!(i(&wb.send_text(&g, "hi all").await, "seq"), 2);

    // seq 3: a renames it.
    let m = marks(&[&wa, &wb, &wc]);
    let view = a.patch(&conv_path(&g), &json!({"title": "Team 2"})).await.expect(200)["conversation"].clone();
    assert_eq!((view["title"].as_str(), i(&view, "last_seq")), (Some("Team 2"), 3), "{view}");
    expect_entry(&[&wa, &wb, &wc], &g, 3, "title_changed", ia, json!({"title": "Team 2", "by": ia})).await;
    expect_conv_frame(&[&wa, &wb, &wc], &m, &g, "rename", |f| f["title"] == "Team 2").await;

    // seq 4: a adds d (b, already a member, is not added again).
    let m = marks(&[&wa, &wb, &wc, &wd]);
    let view =
        a.post(&format!("{}/members", conv_path(&g)), &json!({"user_ids": [id, ib]})).await.expect(200)["conversation"]
            .clone();
    assert_eq!((i(&view, "last_seq"), i(&view, "members_count")), (4, 4), "{view}");
    assert_eq!(role_of(&view, id).as_deref(), Some("member"));
    expect_entry(&[&wa, &wb, &wc, &wd], &g, 4, "members_added", ia, json!({"user_ids": [id], "by": ia})).await;
    expect_conv_frame(&[&wa, &wb, &wc, &wd], &m, &g, "add d", |f| {
        f["title"] == "Team 2" && f["members_count"] == 4 && role_of(f, id).as_deref() == Some("member")
    })
    .await;

    // seq 5: d's first message.
    assert_eq!(i(&wd.send_text(&g, "d here").await, "seq"), 5);

    // seq 6: a removes c.
    let m = marks(&[&wa, &wb, &wd]);
    a.delete(&member_path(&g, ic)).await.expect(204);
    expect_entry(&[&wa, &wb, &wc, &wd], &g, 6, "member_removed", ia, json!({"user_id": ic, "by": ia})).await;
    expect_conv_frame(&[&wa, &wb, &wd], &m, &g, "remove c", |f| f["members_count"] == 3 && role_of(f, ic).is_none())
        .await;
    // c can no longer read or write it.
    refused(c.get(&conv_path(&g)).await, 404, "not_found", "removed: GET");
    refused(c.get(&format!("{}/messages", conv_path(&g))).await, 404, "not_found", "removed: history");
    refused(c.get(&format!("{}/messages/2/receipts", conv_path(&g))).await, 404, "not_found", "removed: receipts");
    let (status, _) = c.post_text(&g, &unique("c"), "let me in").await;
    assert_eq!(status, 404, "removed: REST post");
    wc.expect_error(Ws::text_frame(&g, &unique("c"), "let me in"), "not_member").await;

    // seq 7: a message c must not get.
    assert_eq!(i(&wa.send_text(&g, "c is gone").await, "seq"), 7);

    // seq 8: b leaves.
    let m = marks(&[&wa, &wd]);
    b.delete(&member_path(&g, ib)).await.expect(204);
    expect_entry(&[&wa, &wb, &wd], &g, 8, "member_left", ib, json!({"user_id": ib})).await;
    expect_conv_frame(&[&wa, &wd], &m, &g, "b leaves", |f| f["members_count"] == 2 && role_of(f, ib).is_none()).await;
    refused(b.get(&conv_path(&g)).await, 404, "not_found", "left: GET");
    let listed = b.get("/v1/conversations").await.expect(200);
    assert!(
        !listed["conversations"].as_array().unwrap().iter().any(|c| c["conversation_id"] == g.as_str()),
        "a group one left is not listed: {listed}"
    );

    // seq 9: a adds e.
    let m = marks(&[&wa, &wd, &we]);
    a.post(&format!("{}/members", conv_path(&g)), &json!({"user_ids": [ie]})).await.expect(200);
    expect_entry(&[&wa, &wd, &we], &g, 9, "members_added", ia, json!({"user_ids": [ie], "by": ia})).await;
    expect_conv_frame(&[&wa, &wd, &we], &m, &g, "add e", |f| {
        f["members_count"] == 3 && role_of(f, ie).as_deref() == Some("member")
    })
    .await;

    // seq 10, 11: a promotes d, then demotes d.
    for (seq, role) in [(10, "admin"), (11, "member")] {
        let m = marks(&[&wa, &wd, &we]);
        let view = a.patch(&member_path(&g, id), &json!({"role": role})).await.expect(200)["conversation"].clone();
        assert_eq!(role_of(&view, id).as_deref(), Some(role), "{view}");
        assert_eq!(i(&view, "last_seq"), seq);
        expect_entry(&[&wa, &wd, &we], &g, seq, "role_changed", ia, json!({"user_id": id, "role": role, "by": ia}))
            .await;
        expect_conv_frame(&[&wa, &wd, &we], &m, &g, role, |f| role_of(f, id).as_deref() == Some(role)).await;
    }

    // The whole log so far, as a, who has been there from the start, reads it.
    let kinds = |h: &[Value]| -> Vec<(i64, String)> { h.iter().map(|m| (i(m, "seq"), s(m, "kind"))).collect() };
    let full = [
        (1, "conversation_created", ia),
        (2, "text", ib),
        (3, "title_changed", ia),
        (4, "members_added", ia),
        (5, "text", id),
        (6, "member_removed", ia),
        (7, "text", ia),
        (8, "member_left", ib),
        (9, "members_added", ia),
        (10, "role_changed", ia),
        (11, "role_changed", ia),
        (12, "member_left", ia),
        (13, "role_changed", ia),
        (14, "members_added", id),
        (15, "text", ie),
    ];
    let want = |range: std::ops::RangeInclusive<i64>| -> Vec<(i64, String)> {
        full.iter().filter(|(seq, _, _)| range.contains(seq)).map(|(seq, k, _)| (*seq, k.to_string())).collect()
    };
    let h = a.history(&g).await;
    assert_eq!(kinds(&h), want(1..=11));
    for (m, (_, _, sender)) in h.iter().zip(&full) {
        assert_eq!(m["sender_id"], *sender, "{m}");
    }

    // seq 12, 13: a, the last admin, leaves; d, the longest-standing member, is promoted.
    let m = marks(&[&wd, &we]);
    a.delete(&member_path(&g, ia)).await.expect(204);
    expect_entry(&[&wa, &wd, &we], &g, 12, "member_left", ia, json!({"user_id": ia})).await;
    expect_entry(&[&wd, &we], &g, 13, "role_changed", ia, json!({"user_id": id, "role": "admin", "by": ia})).await;
    expect_conv_frame(&[&wd, &we], &m, &g, "a leaves", |f| {
        f["members_count"] == 2 && role_of(f, ia).is_none() && role_of(f, id).as_deref() == Some("admin")
    })
    .await;
    refused(a.get(&format!("{}/messages", conv_path(&g))).await, 404, "not_found", "left: history");

    // seq 14: d, now the admin, adds c back; seq 15: a message for everyone.
    let m = marks(&[&wc, &wd, &we]);
    d.post(&format!("{}/members", conv_path(&g)), &json!({"user_ids": [ic]})).await.expect(200);
    expect_entry(&[&wc, &wd, &we], &g, 14, "members_added", id, json!({"user_ids": [ic], "by": id})).await;
    expect_conv_frame(&[&wc, &wd, &we], &m, &g, "c is back", |f| {
        f["members_count"] == 3 && role_of(f, ic).as_deref() == Some("member")
    })
    .await;
    assert_eq!(i(&we.send_text(&g, "welcome back").await, "seq"), 15);

    // Everything is delivered: each connection got exactly its window of the log, in order, less
    // its own sends.
    for to in [a, b, c, d, e] {
        fence(z, to).await;
    }
    for w in [&wa, &wb, &wc, &wd, &we] {
        w.wait_for(|f| f["type"] == "message" && f["body"]["text"] == "fence", T).await;
    }
    let live = [
        (&wa, vec![1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]),
        (&wb, vec![1, 3, 4, 5, 6, 7, 8]),
        (&wc, vec![1, 2, 3, 4, 5, 6, 14, 15]),
        (&wd, vec![4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
        (&we, vec![9, 10, 11, 12, 13, 14]),
    ];
    for (n, (w, want)) in live.iter().enumerate() {
        assert_eq!(seqs(&w.messages(&g)), *want, "connection {n} (a, b, c, d, e)");
    }

    // History: each current member reads from their (latest) join on.
    assert_eq!(kinds(&d.history(&g).await), want(4..=15));
    assert_eq!(kinds(&e.history(&g).await), want(9..=15));
    assert_eq!(kinds(&c.history(&g).await), want(14..=15), "a re-added member sees only from the new join");
    let page = |q: &str| format!("{}/messages?{q}", conv_path(&g));
    let after = c.get(&page("after_seq=1&limit=200")).await.expect(200);
    assert_eq!(seqs(after["messages"].as_array().unwrap()), vec![14, 15]);
    let before = c.get(&page("before_seq=14")).await.expect(200);
    assert_eq!(before["messages"], json!([]), "nothing before the new join");
    refused(c.get(&format!("{}/messages/7/receipts", conv_path(&g))).await, 404, "not_found", "receipts out of window");
    let view = d.conversation(&g).await;
    assert_eq!(view["title"], "Team 2");
    assert_eq!((i(&view, "last_seq"), i(&view, "members_count")), (15, 3));
    assert_eq!(roles(&view), sorted_roles(&[(id, "admin"), (ie, "member"), (ic, "member")]));
    assert_eq!(i(&c.conversation(&g).await, "unread_count"), 1, "only e's message after c's return is unread");

    // Replay: a new device of each user gets its user's window; c's old device (nothing
    // acknowledged) also starts at the new join.
    wc.close().await;
    let windows = [(a, 1..=12), (b, 1..=8), (c, 14..=15), (d, 4..=15), (e, 9..=15)];
    for (user, window) in windows {
        let w = user.user.login().await.connect().await;
        let at = w.wait_synced(LONG).await;
        let want: Vec<i64> = window.collect();
        assert_eq!(seqs(&replayed(&w, &g, at)), want, "replay for a new device of {}", user.user.username);
    }
    let w = c.connect().await;
    let at = w.wait_synced(LONG).await;
    assert_eq!(seqs(&replayed(&w, &g, at)), vec![14, 15], "c's old device replays from the new join");
}

// ------------------------------------------------------------------------------------------
// 2. Messages racing a removal
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_racing_a_removal_reach_the_removed_member_up_to_the_removal_entry() {
    const SENDERS: usize = 4;
    /// Sends each sender makes before the removal, and at least that many after it.
    const BEFORE: usize = 15;
    const AFTER: usize = 15;
    const MAX: usize = 3_000;
    let srv = TestServer::start_with(&["--send-rate-per-sec", "100000", "--send-burst", "100000"]).await;
    let v = srv.logins(SENDERS + 2).await;
    let (admin, x, senders) = (&v[0], &v[1], &v[2..]);
    let ix = x.user_id();
    // x has two devices: one only listens, the other sends too.
    let x2 = x.user.login().await;
    let members: Vec<&str> = v[1..].iter().map(Device::user_id).collect();
    let g = admin.group("race", &members).await;
    let wadmin = admin.connect_synced().await;
    let wx = x.connect_synced().await;
    let wx2 = Arc::new(x2.connect_synced().await);
    let mut wsenders = Vec::new();
    for s in senders {
        wsenders.push(Arc::new(s.connect_synced().await));
    }

    let (removed_tx, removed_rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = wsenders
        .iter()
        .enumerate()
        .map(|(k, ws)| {
            let (ws, g, removed) = (ws.clone(), g.clone(), removed_rx.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut after = 0;
                while after < AFTER && sent.len() < MAX {
                    let was_removed = *removed.borrow();
                    sent.extend(ws.send_texts(&g, &format!("s{k}-{}-", sent.len()), 3).await);
                    if was_removed {
                        after += 3;
                    }
                }
                sent
            })
        })
        .collect();
    // x sends too, one at a time, until it is refused.
    let x_task = {
        let (ws, g) = (wx2.clone(), g.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            loop {
                let reply = ws.request(Ws::text_frame(&g, &unique("x"), &format!("x{}", sent.len()))).await;
                if reply["type"] != "sent" || sent.len() >= MAX {
                    return (sent, reply);
                }
                sent.push(reply);
            }
        })
    };
    for ws in &wsenders {
        ws.wait_count(|f| f["type"] == "sent", BEFORE, LONG).await;
    }
    admin.delete(&member_path(&g, ix)).await.expect(204);
    removed_tx.send_replace(true);
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.expect("sender task"));
    }
    let (x_sent, x_refusal) = x_task.await.expect("x's sender task");
    assert_eq!(x_refusal["type"], "error", "{x_refusal}");
    assert_eq!(x_refusal["code"], "not_member", "{x_refusal}");

    // The log: gap-free, one removal entry at seq r, every accepted send in it.
    let history = admin.history(&g).await;
    let last = i(history.last().unwrap(), "seq");
    assert_eq!(seqs(&history), (1..=last).collect::<Vec<_>>(), "the log is gap-free");
    let removal: Vec<&Value> = history.iter().filter(|m| m["kind"] == "member_removed").collect();
    assert_eq!(removal.len(), 1, "{removal:?}");
    let r = i(removal[0], "seq");
    assert_eq!(removal[0]["body"], json!({"user_id": ix, "by": admin.user_id()}));
    for a in sent.iter().chain(&x_sent) {
        let m = &history[(i(a, "seq") - 1) as usize];
        assert_eq!(m["message_id"], a["message_id"], "{m} vs {a}");
    }
    assert!(x_sent.iter().all(|a| i(a, "seq") < r), "x's accepted sends precede its removal");
    let (before, after) =
        (sent.iter().filter(|a| i(a, "seq") < r).count(), sent.iter().filter(|a| i(a, "seq") > r).count());
    assert!(
        before >= SENDERS * BEFORE && after >= SENDERS * AFTER,
        "the sends overlapped the removal: {before} before, {after} after"
    );

    // x's devices got exactly 1..=r, in order, and nothing after.
    let cid = fence(admin, x).await;
    wx.wait_for(is_msg(&cid), T).await;
    wx2.wait_for(is_msg(&cid), T).await;
    let got = wx.messages(&g);
    assert_eq!(seqs(&got), (1..=r).collect::<Vec<_>>(), "x's listening device: its window, in order, once");
    for m in &got {
        assert_eq!(m["message_id"], history[(i(m, "seq") - 1) as usize]["message_id"], "{m}");
    }
    let mut with_own: Vec<i64> = seqs(&wx2.messages(&g));
    assert!(with_own.windows(2).all(|w| w[0] < w[1]), "in seq order: {with_own:?}");
    with_own.extend(x_sent.iter().map(|a| i(a, "seq")));
    with_own.sort_unstable();
    assert_eq!(with_own, (1..=r).collect::<Vec<_>>(), "x's sending device: its window less its own sends");
    // The admin, a member throughout, got all of it.
    wadmin.wait_for(is_entry(&g, last), LONG).await;
    assert_eq!(seqs(&wadmin.messages(&g)), (1..=last).collect::<Vec<_>>());

    // A new device of x replays the same window before synced, and nothing more comes.
    let w3 = x.user.login().await.connect().await;
    let at = w3.wait_synced(LONG).await;
    let replay = replayed(&w3, &g, at);
    assert_eq!(seqs(&replay), (1..=r).collect::<Vec<_>>(), "replay for a new device of x");
    w3.barrier().await;
    assert_eq!(w3.messages(&g).len(), replay.len());

    // x is out.
    refused(x.get(&conv_path(&g)).await, 404, "not_found", "GET");
    refused(x.get(&format!("{}/messages", conv_path(&g))).await, 404, "not_found", "history");
    refused(x.get(&format!("{}/messages/1/receipts", conv_path(&g))).await, 404, "not_found", "receipts");
    let (status, _) = x.post_text(&g, &unique("c"), "still here?").await;
    assert_eq!(status, 404);
    w3.expect_error(Ws::text_frame(&g, &unique("c"), "still here?"), "not_member").await;
}

// ------------------------------------------------------------------------------------------
// 3. 1,024 members online
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_of_1024_online_members_gets_each_message_once_in_order() {
    const MEMBERS: usize = 1024;
    const SENDERS: usize = 8;
    const EACH: usize = 8;
    let t0 = Instant::now();
    let srv = TestServer::start_with(&["--admin-token", ADMIN_TOKEN]).await;
    let members = srv.bulk_logins(MEMBERS).await;
    let (online, offline) = (&members[..MEMBERS - 1], &members[MEMBERS - 1]);
    let conns: Vec<Ws> =
        futures_util::stream::iter(online.iter().map(Device::connect_lean)).buffered(64).collect().await;
    let t_connected = t0.elapsed();

    let ids: Vec<&str> = members[1..].iter().map(Device::user_id).collect();
    let r =
        members[0].post("/v1/conversations", &json!({"kind": "group", "title": "everyone", "member_ids": ids})).await;
    let view = r.expect(201)["conversation"].clone();
    assert_eq!(i(&view, "members_count"), MEMBERS as i64);
    let g = s(&view, "conversation_id");

    // Several members send at once, each pipelining.
    let sent: Vec<Vec<Value>> = futures_util::future::join_all(conns[1..=SENDERS].iter().enumerate().map(|(k, w)| {
        let (w, g) = (w, g.clone());
        async move { w.send_texts(&g, &format!("m{k}-"), EACH).await }
    }))
    .await;
    let last = 1 + (SENDERS * EACH) as i64;
    let mut all: Vec<i64> = sent.iter().flatten().map(|a| i(a, "seq")).collect();
    all.sort_unstable();
    assert_eq!(all, (2..=last).collect::<Vec<_>>());

    // Every online member: the whole log (less its own sends) once, in seq order, and the
    // group's `conversation` frame.
    let history = members[0].history(&g).await;
    assert_eq!(seqs(&history), (1..=last).collect::<Vec<_>>());
    for (k, w) in conns.iter().enumerate() {
        let own: Vec<i64> = if (1..=SENDERS).contains(&k) { seqs(&sent[k - 1]) } else { Vec::new() };
        let want: Vec<i64> = (1..=last).filter(|q| !own.contains(q)).collect();
        let is_g = |f: &Value| f["type"] == "message" && f["conversation_id"] == g.as_str();
        let got = w.try_wait_count(is_g, want.len(), LONG).await.unwrap_or_else(|e| panic!("member {k}: {e}"));
        assert_eq!(seqs(&got), want, "member {k}");
        for m in &got {
            assert_eq!(m["message_id"], history[(i(m, "seq") - 1) as usize]["message_id"], "member {k}: {m}");
        }
        w.try_wait_for_from(0, |f| f["type"] == "conversation" && f["conversation_id"] == g.as_str(), T)
            .await
            .unwrap_or_else(|e| panic!("member {k} got no `conversation` frame: {e}"));
    }
    let t_delivered = t0.elapsed();

    // The member who was offline replays all of it before synced.
    let w = offline.connect_lean().await;
    let at = w.frames().iter().position(|f| f["type"] == "synced").expect("synced");
    let replay = replayed(&w, &g, at);
    assert_eq!(seqs(&replay), (1..=last).collect::<Vec<_>>());
    for (m, h) in replay.iter().zip(&history) {
        assert_eq!(m["message_id"], h["message_id"]);
        assert_eq!(m["body"], h["body"]);
    }
    eprintln!(
        "1,024 members: connected in {t_connected:?}, all delivered at {t_delivered:?}, replayed at {:?}",
        t0.elapsed()
    );
}

// ------------------------------------------------------------------------------------------
// 4. Concurrent senders
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_leave_one_gap_free_order_seen_alike_by_every_member() {
    const MEMBERS: usize = 64;
    const SENDERS: usize = 8;
    const ROUNDS: usize = 3;
    const BATCH: usize = 50;
    let srv = TestServer::start_with(&["--admin-token", ADMIN_TOKEN]).await;
    let members = srv.bulk_logins(MEMBERS).await;
    let mut conns = Vec::new();
    for m in &members {
        conns.push(Arc::new(m.connect_synced().await));
    }
    let ids: Vec<&str> = members[1..].iter().map(Device::user_id).collect();
    let g = members[0].group("busy", &ids).await;

    let tasks: Vec<_> = (1..=SENDERS)
        .map(|k| {
            let (ws, g) = (conns[k].clone(), g.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for round in 0..ROUNDS {
                    sent.extend(ws.send_texts(&g, &format!("s{k}r{round}-"), BATCH).await);
                }
                sent
            })
        })
        .collect();
    let mut sent: Vec<Vec<Value>> = Vec::new();
    for t in tasks {
        sent.push(t.await.expect("sender task"));
    }
    let last = 1 + (SENDERS * ROUNDS * BATCH) as i64;

    // One gap-free log holding every send; each sender's sends in the order it sent them.
    let history = members[0].history(&g).await;
    assert_eq!(seqs(&history), (1..=last).collect::<Vec<_>>(), "the log is gap-free");
    for (k, mine) in sent.iter().enumerate() {
        let q = seqs(mine);
        assert!(q.windows(2).all(|w| w[0] < w[1]), "sender {k}: pipelined sends keep their order");
        for (n, a) in mine.iter().enumerate() {
            let m = &history[(i(a, "seq") - 1) as usize];
            assert_eq!(m["message_id"], a["message_id"]);
            assert_eq!(m["body"]["text"], format!("s{}r{}-{}", k + 1, n / BATCH, n % BATCH));
        }
    }

    // Every member received the same order: the log's, less its own sends, each once.
    for (k, w) in conns.iter().enumerate() {
        let own: Vec<i64> = if (1..=SENDERS).contains(&k) { seqs(&sent[k - 1]) } else { Vec::new() };
        let want: Vec<i64> = (1..=last).filter(|q| !own.contains(q)).collect();
        let is_g = |f: &Value| f["type"] == "message" && f["conversation_id"] == g.as_str();
        let got = w.try_wait_count(is_g, want.len(), LONG).await.unwrap_or_else(|e| panic!("member {k}: {e}"));
        assert_eq!(seqs(&got), want, "member {k}");
        for m in &got {
            assert_eq!(m["message_id"], history[(i(m, "seq") - 1) as usize]["message_id"], "member {k}: {m}");
        }
    }
}

// ------------------------------------------------------------------------------------------
// 5. Limits and errors
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_has_at_most_1024_members_at_creation_and_on_add() {
    let srv = TestServer::start_with(&["--admin-token", ADMIN_TOKEN]).await;
    let accs = srv.bulk_logins(1026).await;
    let ids: Vec<&str> = accs.iter().map(Device::user_id).collect();
    let creator = &accs[0];
    let create = |member_ids: &[&str]| json!({"kind": "group", "title": "big", "member_ids": member_ids});

    // 1,025 in all (1,024 others and the creator), with or without the creator in the list.
    let r = creator.post("/v1/conversations", &create(&ids[1..=1024])).await;
    r.expect_error(400, "bad_request");
    let r = creator.post("/v1/conversations", &create(&ids[0..=1024])).await;
    r.expect_error(400, "bad_request");
    for who in [creator, &accs[1]] {
        let listed = who.get("/v1/conversations").await.expect(200);
        assert_eq!(listed["conversations"], json!([]), "nothing was created");
    }

    // Exactly 1,024.
    let r = creator.post("/v1/conversations", &create(&ids[1..1024])).await;
    let view = r.expect(201)["conversation"].clone();
    let g = s(&view, "conversation_id");
    assert_eq!((i(&view, "members_count"), i(&view, "last_seq")), (1024, 1));
    let members = format!("{}/members", conv_path(&g));

    // One more, two more, or a list of 1,026 (mostly members already): refused, nothing changed.
    for add in [&ids[1024..=1024], &ids[1024..=1025], &ids[..]] {
        let r = creator.post(&members, &json!({"user_ids": add})).await;
        assert_eq!(r.status, 400, "adding {} ids: {}", add.len(), r.body);
        r.expect_error(400, "bad_request");
    }
    let view = creator.conversation(&g).await;
    assert_eq!((i(&view, "members_count"), i(&view, "last_seq")), (1024, 1), "nothing changed");
    assert_eq!(view["members"].as_array().map(Vec::len), Some(1024));
    refused(accs[1024].get(&conv_path(&g)).await, 404, "not_found", "refused addition");

    // Adding people who are already members adds nothing and writes no entry.
    let view = creator.post(&members, &json!({"user_ids": [ids[1], ids[2]]})).await.expect(200)["conversation"].clone();
    assert_eq!((i(&view, "members_count"), i(&view, "last_seq")), (1024, 1));

    // Someone leaves: room for exactly one.
    accs[1023].delete(&member_path(&g, ids[1023])).await.expect(204);
    creator.post(&members, &json!({"user_ids": [ids[1024], ids[1025]]})).await.expect_error(400, "bad_request");
    let view = creator.post(&members, &json!({"user_ids": [ids[1024]]})).await.expect(200)["conversation"].clone();
    assert_eq!((i(&view, "members_count"), i(&view, "last_seq")), (1024, 3));
    let h = creator.history(&g).await;
    let kinds: Vec<&str> = h.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["conversation_created", "member_left", "members_added"]);
    assert_eq!(h[0]["body"]["user_ids"].as_array().map(Vec::len), Some(1024));
    assert_eq!(h[2]["body"], json!({"user_ids": [ids[1024]], "by": ids[0]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_and_strangers_are_refused_and_bad_input_changes_nothing() {
    let srv = TestServer::start().await;
    let v = srv.logins(4).await;
    let (a, b, c, st) = (&v[0], &v[1], &v[2], &v[3]);
    let (ia, ib, ic, ist) = (a.user_id(), b.user_id(), c.user_id(), st.user_id());
    let g = a.group("rules", &[ib, ic]).await;
    let gp = conv_path(&g);
    let members = format!("{gp}/members");

    // A member who is not an admin.
    refused(b.patch(&gp, &json!({"title": "mine"})).await, 403, "forbidden", "member renames");
    refused(b.post(&members, &json!({"user_ids": [ist]})).await, 403, "forbidden", "member adds");
    refused(b.delete(&member_path(&g, ic)).await, 403, "forbidden", "member removes");
    refused(b.patch(&member_path(&g, ic), &json!({"role": "admin"})).await, 403, "forbidden", "member promotes");
    refused(b.patch(&member_path(&g, ib), &json!({"role": "admin"})).await, 403, "forbidden", "self-promotion");
    refused(b.patch(&member_path(&g, ia), &json!({"role": "member"})).await, 403, "forbidden", "member demotes");

    // A stranger: the group does not exist for them.
    refused(st.get(&gp).await, 404, "not_found", "GET");
    refused(st.patch(&gp, &json!({"title": "mine"})).await, 404, "not_found", "rename");
    refused(st.post(&members, &json!({"user_ids": [ist]})).await, 404, "not_found", "add self");
    refused(st.delete(&member_path(&g, ib)).await, 404, "not_found", "remove");
    refused(st.delete(&member_path(&g, ist)).await, 404, "not_found", "leave");
    refused(st.patch(&member_path(&g, ist), &json!({"role": "admin"})).await, 404, "not_found", "role");
    refused(st.get(&format!("{gp}/messages")).await, 404, "not_found", "history");
    refused(st.get(&format!("{gp}/messages/1/receipts")).await, 404, "not_found", "receipts");
    let (status, _) = st.post_text(&g, &unique("c"), "hello?").await;
    assert_eq!(status, 404);
    let wst = st.connect_synced().await;
    wst.expect_error(Ws::text_frame(&g, &unique("c"), "hello?"), "not_member").await;

    // Bad input from the admin.
    for title in ["", "   "] {
        refused(a.patch(&gp, &json!({"title": title})).await, 400, "bad_request", "empty title");
        let r = a.post("/v1/conversations", &json!({"kind": "group", "title": title, "member_ids": [ib]})).await;
        refused(r, 400, "bad_request", "create with an empty title");
    }
    let r = a
        .post("/v1/conversations", &json!({"kind": "group", "title": "ghosts", "member_ids": [ib, "123456789"]}))
        .await;
    refused(r, 400, "bad_request", "create with a user who does not exist");
    refused(a.patch(&member_path(&g, ib), &json!({"role": "owner"})).await, 400, "bad_request", "unknown role");
    refused(a.patch(&member_path(&g, ia), &json!({"role": "member"})).await, 400, "bad_request", "no admin left");
    refused(a.delete(&member_path(&g, ist)).await, 404, "not_found", "remove a non-member");
    refused(a.patch(&member_path(&g, ist), &json!({"role": "admin"})).await, 404, "not_found", "promote a non-member");

    // Nothing changed.
    let view = a.conversation(&g).await;
    assert_eq!(view["title"], "rules");
    assert_eq!((i(&view, "last_seq"), i(&view, "members_count")), (1, 3));
    assert_eq!(roles(&view), sorted_roles(&[(ia, "admin"), (ib, "member"), (ic, "member")]));
    let listed = a.get("/v1/conversations").await.expect(200);
    assert_eq!(listed["conversations"].as_array().map(Vec::len), Some(1), "no other group was created: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_reactions_and_replies_follow_their_rules() {
    let srv = TestServer::start().await;
    let v = srv.logins(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let g = a.group("msgs", &[b.user_id(), c.user_id()]).await;
    let wa = a.connect_synced().await;
    let wb = b.connect_synced().await;
    let wc = c.connect_synced().await;
    let edit = |seq: i64, text: &str| send_frame(&g, "edit", json!({"target_seq": seq, "text": text}));
    let delete = |seq: i64| send_frame(&g, "delete", json!({"target_seq": seq}));
    let react = |seq: i64, emoji: &str| send_frame(&g, "reaction", json!({"target_seq": seq, "emoji": emoji}));

    let m = i(&wb.send_text(&g, "original").await, "seq");
    // Only the author edits (an admin neither); only the author or an admin deletes.
    wc.expect_error(edit(m, "hijacked"), "forbidden").await;
    wa.expect_error(edit(m, "admin's words"), "forbidden").await;
    wc.expect_error(delete(m), "forbidden").await;
    let r = c
        .post(
            &format!("{}/messages", conv_path(&g)),
            &json!({"client_id": unique("c"), "kind": "delete", "body": {"target_seq": m}}),
        )
        .await;
    refused(r, 403, "forbidden", "REST delete of another's message");
    // Targets that do not exist.
    wc.expect_error(react(999, "👍"), "not_found").await;
    wb.expect_error(edit(999, "x"), "not_found").await;
    wa.expect_error(delete(999), "not_found").await;

    // The author edits; the others get the edit.
    let e = sent_seq(&wb, edit(m, "fixed")).await;
    for w in [&wa, &wc] {
        let f = w.wait_for(is_entry(&g, e), T).await;
        assert_eq!(f["kind"], "edit");
        assert_eq!(f["body"], json!({"target_seq": m, "text": "fixed"}));
        assert_eq!(f["sender_id"], b.user_id());
    }
    // Anyone reacts; an empty emoji takes the reaction back.
    let r1 = sent_seq(&wc, react(m, "👍")).await;
    let r2 = sent_seq(&wc, react(m, "")).await;
    let f = wa.wait_for(is_entry(&g, r1), T).await;
    assert_eq!((f["kind"].as_str(), &f["body"]), (Some("reaction"), &json!({"target_seq": m, "emoji": "👍"})));
    let f = wa.wait_for(is_entry(&g, r2), T).await;
    assert_eq!(f["body"], json!({"target_seq": m, "emoji": ""}));
    // Replies.
    let reply = sent_seq(&wc, send_frame(&g, "text", json!({"text": "re", "reply_to_seq": m}))).await;
    let f = wb.wait_for(is_entry(&g, reply), T).await;
    assert_eq!(f["body"], json!({"text": "re", "reply_to_seq": m}));

    // An admin deletes another's message; then it is gone for edits, reactions and deletes.
    let del = sent_seq(&wa, delete(m)).await;
    for w in [&wb, &wc] {
        let f = w.wait_for(is_entry(&g, del), T).await;
        assert_eq!((f["kind"].as_str(), &f["body"]), (Some("delete"), &json!({"target_seq": m})));
    }
    wb.expect_error(edit(m, "again"), "not_found").await;
    wc.expect_error(react(m, "😮"), "not_found").await;
    wb.expect_error(delete(m), "not_found").await;

    // A member deletes their own message, not another member's.
    let m2 = i(&wc.send_text(&g, "mine").await, "seq");
    wb.expect_error(delete(m2), "forbidden").await;
    sent_seq(&wc, delete(m2)).await;

    let kinds: Vec<String> = a.history(&g).await.iter().map(|m| s(m, "kind")).collect();
    assert_eq!(
        kinds,
        ["conversation_created", "text", "edit", "reaction", "reaction", "text", "delete", "text", "delete"],
        "refused sends wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_conversations_refuse_group_operations() {
    let srv = TestServer::start().await;
    let v = srv.logins(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let dm = a.direct(b.user_id()).await;
    let p = conv_path(&dm);
    refused(a.patch(&p, &json!({"title": "ours"})).await, 400, "bad_request", "rename");
    refused(a.post(&format!("{p}/members"), &json!({"user_ids": [c.user_id()]})).await, 400, "bad_request", "add");
    refused(a.delete(&member_path(&dm, b.user_id())).await, 400, "bad_request", "remove");
    refused(a.delete(&member_path(&dm, a.user_id())).await, 400, "bad_request", "leave");
    refused(a.patch(&member_path(&dm, b.user_id()), &json!({"role": "admin"})).await, 400, "bad_request", "role");
    let view = b.conversation(&dm).await;
    assert_eq!((i(&view, "last_seq"), i(&view, "members_count")), (1, 2), "nothing changed: {view}");
    assert!(view["title"].is_null());

    // Nobody is an admin of a direct conversation: only the author deletes.
    let wa = a.connect_synced().await;
    let wb = b.connect_synced().await;
    let m = i(&wa.send_text(&dm, "mine").await, "seq");
    wb.expect_error(send_frame(&dm, "delete", json!({"target_seq": m})), "forbidden").await;
    sent_seq(&wa, send_frame(&dm, "delete", json!({"target_seq": m}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_accounts_need_the_admin_token() {
    // Without a configured token the admin API does not exist.
    let plain = TestServer::start().await;
    let r = plain.api().bulk_accounts(ADMIN_TOKEN, &unique("p"), 2, PASSWORD).await;
    r.expect_error(404, "not_found");

    let srv = TestServer::start_with(&["--admin-token", ADMIN_TOKEN]).await;
    let api = srv.api();
    api.bulk_accounts("it-admin-token-not-secreT", &unique("p"), 2, PASSWORD).await.expect_error(401, "unauthorized");
    srv.post("/v1/admin/accounts", &json!({"prefix": unique("p"), "count": 2, "password": PASSWORD}), None)
        .await
        .expect_error(401, "unauthorized");
    api.bulk_accounts(ADMIN_TOKEN, &unique("p"), 0, PASSWORD).await.expect_error(400, "bad_request");
    api.bulk_accounts(ADMIN_TOKEN, "no spaces", 2, PASSWORD).await.expect_error(400, "bad_request");
    api.bulk_accounts(ADMIN_TOKEN, &unique("p"), 2, "short").await.expect_error(400, "bad_request");

    // The accounts work like any: their tokens, their password, a conversation between them.
    let made = srv.bulk_logins(3).await;
    for d in &made {
        let me = d.get("/v1/me").await.expect(200);
        assert_eq!(s(&me, "user_id"), d.user_id());
        assert_eq!(s(&me, "username"), d.user.username);
    }
    let again = made[0].user.login().await;
    let g = again.group("provisioned", &[made[1].user_id(), made[2].user_id()]).await;
    let w = made[2].connect_synced().await;
    assert_eq!(seqs(&w.messages(&g)), vec![1]);
}

// ------------------------------------------------------------------------------------------
// 6. Receipts
// ------------------------------------------------------------------------------------------

async fn receipts(who: &Device, conv: &str, seq: i64) -> Value {
    who.get(&format!("{}/messages/{seq}/receipts", conv_path(conv))).await.expect(200)
}

fn receipt_of<'a>(conv: &'a str, user: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |f: &Value| f["type"] == "receipt" && f["conversation_id"] == conv && f["user_id"] == user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_reach_the_other_members_of_a_small_group() {
    let srv = TestServer::start().await;
    let v = srv.logins(4).await;
    let (a, b, c, x) = (&v[0], &v[1], &v[2], &v[3]);
    let (ib, ic) = (b.user_id(), c.user_id());
    let g = a.group("small", &[ib, ic, x.user_id()]).await;
    let wa = a.connect_synced().await;
    let wb = b.connect_synced().await;
    let wc = c.connect_synced().await;
    let wx = x.connect_synced().await;
    // x is removed first: a former member gets no receipts.
    a.delete(&member_path(&g, x.user_id())).await.expect(204);
    wx.wait_for(is_entry(&g, 2), T).await;

    let m = i(&wa.send_text(&g, "read me").await, "seq");
    wb.wait_for(is_entry(&g, m), T).await;
    wc.wait_for(is_entry(&g, m), T).await;

    // b has it: a and c learn so.
    wb.send_json(&json!({"type": "ack", "conversation_id": g, "seq": m})).await;
    for w in [&wa, &wc] {
        let r = w.wait_for(|f| receipt_of(&g, ib)(f) && f["delivered_seq"] == m, T).await;
        assert!(i(&r, "read_seq") < m, "not read yet: {r}");
    }
    wb.barrier().await;
    let r = receipts(a, &g, m).await;
    assert_eq!((i(&r, "members_count"), i(&r, "delivered_count"), i(&r, "read_count")), (3, 2, 1), "{r}");

    // b and c read it.
    wb.send_json(&json!({"type": "read", "conversation_id": g, "seq": m})).await;
    for w in [&wa, &wc] {
        w.wait_for(|f| receipt_of(&g, ib)(f) && f["read_seq"] == m, T).await;
    }
    wc.send_json(&json!({"type": "read", "conversation_id": g, "seq": m})).await;
    for w in [&wa, &wb] {
        let r = w.wait_for(|f| receipt_of(&g, ic)(f) && f["read_seq"] == m, T).await;
        assert_eq!(i(&r, "delivered_seq"), m, "read implies delivered: {r}");
    }
    wb.barrier().await;
    wc.barrier().await;
    let r = receipts(a, &g, m).await;
    assert_eq!((i(&r, "members_count"), i(&r, "delivered_count"), i(&r, "read_count")), (3, 3, 3), "{r}");
    let listed = r["members"].as_array().expect("members are listed in a group of 3");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|e| e["delivered"] == true && e["read"] == true), "{r}");

    // Coalesced: a burst of acks makes far fewer pushes, and the last carries the latest.
    let sent = wa.send_texts(&g, "burst", 20).await;
    let top = sent.iter().map(|a| i(a, "seq")).max().unwrap();
    wb.wait_for(is_entry(&g, top), T).await;
    let before = wa.frames().iter().filter(|f| receipt_of(&g, ib)(f)).count();
    let acks: Vec<Value> =
        (m + 1..=top).map(|q| json!({"type": "ack", "conversation_id": g, "seq": q, "ref": unique("k")})).collect();
    wb.send_all(&acks).await.expect("acks");
    wa.wait_for(|f| receipt_of(&g, ib)(f) && f["delivered_seq"] == top, T).await;
    let pushes = wa.frames().iter().filter(|f| receipt_of(&g, ib)(f)).count() - before;
    assert!(pushes < acks.len() / 2, "{} acks made {pushes} receipt pushes", acks.len());

    // x, removed before any of this, got none of it.
    let cid = fence(a, x).await;
    wx.wait_for(is_msg(&cid), T).await;
    let leaked: Vec<Value> = wx.frames().into_iter().filter(|f| f["type"] == "receipt").collect();
    assert!(leaked.is_empty(), "a former member got receipts: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_above_32_get_no_receipt_pushes_but_the_endpoint_counts() {
    const MEMBERS: usize = 40;
    let srv = TestServer::start_with(&["--admin-token", ADMIN_TOKEN]).await;
    let m = srv.bulk_logins(MEMBERS).await;
    let ids: Vec<&str> = m[1..].iter().map(Device::user_id).collect();
    let g = m[0].group("forty", &ids).await;
    // The largest group that still gets pushes: 32 members.
    let small = m[0].group("thirty-two", &ids[..31]).await;
    let mut conns = Vec::new();
    for d in &m {
        conns.push(d.connect_synced().await);
    }
    let s1 = i(&conns[0].send_text(&g, "one").await, "seq");
    let s2 = i(&conns[0].send_text(&g, "two").await, "seq");
    for w in &conns[1..] {
        w.wait_for(is_entry(&g, s2), T).await;
    }

    // m1..m15 acknowledge both; m16..m25 read the first only (reading implies having it);
    // the rest do nothing.
    for (k, w) in conns.iter().enumerate().skip(1) {
        match k {
            1..=15 => w.send_json(&json!({"type": "ack", "conversation_id": g, "seq": s2})).await,
            16..=25 => w.send_json(&json!({"type": "read", "conversation_id": g, "seq": s1})).await,
            _ => {}
        }
    }
    for w in &conns[1..=25] {
        w.barrier().await;
    }
    let r = receipts(&m[5], &g, s1).await;
    assert_eq!((i(&r, "members_count"), i(&r, "delivered_count"), i(&r, "read_count")), (40, 26, 11), "{r}");
    assert!(r.get("members").is_none_or(Value::is_null), "members are listed only up to 32: {r}");
    let r = receipts(&m[5], &g, s2).await;
    assert_eq!((i(&r, "delivered_count"), i(&r, "read_count")), (16, 1), "{r}");

    // No receipt frames. A later message in the group fences any push made at once; a held
    // (coalesced) one would be due no later than the second receipt of the 32-member group
    // below, which is itself held, and a message after that fences the tick that sent it.
    let fence1 = i(&conns[0].send_text(&g, "fence").await, "seq");
    for w in &conns[1..] {
        w.wait_for(is_entry(&g, fence1), T).await;
    }
    let ws1 = &conns[1];
    let t1 = i(&conns[0].send_text(&small, "s1").await, "seq");
    let t2 = i(&conns[0].send_text(&small, "s2").await, "seq");
    ws1.wait_for(is_entry(&small, t2), T).await;
    ws1.send_json(&json!({"type": "ack", "conversation_id": small, "seq": t1})).await;
    ws1.send_json(&json!({"type": "ack", "conversation_id": small, "seq": t2})).await;
    for w in [&conns[0], &conns[2], &conns[31]] {
        w.wait_for(|f| receipt_of(&small, m[1].user_id())(f) && f["delivered_seq"] == t2, T).await;
    }
    ws1.barrier().await;
    let r = receipts(&m[0], &small, t2).await;
    assert_eq!((i(&r, "members_count"), i(&r, "delivered_count"), i(&r, "read_count")), (32, 2, 1), "{r}");
    assert_eq!(r["members"].as_array().map(Vec::len), Some(32), "members listed up to 32: {r}");
    let last = ws1.send_text(&small, "after the receipts").await;
    conns[0]
        .wait_for(|f| f["type"] == "message" && f["seq"] == last["seq"] && f["conversation_id"] == small.as_str(), T)
        .await;
    for (k, w) in conns.iter().enumerate() {
        let pushed: Vec<Value> =
            w.frames().into_iter().filter(|f| f["type"] == "receipt" && f["conversation_id"] == g.as_str()).collect();
        assert!(pushed.is_empty(), "member {k} got receipt frames for a group of 40: {pushed:?}");
    }
}

// ------------------------------------------------------------------------------------------
// 7. Fanout paths
// ------------------------------------------------------------------------------------------

/// Groups above `--fanout-worker-threshold` recipients fan out on the worker pool, smaller ones
/// at once. When the last admin leaves, the `member_left` entry still goes to the leaver (one
/// recipient more than the `role_changed` entry right after it), so a group at the threshold
/// sends the first on the pool and the second at once. A device must still get both, in order,
/// even when its connection has not seen this conversation yet (it had acknowledged everything
/// before connecting) and the pool is busy with another group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_crossing_the_fanout_worker_threshold_keeps_its_order() {
    const ROUNDS: usize = 4;
    const BUSY: usize = 400;
    let srv = TestServer::start_with(&[
        "--admin-token",
        ADMIN_TOKEN,
        "--fanout-worker-threshold",
        "3",
        "--fanout-workers",
        "1",
        "--send-rate-per-sec",
        "100000",
        "--send-burst",
        "100000",
    ])
    .await;
    // A big group (its members offline) whose messages keep the one fanout worker busy.
    let crowd = srv.bulk_logins(1000).await;
    let crowd_ids: Vec<&str> = crowd[1..].iter().map(Device::user_id).collect();
    let busy = crowd[0].group("busy", &crowd_ids).await;
    let wbusy = crowd[0].connect_synced().await;
    let v = srv.logins(4).await;
    let (a, b, c, d) = (&v[0], &v[1], &v[2], &v[3]);
    let wc = c.connect_synced().await;
    // A fence on the pool: with one worker, a message in this group (4 members, above the
    // threshold) reaches b only after everything queued on the pool before it.
    let pooled = d.group("pooled", &[a.user_id(), b.user_id(), c.user_id()]).await;
    for round in 0..ROUNDS {
        let g = a.group(&format!("round {round}"), &[b.user_id(), c.user_id(), d.user_id()]).await;
        // b has seen and acknowledged the group's first entry before connecting.
        let wb = b.connect_synced().await;
        wb.wait_for(is_entry(&g, 1), T).await;
        wb.send_json(&json!({"type": "ack", "conversation_id": g, "seq": 1})).await;
        wb.barrier().await;
        wb.close().await;
        let wb = b.connect_synced().await;
        assert!(wb.messages(&g).is_empty(), "nothing to replay");

        // The worker gets busy; a, the last admin, leaves: member_left (4 recipients, on the
        // pool) and role_changed (3 recipients, at once) in one commit.
        let frames: Vec<Value> = (0..BUSY).map(|k| Ws::text_frame(&busy, &unique("c"), &format!("busy{k}"))).collect();
        let from = wbusy.len();
        wbusy.send_all(&frames).await.expect("busy sends");
        wbusy.try_wait_for_from(from, |f| f["type"] == "sent", T).await.expect("the busy group is being written");
        a.delete(&member_path(&g, a.user_id())).await.expect(204);
        let cid = unique("fence");
        let (status, _) = d.post_text(&pooled, &cid, "fence").await;
        assert_eq!(status, 201);
        wb.wait_for(is_msg(&cid), LONG).await;
        wc.wait_for(is_msg(&cid), LONG).await;
        assert_eq!(seqs(&wc.messages(&g)), vec![1, 2, 3], "round {round}: c (its connection saw seq 1)");
        assert_eq!(seqs(&wb.messages(&g)), vec![2, 3], "round {round}: b (acknowledged seq 1, then connected)");
        wbusy.wait_count(|f| f["type"] == "sent", BUSY * (round + 1), LONG).await;
    }
}
