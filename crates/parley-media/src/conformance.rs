//! The suite every media store passes, through real HTTP against the URLs it signs: the local
//! backend behind the server's blob routes, the S3 backend against a real S3 implementation.
//! What it proves is that the *store itself* refuses wrong bytes, wrong lengths, altered and
//! expired URLs, so a client that misbehaves cannot leave anything but the declared object.

use std::sync::Arc;

use parley_core::ids::MediaId;
use sha2::{Digest, Sha256};

use crate::{MediaStore, Object, Stored};

/// Stamps out one `#[tokio::test]` per check. `$make` is an async expression giving an
/// `(Arc<dyn MediaStore>, guard)`; the guard (e.g. a running server) lives as long as the test
/// and names the objects the tests upload ([`Ids`]).
#[macro_export]
macro_rules! media_store_conformance {
    ($make:expr) => {
        $crate::media_store_conformance!(@tests $make;
            round_trip, ranges, missing_before_upload, wrong_digest_refused, wrong_length_refused,
            altered_upload_url_refused, expired_upload_url_refused, altered_download_url_refused,
            expired_download_url_refused, wrong_content_type_refused, delete_is_idempotent);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, guard) = $make;
                $crate::conformance::$name(store, &guard).await;
            }
        )*
    };
}

fn now_ms() -> i64 {
    parley_core::now_ms()
}

fn fresh_id() -> MediaId {
    // Unique across concurrent tests and runs that share a bucket.
    use std::sync::atomic::{AtomicI64, Ordering};
    static NEXT: AtomicI64 = AtomicI64::new(0);
    MediaId(now_ms() * 1000 + NEXT.fetch_add(1, Ordering::Relaxed) % 1000)
}

/// Where the ids of the objects a test uploads come from: fresh ones by default; a store served
/// by the server itself needs the server's own record of each upload (it refuses bytes for
/// uploads it does not know), made through its API.
#[async_trait::async_trait]
pub trait Ids: Send + Sync {
    async fn id_for(&self, _size: u64, _sha256: [u8; 32], _content_type: &str) -> MediaId {
        fresh_id()
    }
}

async fn object(ids: &dyn Ids, bytes: &[u8], content_type: &str) -> Object {
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    let size = bytes.len() as u64;
    Object { id: ids.id_for(size, sha256, content_type).await, size, sha256, content_type: content_type.into() }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("http client")
}

/// PUTs `bytes` to a fresh upload URL for `obj` with the signed headers; returns the status.
async fn put(store: &dyn MediaStore, obj: &Object, bytes: Vec<u8>, expires_at: i64) -> u16 {
    let up = store.upload_url(obj, expires_at).expect("upload url");
    put_to(&up.url, &up.headers, bytes).await
}

async fn put_to(url: &str, headers: &std::collections::BTreeMap<String, String>, bytes: Vec<u8>) -> u16 {
    let mut req = client().put(url);
    for (k, v) in headers {
        // reqwest sets Content-Length itself from the body; sending the signed value again
        // would duplicate the header.
        if k != "content-length" {
            req = req.header(k, v);
        }
    }
    req.body(bytes).send().await.expect("put").status().as_u16()
}

async fn upload(store: &dyn MediaStore, ids: &dyn Ids, bytes: &[u8], content_type: &str) -> Object {
    let obj = object(ids, bytes, content_type).await;
    let status = put(store, &obj, bytes.to_vec(), now_ms() + 60_000).await;
    assert!((200..300).contains(&status), "upload answered {status}");
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Matches);
    obj
}

fn tamper(url: &str) -> String {
    // Every backend puts its signature last; change its last character.
    let mut s = url.to_owned();
    let last = s.pop().expect("url");
    s.push(if last == '0' { '1' } else { '0' });
    s
}

pub async fn round_trip(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let bytes = payload(300_000);
    let obj = upload(&*store, ids, &bytes, "image/png").await;
    let down = store.download_url(&obj, now_ms() + 60_000).unwrap();
    let res = client().get(&down.url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.headers()["content-length"], bytes.len().to_string().as_str());
    assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[..]);
    store.delete(obj.id).await.unwrap();
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Missing);
    let gone = client().get(&down.url).send().await.unwrap().status().as_u16();
    assert!(gone == 404 || gone == 403, "a deleted object answered {gone}");
}

