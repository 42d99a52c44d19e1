//! The media-store suite against a real S3 implementation: `s3s-fs` (a file-system-backed
//! S3 server) served in-process on a loopback port, with SigV4 checked (`SimpleAuth`), so
//! every refusal the suite expects comes from the S3 server itself. Each test gets its own
//! directory and bucket. Below the suite: `verify` of objects the store keeps no checksum for,
//! and what `check` reports for a missing bucket, bad credentials and an unreachable store.

use std::sync::Arc;

use parley_core::ids::MediaId;
use parley_media::{MediaError, MediaStore, Object, Stored};
use parley_media_s3::{Credentials, S3Store};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const ACCESS_KEY: &str = "parley-test-access";
const SECRET_KEY: &str = "parley-test-secret-0123456789";

/// A running S3 server; stops (and removes its files) when dropped.
struct Server {
    endpoint: String,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The accept loop owns the connections' tasks, so they end with it.
        self.task.abort();
    }
}

async fn start_server(bucket: &str) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join(bucket)).expect("bucket dir");
    let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let service = service.clone();
            connections.spawn(async move {
                let io = hyper_util::rt::TokioIo::new(socket);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    Server { endpoint, task, dir }
}

fn bucket_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("parley-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn store(endpoint: &str, bucket: &str, secret: &str) -> S3Store {
    let url = format!("s3://{bucket}?endpoint={endpoint}&region=us-east-1");
    S3Store::from_url(&url, Credentials::new(ACCESS_KEY, secret)).expect("store")
}

async fn setup() -> (Arc<dyn MediaStore>, Server) {
    let bucket = bucket_name();
    let server = start_server(&bucket).await;
    let store = store(&server.endpoint, &bucket, SECRET_KEY);
    store.check().await.expect("the bucket is usable");
    (Arc::new(store), server)
}

/// The bucket takes any key: the suite's objects get fresh ids.
impl parley_media::conformance::Ids for Server {}

parley_media::media_store_conformance!(setup().await);

/// Objects written into the bucket's directory behind the server's back have no stored
/// checksum (s3s-fs, like AWS for objects put without one, answers `HEAD` without
/// `x-amz-checksum-sha256`), so `verify` streams them through SHA-256.
#[tokio::test]
async fn verify_hashes_objects_without_a_stored_checksum() {
    let bucket = bucket_name();
    let server = start_server(&bucket).await;
    let store = store(&server.endpoint, &bucket, SECRET_KEY);
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let obj = Object {
        id: MediaId(77),
        size: bytes.len() as u64,
        sha256: Sha256::digest(&bytes).into(),
        content_type: "video/mp4".into(),
    };
    let path = server.dir.path().join(&bucket).join("media").join("77");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();

    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Matches);

    let mut altered = bytes.clone();
    altered[299_999] ^= 0x80;
    std::fs::write(&path, &altered).unwrap();
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Mismatch);

    std::fs::write(&path, &bytes[..1000]).unwrap();
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Mismatch);

    std::fs::remove_file(&path).unwrap();
    assert_eq!(store.verify(&obj).await.unwrap(), Stored::Missing);
}

#[tokio::test]
async fn check_names_a_missing_bucket() {
    let server = start_server(&bucket_name()).await;
    let err = store(&server.endpoint, "no-such-bucket", SECRET_KEY).check().await.unwrap_err();
    let MediaError::Misconfigured(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("\"no-such-bucket\"") && msg.contains(&server.endpoint), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
}

#[tokio::test]
async fn check_names_a_wrong_secret() {
    let bucket = bucket_name();
    let server = start_server(&bucket).await;
    let err = store(&server.endpoint, &bucket, "not-the-secret").check().await.unwrap_err();
    let MediaError::Misconfigured(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("AWS_SECRET_ACCESS_KEY") && msg.contains(&bucket), "{msg}");
    assert!(!msg.contains("not-the-secret"), "{msg}");
}

#[tokio::test]
async fn check_names_an_unknown_access_key() {
    let bucket = bucket_name();
    let server = start_server(&bucket).await;
    let url = format!("s3://{bucket}?endpoint={}", server.endpoint);
    let store = S3Store::from_url(&url, Credentials::new("nobody", SECRET_KEY)).unwrap();
    let err = store.check().await.unwrap_err();
    let MediaError::Misconfigured(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("\"nobody\"") && msg.contains(&bucket) && msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
}

#[tokio::test]
async fn check_reports_an_unreachable_store() {
    // A port nothing listens on: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let err = store(&format!("http://{addr}"), "media", SECRET_KEY).check().await.unwrap_err();
    let MediaError::Unavailable(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains(&addr.to_string()) && msg.contains("cannot reach"), "{msg}");
    assert!(!msg.contains("X-Amz-Signature"), "a signed URL leaked into the error: {msg}");
}
