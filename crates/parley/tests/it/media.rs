//! Media end to end against the real binary with its local store: the upload dance (ask,
//! PUT to the signed URL, complete), sending, downloads by members with ranges, every refusal
//! (strangers, removed members and later joiners get 404 like a made-up id; altered and
//! expired URLs 403), rate limits, the collector (orphans, deleted messages, and a send racing
//! it), and `kill -9` in the middle of an upload.

use base64::Engine;
use parley_router::conformance::eventually;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::*;

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn bytes_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(u32::from(seed % 31)) as u8).collect()
}

/// `POST /v1/media` for `bytes`; the answer.
pub(crate) async fn ask(dev: &Device, bytes: &[u8], content_type: &str) -> Resp {
    dev.post(
        "/v1/media",
        &json!({"size": bytes.len(), "content_type": content_type, "sha256": b64(&Sha256::digest(bytes))}),
    )
    .await
}

/// PUTs `body` to an upload target with its headers; the status.
pub(crate) async fn put(api: &Api, upload: &Value, body: Vec<u8>) -> Resp {
    let mut req = api.http.put(upload["url"].as_str().expect("upload url"));
    for (k, v) in upload["headers"].as_object().expect("upload headers") {
        if k != "content-length" {
            req = req.header(k, v.as_str().expect("header value"));
        }
    }
    api.run(req.body(body), None).await
}

/// The whole dance; the media id.
pub(crate) async fn upload(dev: &Device, bytes: &[u8], content_type: &str) -> String {
    let created = ask(dev, bytes, content_type).await.expect(201);
    assert_eq!(created["upload"]["method"], "PUT");
    let r = put(dev.api(), &created["upload"], bytes.to_vec()).await;
    assert_eq!(r.status, 200, "upload: {}", r.body);
    let id = s(&created, "media_id");
    let done = dev.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect(200);
    assert_eq!(done["media"]["state"], "ready");
    id
}

pub(crate) async fn send_media(dev: &Device, conv: &str, id: &str, bytes: &[u8], content_type: &str) -> Resp {
    dev.post(
        &format!("/v1/conversations/{conv}/messages"),
        &json!({"client_id": unique("m"), "kind": "media",
                "body": {"media_id": id, "content_type": content_type, "size": bytes.len(), "caption": "look"}}),
    )
    .await
}

/// `GET /v1/media/{id}` then the download URL; the bytes.
pub(crate) async fn download(dev: &Device, id: &str) -> Vec<u8> {
    let got = dev.get(&format!("/v1/media/{id}")).await.expect(200);
    let res =
        dev.api().http.get(got["download"]["url"].as_str().expect("download url")).send().await.expect("download");
    assert_eq!(res.status().as_u16(), 200);
    res.bytes().await.expect("bytes").to_vec()
}