pub async fn ranges(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let bytes = payload(10_000);
    let obj = upload(&*store, ids, &bytes, "audio/ogg").await;
    let url = store.download_url(&obj, now_ms() + 60_000).unwrap().url;
    for (range, from, to) in [("bytes=100-199", 100, 200), ("bytes=9990-", 9990, 10_000), ("bytes=-10", 9990, 10_000)] {
        let res = client().get(&url).header("range", range).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 206, "{range}");
        let cr = res.headers()["content-range"].to_str().unwrap().to_owned();
        assert_eq!(cr, format!("bytes {from}-{}/{}", to - 1, bytes.len()), "{range}");
        assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[from..to], "{range}");
    }
    let res = client().get(&url).header("range", "bytes=20000-").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 416);
    store.delete(obj.id).await.unwrap();
}

pub async fn missing_before_upload(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let obj = object(ids, b"never uploaded", "text/plain").await;
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Missing);
}

pub async fn wrong_digest_refused(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let bytes = payload(4096);
    let obj = object(ids, &bytes, "application/octet-stream").await;
    let mut other = bytes.clone();
    other[100] ^= 1;
    let status = put(&*store, &obj, other, now_ms() + 60_000).await;
    assert!((400..500).contains(&status), "bytes with another digest answered {status}");
    assert_ne!(store.verify(&obj).await.unwrap(), Stored::Matches);
    store.delete(obj.id).await.unwrap();
}

pub async fn wrong_length_refused(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let bytes = payload(4096);
    let obj = object(ids, &bytes, "application/octet-stream").await;
    for len in [4097, 4095] {
        let status = put(&*store, &obj, payload(len), now_ms() + 60_000).await;
        assert!((400..500).contains(&status), "{len} bytes for a 4096-byte upload answered {status}");
        assert_ne!(store.verify(&obj).await.unwrap(), Stored::Matches);
    }
    store.delete(obj.id).await.unwrap();
}

pub async fn altered_upload_url_refused(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let bytes = payload(1000);
    let obj = object(ids, &bytes, "image/jpeg").await;
    let up = store.upload_url(&obj, now_ms() + 60_000).unwrap();
    assert_eq!(put_to(&tamper(&up.url), &up.headers, bytes.clone()).await, 403);
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Missing);
}

pub async fn expired_upload_url_refused(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let bytes = payload(1000);
    let obj = object(ids, &bytes, "image/jpeg").await;
    assert_eq!(put(&*store, &obj, bytes, now_ms() - 60_000).await, 403);
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Missing);
}

pub async fn altered_download_url_refused(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let obj = upload(&*store, ids, &payload(1000), "image/jpeg").await;
    let url = store.download_url(&obj, now_ms() + 60_000).unwrap().url;
    assert_eq!(client().get(tamper(&url)).send().await.unwrap().status().as_u16(), 403);
    store.delete(obj.id).await.unwrap();
}

pub async fn expired_download_url_refused(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let obj = upload(&*store, ids, &payload(1000), "image/jpeg").await;
    let url = store.download_url(&obj, now_ms() - 60_000).unwrap().url;
    assert_eq!(client().get(url).send().await.unwrap().status().as_u16(), 403);
    store.delete(obj.id).await.unwrap();
}

pub async fn wrong_content_type_refused(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let bytes = payload(1000);
    let obj = object(ids, &bytes, "image/jpeg").await;
    let mut up = store.upload_url(&obj, now_ms() + 60_000).unwrap();
    up.headers.insert("content-type".into(), "text/html".into());
    assert_eq!(put_to(&up.url, &up.headers, bytes).await, 403);
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Missing);
}

pub async fn delete_is_idempotent(store: Arc<dyn MediaStore>, ids: &dyn Ids) {
    let obj = upload(&*store, ids, b"x", "text/plain").await;
    store.delete(obj.id).await.unwrap();
    store.delete(obj.id).await.unwrap();
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Missing);
}
