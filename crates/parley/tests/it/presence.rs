//! Presence and typing (PROTOCOL.md guarantee 5): online, offline and last seen with one and with
//! several devices; flap damping; who may watch whom (strangers, ids that do not exist, removed
//! members and those who left, hidden last seen and its reciprocity, the REST view); typing
//! delivery, thinning and the `active: false` the server sends itself; dead connections found by
//! keepalive.
//!
//! Proving that something does NOT arrive takes a later event that would have come after it: a
//! pong (frames queued for a connection before it reads a ping are written ahead of the pong), or
//! a presence change that was bound to be published later (one publish queues a frame for every
//! watcher at once; a grace period that starts later ends later). Server intervals are shortened
//! with flags; nothing sleeps.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMsg;

use crate::harness::*;

/// A user id no account has.
const NOBODY: &str = "999999999999";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

fn is_presence(user: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f: &Value| f["type"] == "presence" && f["user_id"] == user
}

fn online(user: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f: &Value| is_presence(user)(f) && f["online"] == true
}

fn offline(user: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f: &Value| is_presence(user)(f) && f["online"] == false
}

/// A `presence` frame as the server sends it.
fn presence(user: &str, online: bool, last_seen: Option<i64>) -> Value {
    json!({"type": "presence", "user_id": user, "online": online, "last_seen": last_seen})
}

/// A presence entry of `GET /v1/presence`.
fn entry(user: &str, online: bool, last_seen: Option<i64>) -> Value {
    json!({"user_id": user, "online": online, "last_seen": last_seen})
}

/// `user`'s presence frames on `ws` from index `from` on.
fn presence_from(ws: &Ws, user: &str, from: usize) -> Vec<Value> {
    ws.frames()[from..].iter().filter(|f| is_presence(user)(f)).cloned().collect()
}

/// Proves that nothing about `user` reached `ws` since index `from`.
async fn assert_no_presence_since(ws: &Ws, user: &str, from: usize, why: &str) {
    ws.barrier().await;
    let extra = presence_from(ws, user, from);
    assert!(extra.is_empty(), "{why}: got {extra:?}");
}

/// `presence_subscribe` to `ids`, sent between two pings: the reply is one `presence` frame per
/// id, in order, between the two pongs (in order with the other replies). Returns it.
async fn subscribe(ws: &Ws, ids: &[&str]) -> Vec<Value> {
    let start = ws.len();
    let (before, after) = (unique("p"), unique("p"));
    let frames = [
        json!({"type": "ping", "ref": before}),
        json!({"type": "presence_subscribe", "user_ids": ids}),
        json!({"type": "ping", "ref": after}),
    ];
    ws.send_all(&frames).await.unwrap_or_else(|e| panic!("subscribe: {e}"));
    ws.wait_for_from(start, |f| f["ref"] == after.as_str(), T).await;
    let all = ws.frames();
    let at = |r: &str| start + all[start..].iter().position(|f| f["ref"] == r).expect("pong");
    let (first, second) = (at(&before), at(&after));
    let asked = |f: &Value| f["type"] == "presence" && ids.iter().any(|id| f["user_id"] == *id);
    let early: Vec<&Value> = all[start..first].iter().filter(|f| asked(f)).collect();
    assert!(early.is_empty(), "presence frames ahead of the earlier pong: {early:?}");
    let reply: Vec<Value> = all[first..second].iter().filter(|f| f["type"] == "presence").cloned().collect();
    let got: Vec<&str> = reply.iter().map(|f| f["user_id"].as_str().unwrap_or("<no user_id>")).collect();
    assert_eq!(got, ids, "one presence frame per id, in order, as the reply: {reply:?}");
    reply
}

/// `GET /v1/presence?user_ids=...` as `who`; checks one entry per id, in order.
async fn rest_presence(who: &Device, ids: &[&str]) -> Vec<Value> {
    let body = who.get(&format!("/v1/presence?user_ids={}", ids.join(","))).await.expect(200);
    let list = body["presence"].as_array().unwrap_or_else(|| panic!("presence array: {body}")).clone();
    let got: Vec<&str> = list.iter().map(|p| p["user_id"].as_str().unwrap_or("<no user_id>")).collect();
    assert_eq!(got, ids, "one entry per id, in order: {body}");
    list
}