#[tokio::test]
async fn upload_send_and_download_with_ranges() {
    let srv = TestServer::start().await;
    let (alice, bob) = (srv.login().await, srv.login().await);
    let conv = alice.direct(bob.user_id()).await;
    let bytes = bytes_of(1_500_000, 1);
    let created = ask(&alice, &bytes, "video/mp4").await.expect(201);
    let upload_target = &created["upload"];
    let url = upload_target["url"].as_str().unwrap();
    assert!(url.starts_with(&srv.api().base), "the local store's URL is this server's: {url}");
    assert_eq!(upload_target["headers"]["content-length"], bytes.len().to_string());
    assert_eq!(upload_target["headers"]["content-type"], "video/mp4");
    let ttl = upload_target["expires_at"].as_i64().unwrap() - parley_core::now_ms();
    assert!((0..=15 * 60 * 1000).contains(&ttl), "expires within 15 minutes: {ttl}");
    let id = s(&created, "media_id");
    assert_eq!(created["media"]["state"], "pending");

    // Not uploaded yet: completing says so, and nothing is discarded.
    alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect_error(400, "bad_request");
    // A media message for an upload that is not complete is refused.
    send_media(&alice, &conv, &id, &bytes, "video/mp4").await.expect_error(400, "bad_request");
    assert_eq!(put(alice.api(), upload_target, bytes.clone()).await.status, 200);
    let done = alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect(200);
    assert_eq!(done["media"]["sha256"], b64(&Sha256::digest(&bytes)));
    assert_eq!(done["media"]["size"], bytes.len());
    // Completing twice is harmless.
    alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect(200);

    // Before any message names it, only the uploader may fetch it.
    bob.get(&format!("/v1/media/{id}")).await.expect_error(404, "not_found");
    // The body must describe the upload as it is.
    send_media(&alice, &conv, &id, &bytes[1..], "video/mp4").await.expect_error(400, "bad_request");
    send_media(&alice, &conv, &id, &bytes, "image/png").await.expect_error(400, "bad_request");
    let sent = send_media(&alice, &conv, &id, &bytes, "video/mp4").await.expect(201);
    assert_eq!(sent["message"]["kind"], "media");
    assert_eq!(sent["message"]["body"]["media_id"], id.as_str());

    let got = bob.get(&format!("/v1/media/{id}")).await.expect(200);
    assert_eq!(got["media"]["state"], "ready");
    let durl = got["download"]["url"].as_str().unwrap().to_owned();
    let full = bob.api().http.get(&durl).send().await.unwrap();
    assert_eq!(full.status().as_u16(), 200);
    assert_eq!(full.headers()["content-type"], "video/mp4");
    assert_eq!(full.headers()["content-length"], bytes.len().to_string().as_str());
    assert!(full.headers()["cache-control"].to_str().unwrap().contains("private"));
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.bytes().await.unwrap().as_ref(), &bytes[..]);

    // A download broken off after 600,000 bytes resumes from there.
    let mut resumed = bytes[..600_000].to_vec();
    let rest = bob.api().http.get(&durl).header("range", "bytes=600000-").send().await.unwrap();
    assert_eq!(rest.status().as_u16(), 206);
    assert_eq!(rest.headers()["content-range"], format!("bytes 600000-{}/{}", bytes.len() - 1, bytes.len()).as_str());
    resumed.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(resumed, bytes);
    let head = bob.api().http.head(&durl).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["content-length"], bytes.len().to_string().as_str());

    // History shows the media message to both.
    let h = bob.history(&conv).await;
    assert_eq!(h.last().unwrap()["body"]["media_id"], id.as_str());
    // Referenced: the uploader can no longer delete it.
    alice.delete(&format!("/v1/media/{id}")).await.expect_error(409, "conflict");
}

#[tokio::test]
async fn refusals_say_nothing_about_what_exists() {
    let srv = TestServer::start_with(&["--media-max-bytes", "100000"]).await;
    let alice = srv.login().await;
    let big = vec![0u8; 100_001];
    let r = ask(&alice, &big, "image/png").await;
    r.expect_error(413, "payload_too_large");
    assert_eq!(r.body["error"]["max_bytes"], 100_000);
    for body in [
        json!({"size": 10, "content_type": "image/png", "sha256": "nope"}),
        json!({"size": 10, "content_type": "png", "sha256": b64(&[0; 32])}),
        json!({"size": 0, "content_type": "image/png", "sha256": b64(&[0; 32])}),
        json!({"size": "10", "content_type": "image/png", "sha256": b64(&[0; 32])}),
        json!({"size": 10, "content_type": "text/plain\r\nx: y", "sha256": b64(&[0; 32])}),
    ] {
        alice.post("/v1/media", &body).await.expect_error(400, "bad_request");
    }

    let bytes = bytes_of(50_000, 2);
    let created = ask(&alice, &bytes, "image/jpeg").await.expect(201);
    let up = &created["upload"];
    let id = s(&created, "media_id");
    // Wrong bytes of the right length, too many and too few: refused, nothing stored.
    let mut wrong = bytes.clone();
    wrong[7] ^= 0xff;
    put(alice.api(), up, wrong).await.expect_error(400, "bad_request");
    let mut long = bytes.clone();
    long.push(1);
    assert!(put(alice.api(), up, long).await.status >= 400);
    assert!(put(alice.api(), up, bytes[1..].to_vec()).await.status >= 400);
    alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect_error(400, "bad_request");
    // An altered URL (signature or expiry) and a different content type: 403, JSON.
    let url = up["url"].as_str().unwrap();
    let mut altered = up.clone();
    altered["url"] = json!(format!("{}{}", &url[..url.len() - 1], if url.ends_with('0') { '1' } else { '0' }));
    put(alice.api(), &altered, bytes.clone()).await.expect_error(403, "forbidden");
    altered["url"] = json!(url.replacen("?e=", "?e=9", 1));
    put(alice.api(), &altered, bytes.clone()).await.expect_error(403, "forbidden");
    let mut other_type = up.clone();
    other_type["headers"]["content-type"] = json!("text/html");
    put(alice.api(), &other_type, bytes.clone()).await.expect_error(403, "forbidden");
    assert_eq!(put(alice.api(), up, bytes.clone()).await.status, 200);
    alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect(200);

    // Someone else's media, a made-up id and a malformed one: the same 404.
    let eve = srv.login().await;
    let a = eve.get(&format!("/v1/media/{id}")).await;
    a.expect_error(404, "not_found");
    let b = eve.get("/v1/media/123456789").await;
    b.expect_error(404, "not_found");
    assert_eq!(a.body, b.body);
    eve.get("/v1/media/zzz").await.expect_error(404, "not_found");
    eve.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect_error(404, "not_found");
    eve.delete(&format!("/v1/media/{id}")).await.expect_error(404, "not_found");
    // Eve cannot send Alice's upload either (refused like a missing one).
    let conv = eve.direct(alice.user_id()).await;
    send_media(&eve, &conv, &id, &bytes, "image/jpeg").await.expect_error(400, "bad_request");
    // Without a token: 401.
    srv.get(&format!("/v1/media/{id}"), None).await.expect_error(401, "unauthorized");
    // A download URL altered: 403 without a word about the object.
    let durl = alice.get(&format!("/v1/media/{id}")).await.expect(200)["download"]["url"].as_str().unwrap().to_owned();
    let altered = alice.api().run(alice.api().http.get(durl.replacen("t=image", "t=text", 1)), None).await;
    altered.expect_error(403, "forbidden");
    let made_up = alice.api().run(alice.api().http.get(srv.api().url("/blobs/1?e=1&t=a&sig=00")), None).await;
    made_up.expect_error(403, "forbidden");
    assert_eq!(altered.body, made_up.body);

    // An object that is not what was declared when it is completed (here: damaged on disk) is
    // discarded.
    let other = bytes_of(30_000, 15);
    let c2 = ask(&alice, &other, "image/png").await.expect(201);
    assert_eq!(put(alice.api(), &c2["upload"], other.clone()).await.status, 200);
    let oid = s(&c2, "media_id");
    let file = srv
        .data_dir()
        .join("media")
        .join("objects")
        .join(format!("{:02x}", oid.parse::<i64>().unwrap() & 0xff))
        .join(&oid);
    std::fs::write(&file, &other[..100]).unwrap();
    alice.post(&format!("/v1/media/{oid}/complete"), &json!({})).await.expect_error(400, "bad_request");
    alice.get(&format!("/v1/media/{oid}")).await.expect_error(404, "not_found");
    assert!(!file.exists(), "the discarded object is removed");

    // Unreferenced: the uploader deletes it, and it is gone.
    assert_eq!(alice.delete(&format!("/v1/media/{id}")).await.status, 204);
    alice.get(&format!("/v1/media/{id}")).await.expect_error(404, "not_found");
    // Its URL, still within its time, puts nothing back.
    assert_eq!(put(alice.api(), up, bytes.clone()).await.status, 403);
    assert_eq!(objects_on_disk(&srv), 0);
    let gone = alice.api().run(alice.api().http.get(&durl), None).await;
    gone.expect_error(404, "not_found");
}

#[tokio::test]
async fn expired_urls_are_refused() {
    let srv = TestServer::start_with(&["--media-url-ttl-ms", "3000"]).await;
    let alice = srv.login().await;
    let bytes = bytes_of(1000, 3);
    let created = ask(&alice, &bytes, "image/png").await.expect(201);
    let id = s(&created, "media_id");
    // Waits until the URL has expired (the server says so), not for a fixed time: the probe is
    // a body of the right length with another digest, which a valid URL refuses with 400 and
    // stores nothing of.
    let mut wrong = bytes.clone();
    wrong[0] ^= 1;
    eventually("the upload URL expires", || async {
        put(alice.api(), &created["upload"], wrong.clone()).await.status == 403
    })
    .await;
    put(alice.api(), &created["upload"], bytes.clone()).await.expect_error(403, "forbidden");
    alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect_error(400, "bad_request");
    // A fresh upload goes through; its download URL works until it expires.
    let fresh = upload(&alice, &bytes, "image/png").await;
    let durl =
        alice.get(&format!("/v1/media/{fresh}")).await.expect(200)["download"]["url"].as_str().unwrap().to_owned();
    assert_eq!(alice.api().http.get(&durl).send().await.unwrap().status().as_u16(), 200);
    eventually("the download URL expires", || async {
        alice.api().http.get(&durl).send().await.unwrap().status().as_u16() == 403
    })
    .await;
    alice.api().run(alice.api().http.get(&durl), None).await.expect_error(403, "forbidden");
}