fn typing_frame(conv: &str, active: bool) -> Value {
    json!({"type": "typing", "conversation_id": conv, "active": active})
}

/// A `typing` frame as the other members get it.
fn typing(conv: &str, user: &str, active: bool) -> Value {
    json!({"type": "typing", "conversation_id": conv, "user_id": user, "active": active})
}

fn typing_frames(ws: &Ws) -> Vec<Value> {
    ws.frames().into_iter().filter(|f| f["type"] == "typing").collect()
}

fn typing_frames_from(ws: &Ws, from: usize) -> Vec<Value> {
    ws.frames()[from..].iter().filter(|f| f["type"] == "typing").cloned().collect()
}

fn member_path(conv: &str, user: &str) -> String {
    format!("/v1/conversations/{conv}/members/{user}")
}

fn is_entry_kind<'a>(conv: &'a str, kind: &'a str, user: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |f: &Value| {
        f["type"] == "message" && f["conversation_id"] == conv && f["kind"] == kind && f["body"]["user_id"] == user
    }
}

// ------------------------------------------------------------------------------------------
// Online, offline, last seen
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_online_then_offline_after_the_grace_period_with_last_seen() {
    const GRACE: Duration = Duration::from_millis(100);
    let srv = TestServer::start_with(&["--presence-grace-ms", "100"]).await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let bid = b.user_id();
    a.direct(bid).await;
    let wa = a.connect_synced().await;

    // Never connected: offline, never seen.
    assert_eq!(subscribe(&wa, &[bid]).await, [presence(bid, false, None)]);
    let mark = wa.len();

    // b connects: online, and no last seen while online.
    let wb = b.connect_synced().await;
    let on = wa.wait_for_from(mark, is_presence(bid), T).await;
    assert_eq!(on, presence(bid, true, None));
    assert_eq!(rest_presence(a, &[bid]).await, [entry(bid, true, None)]);

    // b's only device leaves: offline once the grace period is over, last seen when it left.
    let (before, left) = (now_ms(), Instant::now());
    wb.close().await;
    let off = wa.wait_for_from(mark, offline(bid), T).await;
    let after = now_ms();
    assert!(left.elapsed() >= GRACE, "offline published {:?} after the close, within the grace period", left.elapsed());
    let seen = i(&off, "last_seen");
    assert!((before..=after).contains(&seen), "last_seen {seen} is when b left, within [{before}, {after}]");
    assert_eq!(off, presence(bid, false, Some(seen)));
    wa.barrier().await;
    assert_eq!(presence_from(&wa, bid, mark), [on, off.clone()], "one frame per change");

    // The same to a new subscription and over REST.
    let wa2 = a.connect_synced().await;
    assert_eq!(subscribe(&wa2, &[bid]).await, [off]);
    assert_eq!(rest_presence(a, &[bid]).await, [entry(bid, false, Some(seen))]);

    // Back, then gone without a close frame (the socket just drops): both watchers see online,
    // then offline with a new last seen.
    let (mark, mark2) = (wa.len(), wa2.len());
    let wb = b.connect_synced().await;
    for (w, m) in [(&wa, mark), (&wa2, mark2)] {
        assert_eq!(w.wait_for_from(m, is_presence(bid), T).await, presence(bid, true, None));
    }
    let before = now_ms();
    drop(wb);
    for (w, m) in [(&wa, mark), (&wa2, mark2)] {
        let off = w.wait_for_from(m, offline(bid), T).await;
        let seen2 = i(&off, "last_seen");
        assert!(seen2 >= before && seen2 >= seen, "a later last seen: {off} (dropped after {before})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_offline_only_after_the_last_one_leaves() {
    let srv = TestServer::start_with(&["--presence-grace-ms", "300"]).await;
    let v = srv.logins(2).await;
    let (a, b1) = (&v[0], &v[1]);
    let b2 = b1.user.login().await;
    let bid = b1.user_id();
    let dm = a.direct(bid).await;
    let wa = a.connect_synced().await;
    let wb1 = b1.connect_synced().await;
    let wb2 = b2.connect_synced().await;
    assert_eq!(subscribe(&wa, &[bid]).await, [presence(bid, true, None)]);
    let mark = wa.len();

    // b1 types, then leaves. The server ends b1's typing after it has counted the device gone.
    wb1.send_json(&typing_frame(&dm, true)).await;
    wa.wait_for(|f| *f == typing(&dm, bid, true), T).await;
    wb1.close().await;
    wa.wait_for(|f| *f == typing(&dm, bid, false), T).await;
    let mid = now_ms();
    assert_no_presence_since(&wa, bid, mark, "one of two devices left: b is still online").await;
    assert_eq!(rest_presence(a, &[bid]).await, [entry(bid, true, None)]);

    // The last device leaves: offline after the grace period, last seen when the LAST one left.
    wb2.close().await;
    let off = wa.wait_for_from(mark, offline(bid), T).await;
    let seen = i(&off, "last_seen");
    assert!(seen >= mid && seen <= now_ms(), "last seen {seen} is when b2 left (after {mid})");
    // Had b1's leaving started a grace period of its own, it would have ended before b2's.
    wa.barrier().await;
    assert_eq!(presence_from(&wa, bid, mark), [off], "the only change is the last device leaving");
    assert_eq!(rest_presence(a, &[bid]).await, [entry(bid, false, Some(seen))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_within_the_grace_period_publishes_no_offline_online_pair() {
    const GRACE: Duration = Duration::from_millis(1000);
    let srv = TestServer::start_with(&["--presence-grace-ms", "1000"]).await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let bid = b.user_id();
    let dm = a.direct(bid).await;
    let wa = a.connect_synced().await;
    let wb = b.connect_synced().await;
    assert_eq!(subscribe(&wa, &[bid]).await, [presence(bid, true, None)]);
    let mark = wa.len();

    // b's connection drops (the `active: false` the server then sends for b's typing shows it
    // counted the connection gone: the grace period has started)...
    wb.send_json(&typing_frame(&dm, true)).await;
    wa.wait_for(|f| *f == typing(&dm, bid, true), T).await;
    let dropped = Instant::now();
    drop(wb);
    wa.wait_for(|f| *f == typing(&dm, bid, false), T).await;
    // ... and b is back within it (counted online again before `synced`).
    let wb = b.connect_synced().await;
    let back = dropped.elapsed();
    assert!(back < GRACE, "inconclusive: reconnecting took {back:?}, longer than the grace period");
    assert_eq!(rest_presence(a, &[bid]).await, [entry(bid, true, None)]);

    // b leaves for good. This grace period started after the first one, so it ends after it:
    // by the time this offline arrives, the first would have been published too.
    let (before, left) = (now_ms(), Instant::now());
    wb.close().await;
    let off = wa.wait_for_from(mark, offline(bid), T).await;
    assert!(left.elapsed() >= GRACE, "offline {:?} after the close, within the grace period", left.elapsed());
    assert!(i(&off, "last_seen") >= before, "last seen is the final departure: {off}");
    wa.barrier().await;
    assert_eq!(presence_from(&wa, bid, mark), [off], "no offline/online pair for the flap");
}

// ------------------------------------------------------------------------------------------
// Who may watch whom
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_unknown_ids_get_one_uninformative_frame_and_no_updates() {
    let srv = TestServer::start_with(&["--presence-grace-ms", "100"]).await;
    let v = srv.logins(4).await;
    let (a, b, st, x) = (&v[0], &v[1], &v[2], &v[3]);
    let (bid, sid) = (b.user_id(), st.user_id());
    let a2 = a.user.login().await;
    a.group("a and b", &[bid]).await;
    x.direct(sid).await;
    let wb = b.connect_synced().await;
    let ws = st.connect_synced().await;
    let (wa, wa2, wx) = (a.connect_synced().await, a2.connect_synced().await, x.connect_synced().await);
    assert_eq!(subscribe(&wx, &[sid]).await, [presence(sid, true, None)], "x shares a conversation with s");

    // The stranger s is online and b is online: a learns nothing about s, nor about an id no one has.
    let reply = subscribe(&wa, &[sid, NOBODY, bid]).await;
    assert_eq!(reply, [presence(sid, false, None), presence(NOBODY, false, None), presence(bid, true, None)]);
    assert_eq!(
        rest_presence(a, &[sid, NOBODY, bid]).await,
        [entry(sid, false, None), entry(NOBODY, false, None), entry(bid, true, None)]
    );
    let mark = wa.len();

    // s goes offline, then comes back: x sees both, a neither (one publish queues the frame for
    // every watcher of s, so a's would come before x's).
    let mx = wx.len();
    ws.close().await;
    let off = wx.wait_for_from(mx, offline(sid), T).await;
    assert!(off["last_seen"].is_i64(), "x sees s's last seen: {off}");
    assert_no_presence_since(&wa, sid, mark, "a stranger going offline").await;
    let mx = wx.len();
    let ws = st.connect_synced().await;
    wx.wait_for_from(mx, online(sid), T).await;
    assert_no_presence_since(&wa, sid, mark, "a stranger coming online").await;
    // Still nothing over REST either, though s now has a last seen.
    ws.close().await;
    wx.wait_for_from(mx, offline(sid), T).await;
    assert_eq!(rest_presence(a, &[sid, NOBODY]).await, [entry(sid, false, None), entry(NOBODY, false, None)]);
    assert_eq!(subscribe(&wa2, &[sid]).await, [presence(sid, false, None)]);
    assert_no_presence_since(&wa, sid, mark, "a stranger").await;

    // presence_unsubscribe stops the updates: a's first connection unsubscribes, its second one
    // subscribes; b goes offline.
    wa.send_json(&json!({"type": "presence_unsubscribe", "user_ids": [bid]})).await;
    wa.barrier().await;
    assert_eq!(subscribe(&wa2, &[bid]).await, [presence(bid, true, None)]);
    let (mark, mark2) = (wa.len(), wa2.len());
    wb.close().await;
    wa2.wait_for_from(mark2, offline(bid), T).await;
    assert_no_presence_since(&wa, bid, mark, "after presence_unsubscribe").await;
}

/// Ids are opaque strings: one that is not even well-formed is a user id that does not exist,
/// answered with one uninformative frame naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_id_is_answered_like_one_that_does_not_exist() {
    let srv = TestServer::start().await;
    let a = srv.login().await;
    let wa = a.connect_synced().await;
    let reply = subscribe(&wa, &["not-an-id"]).await;
    assert_eq!(reply, [presence("not-an-id", false, None)]);
    assert_eq!(rest_presence(&a, &["not-an-id"]).await, [entry("not-an-id", false, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_or_one_who_left_stops_watching_and_being_watched() {
    let srv = TestServer::start_with(&["--presence-grace-ms", "200"]).await;
    let v = srv.logins(7).await;
    let (a, b, c, d, f, e, y) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]);
    let (aid, bid, cid, fid, eid) = (a.user_id(), b.user_id(), c.user_id(), f.user_id(), e.user_id());
    let g = a.group("g", &[bid, cid, fid]).await;
    d.direct(cid).await;
    let h = a.group("h", &[eid]).await;
    y.direct(eid).await;
    let (wa, wb, wc) = (a.connect_synced().await, b.connect_synced().await, c.connect_synced().await);
    let (wd, wf, we, wy) =
        (d.connect_synced().await, f.connect_synced().await, e.connect_synced().await, y.connect_synced().await);

    // While they share g: c watches b, f watches c; a and d (direct with c) and y (direct with e)
    // are the witnesses.
    assert_eq!(subscribe(&wc, &[bid]).await, [presence(bid, true, None)]);
    assert_eq!(subscribe(&wf, &[cid]).await, [presence(cid, true, None)]);
    assert_eq!(subscribe(&wd, &[cid]).await, [presence(cid, true, None)]);
    assert_eq!(subscribe(&wa, &[bid, eid]).await, [presence(bid, true, None), presence(eid, true, None)]);
    assert_eq!(subscribe(&wy, &[eid]).await, [presence(eid, true, None)]);

    // a removes c from g, c's only conversation with b and f.
    a.delete(&member_path(&g, cid)).await.expect(204);
    for w in [&wa, &wb, &wc, &wf] {
        w.wait_for(is_entry_kind(&g, "member_removed", cid), T).await;
    }
    let (mc, mf, ma) = (wc.len(), wf.len(), wa.len());

    // c no longer watches b: b goes offline; a sees it (after the grace period, time enough for
    // the server to have ended c's subscription), c does not.
    wb.close().await;
    wa.wait_for_from(ma, offline(bid), T).await;
    assert_no_presence_since(&wc, bid, mc, "c was removed from the only conversation with b").await;
    // Nor is c watched by f: c goes offline; d sees it, f does not.
    let md = wd.len();
    wc.close().await;
    wd.wait_for_from(md, offline(cid), T).await;
    assert_no_presence_since(&wf, cid, mf, "c was removed from the only conversation with f").await;

    // Subscribing again is answered as for a stranger, though b has a last seen and f is online,
    // and though c is online again.
    let wc = c.connect_synced().await;
    assert_eq!(
        subscribe(&wc, &[bid, fid, aid]).await,
        [presence(bid, false, None), presence(fid, false, None), presence(aid, false, None)]
    );
    assert_eq!(rest_presence(c, &[bid, fid]).await, [entry(bid, false, None), entry(fid, false, None)]);
    assert_eq!(subscribe(&wf, &[cid]).await, [presence(cid, false, None)]);
    assert_eq!(rest_presence(f, &[cid]).await, [entry(cid, false, None)]);

    // Leaving ends it too: e leaves h, e's only conversation with a; then e goes offline.
    e.delete(&member_path(&h, eid)).await.expect(204);
    wa.wait_for(is_entry_kind(&h, "member_left", eid), T).await;
    let (ma, my) = (wa.len(), wy.len());
    we.close().await;
    wy.wait_for_from(my, offline(eid), T).await;
    assert_no_presence_since(&wa, eid, ma, "e left the only conversation with a").await;
    assert_eq!(subscribe(&wa, &[eid]).await, [presence(eid, false, None)]);
    assert_eq!(rest_presence(a, &[eid]).await, [entry(eid, false, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_last_seen_is_null_to_others_and_hides_everyone_elses() {
    let srv = TestServer::start_with(&["--presence-grace-ms", "100"]).await;
    let v = srv.logins(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let (aid, bid, cid) = (a.user_id(), b.user_id(), c.user_id());
    a.group("g", &[bid, cid]).await;
    assert_eq!(b.get("/v1/me").await.expect(200)["last_seen_visible"], true, "shown by default");

    // b and c have been online; now they are offline with a last seen.
    let wa = a.connect_synced().await;
    subscribe(&wa, &[bid, cid]).await;
    let mark = wa.len();
    let mut seen = Vec::new();
    for (d, id) in [(b, bid), (c, cid)] {
        let w = d.connect_synced().await;
        wa.wait_for_from(mark, online(id), T).await;
        w.close().await;
        seen.push(i(&wa.wait_for_from(mark, offline(id), T).await, "last_seen"));
    }
    let lc = seen[1]; // b has a last seen too, seen[0]: hidden from here on

    // b hides theirs.
    let me = b.patch("/v1/me", &json!({"last_seen_visible": false})).await.expect(200);
    assert_eq!((me["user_id"].as_str(), &me["last_seen_visible"]), (Some(bid), &json!(false)), "{me}");
    assert_eq!(b.get("/v1/me").await.expect(200)["last_seen_visible"], false);
    b.patch("/v1/me", &json!({"last_seen_visible": "no"})).await.expect_error(400, "bad_request");
    assert_eq!(b.get("/v1/me").await.expect(200)["last_seen_visible"], false, "a refused PATCH changes nothing");

    // a sees b's last seen as null (over REST and on a new subscription), c's still.
    assert_eq!(rest_presence(a, &[bid, cid]).await, [entry(bid, false, None), entry(cid, false, Some(lc))]);
    let wa2 = a.connect_synced().await;
    assert_eq!(subscribe(&wa2, &[bid, cid]).await, [presence(bid, false, None), presence(cid, false, Some(lc))]);
    // Updates too: whether b is online is still shown, the last seen is not.
    let m2 = wa2.len();
    let wb = b.connect_synced().await;
    assert_eq!(wa2.wait_for_from(m2, is_presence(bid), T).await, presence(bid, true, None));
    wb.close().await;
    assert_eq!(wa2.wait_for_from(m2, offline(bid), T).await, presence(bid, false, None));

    // Reciprocity: b, who hides theirs, sees nobody's (c's is null to b though a sees it).
    assert_eq!(rest_presence(b, &[cid]).await, [entry(cid, false, None)]);
    assert_eq!(rest_presence(a, &[cid]).await, [entry(cid, false, Some(lc))]);
    let m = wa.len();
    let wb = b.connect_synced().await;
    assert_eq!(subscribe(&wb, &[cid, aid]).await, [presence(cid, false, None), presence(aid, true, None)]);
    wb.close().await;
    wa.wait_for_from(m, offline(bid), T).await;

    // b shows theirs again: b's is shown to a, and c's to b.
    let m3 = wa.len();
    let wb = b.connect_synced().await;
    wa.wait_for_from(m3, online(bid), T).await;
    let before = now_ms();
    wb.close().await;
    wa.wait_for_from(m3, offline(bid), T).await;
    let me = b.patch("/v1/me", &json!({"last_seen_visible": true})).await.expect(200);
    assert_eq!(me["last_seen_visible"], true);
    let shown = rest_presence(a, &[bid]).await;
    assert!(shown[0]["last_seen"].as_i64() >= Some(before), "b's last seen is shown again: {shown:?}");
    assert_eq!(rest_presence(b, &[cid]).await, [entry(cid, false, Some(lc))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_presence_refuses_empty_and_oversized_lists() {
    let srv = TestServer::start().await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let bid = b.user_id();
    a.direct(bid).await;
    let _wb = b.connect_synced().await;

    for path in ["/v1/presence", "/v1/presence?user_ids=", "/v1/presence?user_ids=,,"] {
        a.get(path).await.expect_error(400, "bad_request");
    }
    let many = |n: usize| -> Vec<String> {
        std::iter::once(bid.to_string()).chain((1..n).map(|k| format!("{}", 900_000_000_000u64 + k as u64))).collect()
    };
    let ids = many(257);
    a.get(&format!("/v1/presence?user_ids={}", ids.join(","))).await.expect_error(400, "bad_request");
    let ids = many(256);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let list = rest_presence(a, &refs).await;
    assert_eq!(list[0], entry(bid, true, None));
    assert!(list[1..].iter().all(|p| p["online"] == false && p["last_seen"].is_null()), "unknown ids: nothing");
    srv.get(&format!("/v1/presence?user_ids={bid}"), None).await.expect_error(401, "unauthorized");
}

// ------------------------------------------------------------------------------------------
// Typing
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_members_only_thinned_and_ended_by_the_server() {
    // A long interval, so every `active: true` after the first within this test is thinned away.
    let srv = TestServer::start_with(&["--typing-interval-ms", "60000"]).await;
    let v = srv.logins(4).await;
    let (a1, b, c, d) = (&v[0], &v[1], &v[2], &v[3]);
    let a2 = a1.user.login().await;
    let (aid, bid, cid) = (a1.user_id(), b.user_id(), c.user_id());
    let g = a1.group("g", &[bid, cid]).await;
    let dm = a1.direct(bid).await;
    let (wa1, wa2) = (a1.connect_synced().await, a2.connect_synced().await);
    let (wb, wc, wd) = (b.connect_synced().await, c.connect_synced().await, d.connect_synced().await);

    // 20 rapid `active: true`: the other members get one; the typist's connection stays open.
    let burst: Vec<Value> = (0..20).map(|_| typing_frame(&g, true)).collect();
    wa1.send_all(&burst).await.expect("send the burst");
    for w in [&wb, &wc] {
        w.wait_for(|f| *f == typing(&g, aid, true), T).await;
    }
    wa1.barrier().await; // all 20 handled
    for w in [&wb, &wc] {
        w.barrier().await;
        assert_eq!(typing_frames(w), [typing(&g, aid, true)], "one of 20 within the interval");
    }
    // Not to the typist's own devices, nor to anyone outside the conversation.
    for w in [&wa1, &wa2, &wd] {
        w.barrier().await;
        assert!(typing_frames(w).is_empty(), "{:?}", typing_frames(w));
    }
    assert!(wa1.frames().iter().all(|f| f["type"] != "error"), "thinning is silent: {:?}", wa1.frames());

    // An explicit stop is forwarded; a stop with no start before it is not.
    wa1.send_json(&typing_frame(&g, false)).await;
    for w in [&wb, &wc] {
        w.wait_for(|f| *f == typing(&g, aid, false), T).await;
    }
    wa1.send_json(&typing_frame(&g, false)).await;
    wa1.barrier().await;
    wb.barrier().await;
    assert_eq!(typing_frames(&wb), [typing(&g, aid, true), typing(&g, aid, false)]);
    // Typing again after a stop is shown again at once.
    wa1.send_json(&typing_frame(&g, true)).await;
    wb.wait_count(|f| *f == typing(&g, aid, true), 2, T).await;

    // Sending a message ends typing in that conversation, ahead of the message; typing in
    // another conversation goes on (and was not thinned by it).
    wa1.send_json(&typing_frame(&dm, true)).await;
    wb.wait_for(|f| *f == typing(&dm, aid, true), T).await;
    let mark = wb.len();
    let sent = wa1.send_text(&dm, "hi").await;
    let client_id = s(&sent, "client_id");
    wb.wait_for_from(mark, |f| f["type"] == "message" && f["client_id"] == client_id.as_str(), T).await;
    let after: Vec<Value> = wb.frames()[mark..]
        .iter()
        .filter(|f| matches!(f["type"].as_str(), Some("typing" | "message")))
        .cloned()
        .collect();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], typing(&dm, aid, false), "the stop comes before the message: {after:?}");
    wb.barrier().await;
    assert!(typing_frames_from(&wb, mark).iter().all(|f| f["conversation_id"] == dm.as_str()), "g goes on");

    // Disconnecting ends typing: a1 is still typing in g, not in dm any more.
    let (mb, mc) = (wb.len(), wc.len());
    drop(wa1);
    for (w, m) in [(&wb, mb), (&wc, mc)] {
        w.wait_for_from(m, |f| *f == typing(&g, aid, false), T).await;
    }
    wa2.barrier().await;
    assert!(typing_frames(&wa2).is_empty(), "a's other device gets none of a's typing: {:?}", typing_frames(&wa2));

    // Not a member: a stranger, a conversation that does not exist, a removed member.
    let no_g = typing_frame(&g, true);
    wd.expect_error(no_g.clone(), "not_member").await;
    wd.expect_error(typing_frame(NOBODY, true), "not_member").await;
    wd.expect_error(typing_frame(&g, false), "not_member").await;
    a2.delete(&member_path(&g, cid)).await.expect(204);
    for w in [&wb, &wc] {
        w.wait_for(is_entry_kind(&g, "member_removed", cid), T).await;
    }
    wc.expect_error(no_g, "not_member").await;
    wc.barrier().await;
    assert_eq!(wc.closed().map(|c| c.reason), None, "an error frame, the connection stays open");
    // ... and no longer gets the others' typing in g.
    let (mb, mc) = (wb.len(), wc.len());
    wa2.send_json(&typing_frame(&g, true)).await;
    wb.wait_for_from(mb, |f| *f == typing(&g, aid, true), T).await;
    wa2.barrier().await;
    wc.barrier().await;
    assert!(typing_frames_from(&wc, mc).is_empty(), "removed: {:?}", typing_frames_from(&wc, mc));
    assert!(typing_frames(&wd).is_empty(), "{:?}", typing_frames(&wd));

    // Never stored: no trace in history or in a replay.
    for conv in [&g, &dm] {
        let history = a2.history(conv).await;
        assert!(
            history.iter().all(|m| m["kind"] != "typing" && !m["body"].to_string().contains("active")),
            "{history:?}"
        );
    }
    let texts: Vec<Value> = a2.history(&dm).await.into_iter().filter(|m| m["kind"] == "text").collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(a2.history(&g).await.iter().all(|m| m["kind"] != "text"));
    let b2 = b.user.login().await;
    let fresh = b2.connect_synced().await;
    assert!(typing_frames(&fresh).is_empty(), "no typing in a replay: {:?}", fresh.frames());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_forwarded_again_once_the_interval_has_passed() {
    const INTERVAL: Duration = Duration::from_millis(200);
    let srv = TestServer::start_with(&["--typing-interval-ms", "200"]).await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let aid = a.user_id();
    let dm = a.direct(b.user_id()).await;
    let (wa, wb) = (a.connect_synced().await, b.connect_synced().await);

    // a keeps typing, one `active: true` per round trip, until b has seen two.
    let start = Instant::now();
    let mut sent = 0;
    let (elapsed, seen) = loop {
        wa.send_json(&typing_frame(&dm, true)).await;
        sent += 1;
        wa.barrier().await;
        let seen = typing_frames(&wb);
        if seen.len() >= 2 {
            break (start.elapsed(), seen);
        }
        assert!(start.elapsed() < T, "b saw {seen:?} after {sent} frames in {:?}", start.elapsed());
    };
    assert_eq!(seen, [typing(&dm, aid, true), typing(&dm, aid, true)]);
    assert!(elapsed >= INTERVAL, "the second came {elapsed:?} after the first was sent");
    assert!(sent > 2, "the rest ({sent} sent) were thinned");
}

// ------------------------------------------------------------------------------------------
// Dead connections
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed_and_shown_offline() {
    const IDLE: Duration = Duration::from_millis(600);
    const GRACE: Duration = Duration::from_millis(200);
    let flags = ["--ping-interval-ms", "200", "--idle-timeout-ms", "600", "--presence-grace-ms", "200"];
    let srv = TestServer::start_with(&flags).await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let bid = b.user_id();
    a.direct(bid).await;
    let wa = a.connect_synced().await;
    assert_eq!(subscribe(&wa, &[bid]).await, [presence(bid, false, None)]);
    let mark = wa.len();

    // b authenticates on a raw socket, then never reads it again: pings go unanswered, though
    // the TCP connection stays open.
    let (started, started_ms) = (Instant::now(), now_ms());
    let (mut raw, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(srv.ws_url()))
        .await
        .expect("connect timed out")
        .expect("connect");
    raw.send(WsMsg::text(json!({"type": "auth", "token": b.token}).to_string())).await.expect("send auth");
    loop {
        let msg = tokio::time::timeout(T, raw.next()).await.expect("ready in time").expect("open").expect("frame");
        if let WsMsg::Text(t) = msg {
            let f: Value = serde_json::from_str(t.as_str()).expect("JSON");
            assert_ne!(f["type"], "error", "{f}");
            if f["type"] == "ready" {
                break;
            }
        }
    }
    wa.wait_for_from(mark, online(bid), T).await;

    // Closed after the idle timeout, shown offline after the grace period on top.
    let off = wa.wait_for_from(mark, offline(bid), T).await;
    let took = started.elapsed();
    assert!(took >= IDLE + GRACE, "offline after {took:?}: before idle timeout + grace");
    assert!(took < Duration::from_secs(4), "offline only after {took:?}");
    let seen = i(&off, "last_seen");
    assert!(seen >= started_ms + 500, "last seen {seen} is when the server gave up, not at connect ({started_ms})");

    // The server closed the dead socket (1001) ...
    let closed = loop {
        match tokio::time::timeout(T, raw.next()).await.expect("the socket is closed in time") {
            Some(Ok(WsMsg::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert!(matches!(closed, Some(1001) | None), "closed with {closed:?}");
    // ... while a, just as silent but answering pings, is still connected.
    wa.barrier().await;
    assert!(wa.closed().is_none());
}

// ------------------------------------------------------------------------------------------
// Across a restart
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_is_kept_across_a_restart() {
    let mut srv = TestServer::start_with(&["--presence-grace-ms", "100"]).await;
    let v = srv.logins(3).await;
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let (bid, cid) = (b.user_id(), c.user_id());
    a.group("g", &[bid, cid]).await;
    let wa = a.connect_synced().await;
    subscribe(&wa, &[bid, cid]).await;
    let mark = wa.len();
    let mut seen = Vec::new();
    for (d, id) in [(b, bid), (c, cid)] {
        let w = d.connect_synced().await;
        wa.wait_for_from(mark, online(id), T).await;
        w.close().await;
        seen.push(i(&wa.wait_for_from(mark, offline(id), T).await, "last_seen"));
    }
    wa.close().await;

    srv.restart().await;
    // c sets the privacy setting (to what it already is) before anyone asks about c.
    assert_eq!(c.patch("/v1/me", &json!({"last_seen_visible": true})).await.expect(200)["last_seen_visible"], true);
    assert_eq!(
        rest_presence(a, &[bid, cid]).await,
        [entry(bid, false, Some(seen[0])), entry(cid, false, Some(seen[1]))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_online_at_a_graceful_stop_has_a_last_seen_after_the_restart() {
    let mut srv = TestServer::start_with(&["--presence-grace-ms", "100"]).await;
    let v = srv.logins(2).await;
    let (a, b) = (&v[0], &v[1]);
    let bid = b.user_id();
    a.direct(bid).await;
    let wb = b.connect_synced().await;
    let before = now_ms();
    srv.restart().await;
    assert_eq!(wb.closed_with().await, Some(1001));
    let p = rest_presence(a, &[bid]).await;
    assert_eq!(p[0]["online"], false, "{p:?}");
    assert!(p[0]["last_seen"].as_i64() >= Some(before), "b was online until the stop: {p:?}");
}