#[tokio::test]
async fn access_follows_membership_windows() {
    let srv = TestServer::start().await;
    let (alice, bob, carol, dave) = (srv.login().await, srv.login().await, srv.login().await, srv.login().await);
    let conv = alice.group("pics", &[bob.user_id(), carol.user_id()]).await;
    let first = bytes_of(2000, 4);
    let m1 = upload(&alice, &first, "image/png").await;
    send_media(&alice, &conv, &m1, &first, "image/png").await.expect(201);
    for member in [&bob, &carol] {
        assert_eq!(download(member, &m1).await, first);
    }
    // Bob is removed: what was sent before stays his, what comes after is not.
    alice.delete(&format!("/v1/conversations/{conv}/members/{}", bob.user_id())).await;
    let second = bytes_of(3000, 5);
    let m2 = upload(&alice, &second, "image/png").await;
    send_media(&alice, &conv, &m2, &second, "image/png").await.expect(201);
    assert_eq!(download(&bob, &m1).await, first);
    let r = bob.get(&format!("/v1/media/{m2}")).await;
    r.expect_error(404, "not_found");
    // Dave joins later: nothing from before, until it is sent again.
    alice.post(&format!("/v1/conversations/{conv}/members"), &json!({"user_ids": [dave.user_id()]})).await.expect(200);
    dave.get(&format!("/v1/media/{m1}")).await.expect_error(404, "not_found");
    dave.get(&format!("/v1/media/{m2}")).await.expect_error(404, "not_found");
    send_media(&alice, &conv, &m1, &first, "image/png").await.expect(201);
    assert_eq!(download(&dave, &m1).await, first);
    // A stranger gets nothing.
    let eve = srv.login().await;
    eve.get(&format!("/v1/media/{m1}")).await.expect_error(404, "not_found");
}

fn objects_on_disk(srv: &TestServer) -> usize {
    let dir = srv.data_dir().join("media").join("objects");
    let Ok(shards) = std::fs::read_dir(dir) else { return 0 };
    shards.flatten().map(|d| std::fs::read_dir(d.path()).map(|f| f.count()).unwrap_or(0)).sum()
}

fn tmp_files(srv: &TestServer) -> usize {
    std::fs::read_dir(srv.data_dir().join("media").join("tmp")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn the_collector_removes_orphans_and_media_of_deleted_messages() {
    // Long enough for the referenced uploads to be sent before they could be taken.
    let srv = TestServer::start_with(&["--media-orphan-after-ms", "2500", "--media-gc-interval-ms", "100"]).await;
    let (alice, bob) = (srv.login().await, srv.login().await);
    let conv = alice.direct(bob.user_id()).await;
    let kept_bytes = bytes_of(4000, 6);
    let kept = upload(&alice, &kept_bytes, "image/png").await;
    send_media(&alice, &conv, &kept, &kept_bytes, "image/png").await.expect(201);
    let doomed_bytes = bytes_of(5000, 7);
    let doomed = upload(&alice, &doomed_bytes, "image/png").await;
    let seq = i(&send_media(&alice, &conv, &doomed, &doomed_bytes, "image/png").await.expect(201)["message"], "seq");
    let orphan = upload(&alice, &bytes_of(3000, 8), "image/png").await;
    let never = s(&ask(&alice, &bytes_of(100, 9), "image/png").await.expect(201), "media_id");
    assert_eq!(objects_on_disk(&srv), 3);

    alice
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            &json!({"client_id": unique("d"), "kind": "delete", "body": {"target_seq": seq}}),
        )
        .await
        .expect(201);
    for id in [&doomed, &orphan, &never] {
        eventually("the collector removes it", || async { alice.get(&format!("/v1/media/{id}")).await.status == 404 })
            .await;
    }
    eventually("only the referenced file is left", || async { objects_on_disk(&srv) == 1 }).await;
    assert_eq!(download(&bob, &kept).await, kept_bytes);
    let metrics = srv.get("/metrics", None).await.body.as_str().unwrap_or_default().to_owned();
    let removed = metrics.lines().find(|l| l.starts_with("parley_media_gc_removed_total ")).expect("gc metric");
    assert_eq!(removed, "parley_media_gc_removed_total 3", "{metrics}");
}

#[tokio::test]
async fn a_send_racing_the_collector_keeps_its_media() {
    // Every upload is collectable the moment it exists, and the collector runs all the time:
    // a send either gets there first (and its media stays) or is refused.
    let srv = TestServer::start_with(&[
        "--media-orphan-after-ms",
        "0",
        "--media-gc-interval-ms",
        "2",
        "--media-upload-burst",
        "1000",
    ])
    .await;
    let (alice, bob) = (srv.login().await, srv.login().await);
    let conv = alice.direct(bob.user_id()).await;
    let (mut sent, mut refused) = (Vec::new(), 0);
    for n in 0..60u8 {
        let bytes = bytes_of(2000, n);
        let created = ask(&alice, &bytes, "image/png").await.expect(201);
        let id = s(&created, "media_id");
        if put(alice.api(), &created["upload"], bytes.clone()).await.status != 200 {
            refused += 1;
            continue;
        }
        if alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.status != 200 {
            refused += 1;
            continue;
        }
        match send_media(&alice, &conv, &id, &bytes, "image/png").await.status {
            201 => sent.push((id, bytes)),
            400 => refused += 1,
            other => panic!("send answered {other}"),
        }
    }
    assert!(!sent.is_empty(), "no send won the race ({refused} refused)");
    // Let the collector run many more times, then every sent message still has its bytes.
    let runs = |m: &str| {
        m.lines().find_map(|l| l.strip_prefix("parley_media_gc_runs_total ")).and_then(|v| v.parse::<u64>().ok())
    };
    let before = runs(srv.get("/metrics", None).await.body.as_str().unwrap()).expect("runs");
    eventually("the collector runs 20 more times", || async {
        runs(srv.get("/metrics", None).await.body.as_str().unwrap()).unwrap_or(0) >= before + 20
    })
    .await;
    for (id, bytes) in &sent {
        assert_eq!(&download(&bob, id).await, bytes, "media {id} of a sent message");
    }
    // And nothing else is left on disk: no file of a collected upload came back.
    assert_eq!(objects_on_disk(&srv), sent.len());
    eprintln!("{} sends kept their media, {refused} were refused", sent.len());
}

#[tokio::test]
async fn kill_9_mid_upload_leaves_no_half_file() {
    let mut srv = TestServer::start().await;
    let alice = srv.login().await;
    let bytes = bytes_of(8 * 1024 * 1024, 10);
    let created = ask(&alice, &bytes, "video/mp4").await.expect(201);
    let id = s(&created, "media_id");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let half = bytes[..4 * 1024 * 1024].to_vec();
    tx.send(Ok(half)).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
    let mut req = alice.api().http.put(created["upload"]["url"].as_str().unwrap()).body(body);
    req = req.header("content-type", "video/mp4").header("content-length", bytes.len().to_string());
    let pending = tokio::spawn(req.send());
    eventually("the upload is being written", || async { tmp_files(&srv) == 1 }).await;
    srv.kill9().await;
    drop(tx);
    let _ = pending.await;
    srv.restart().await;
    assert_eq!(tmp_files(&srv), 0, "the half-written file is swept at start");
    assert_eq!(objects_on_disk(&srv), 0);
    alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect_error(400, "bad_request");
    let durl = alice.get(&format!("/v1/media/{id}")).await.expect(200)["download"]["url"].as_str().unwrap().to_owned();
    alice.api().run(alice.api().http.get(&durl), None).await.expect_error(404, "not_found");
    // The upload resumes from scratch with a fresh URL for the same media.
    let again = alice.get(&format!("/v1/media/{id}")).await.expect(200);
    assert_eq!(again["media"]["state"], "pending");
    assert_eq!(put(alice.api(), &again["upload"], bytes.clone()).await.status, 200);
    alice.post(&format!("/v1/media/{id}/complete"), &json!({})).await.expect(200);
    assert_eq!(download(&alice, &id).await, bytes);
}

/// A channel as a body stream.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn uploads_are_rate_limited_and_budgeted() {
    let srv = TestServer::start_with(&["--media-uploads-per-minute", "1", "--media-upload-burst", "2"]).await;
    let alice = srv.login().await;
    let bytes = bytes_of(10, 11);
    ask(&alice, &bytes, "image/png").await.expect(201);
    ask(&alice, &bytes, "image/png").await.expect(201);
    let r = ask(&alice, &bytes, "image/png").await;
    r.expect_error(429, "rate_limited");
    assert!(r.body["error"]["retry_after_ms"].as_u64().unwrap() > 0);
    // Another user has their own allowance.
    ask(&srv.login().await, &bytes, "image/png").await.expect(201);

    let srv = TestServer::start_with(&["--media-daily-bytes", "1000"]).await;
    let alice = srv.login().await;
    ask(&alice, &bytes_of(600, 12), "image/png").await.expect(201);
    let r = ask(&alice, &bytes_of(600, 13), "image/png").await;
    r.expect_error(429, "rate_limited");
    let wait = r.body["error"]["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 23 * 3600 * 1000 && wait <= 24 * 3600 * 1000, "{wait}");
    ask(&alice, &bytes_of(400, 14), "image/png").await.expect(201);
}

/// Runs the CLI as the user whose session lives in `config`.
fn cli(config: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env("PARLEY_CONFIG_DIR", config)
        .env_remove("PARLEY_SERVER")
        .output()
        .expect("run parley");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "parley {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[tokio::test]
async fn the_cli_sends_a_photo_with_a_preview_and_downloads_it() {
    let srv = TestServer::start().await;
    let (alice, bob) = (srv.api().user().await, srv.api().user().await);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cb) = (dir.path().join("a"), dir.path().join("b"));
    for (config, user) in [(&ca, &alice), (&cb, &bob)] {
        cli(config, &["login", &user.username, "--password", &user.password, "--server", &srv.api().base]);
    }
    let img = image::RgbImage::from_fn(800, 600, |x, y| image::Rgb([(x / 4) as u8, (y / 3) as u8, 90]));
    let photo = dir.path().join("beach.png");
    img.save(&photo).unwrap();
    let bytes = std::fs::read(&photo).unwrap();
    let out = cli(&ca, &["send-file", &bob.username, photo.to_str().unwrap(), "--caption", "sunset", "--quiet"]);
    assert!(out.contains("sent"), "{out}");

    let b = bob.login().await;
    let conv = b.direct(&alice.user_id).await;
    let m = b.history(&conv).await.into_iter().find(|m| m["kind"] == "media").expect("a media message");
    let body = &m["body"];
    assert_eq!((body["content_type"].as_str(), body["size"].as_u64()), (Some("image/png"), Some(bytes.len() as u64)));
    assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(800), Some(600)));
    assert_eq!((body["caption"].as_str(), body["name"].as_str()), (Some("sunset"), Some("beach.png")));
    let thumb = base64::engine::general_purpose::STANDARD.decode(body["thumbnail"].as_str().unwrap()).unwrap();
    let decoded = image::load_from_memory(&thumb).expect("the thumbnail is an image");
    assert!(decoded.width() <= 96 && decoded.height() <= 96 && thumb.len() <= 8192);
    assert!(body["blurhash"].as_str().is_some_and(|h| h.len() >= 6));

    let id = body["media_id"].as_str().unwrap();
    let target = dir.path().join("got.png");
    cli(&cb, &["download", id, target.to_str().unwrap(), "--quiet"]);
    assert_eq!(std::fs::read(&target).unwrap(), bytes);
    // An interrupted download resumes from its .part file.
    let again = dir.path().join("again.png");
    std::fs::write(dir.path().join("again.png.part"), &bytes[..1000]).unwrap();
    cli(&cb, &["download", id, again.to_str().unwrap(), "--quiet"]);
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
    assert!(!dir.path().join("again.png.part").exists());
}
