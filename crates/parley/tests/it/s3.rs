//! An S3 store for the end-to-end tests of the S3 media backend: `s3s-fs` (a real S3
//! implementation over a directory) served by this test process on a loopback port, checking
//! SigV4 signatures with one key pair, with one empty bucket. The `parley` binary under test
//! reaches it like any S3 endpoint (see [`S3Server::url`] and [`S3Server::env`]).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A running S3 server with one bucket. Holding it keeps its directory and its task alive;
/// dropping it stops the server and removes the directory.
pub(crate) struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
    pub(crate) bucket: String,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    dir: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl S3Server {
    /// The media store URL that points the server at this bucket.
    pub(crate) fn url(&self) -> String {
        format!("s3://{}?endpoint={}&region=us-east-1", self.bucket, self.endpoint)
    }

    /// The environment the `parley` binary reads its S3 credentials from.
    pub(crate) fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// The directory holding the bucket's objects (`media/<id>` is a file under it), for
    /// tests that check what the store holds without going through S3.
    pub(crate) fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(&self.bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // The accept loop owns the connections' tasks, so aborting it ends them too.
        self.task.abort();
    }
}

/// Starts an S3 server with a fresh directory and an empty bucket, on an ephemeral loopback
/// port. Call it from inside a Tokio runtime: the server runs on that runtime's tasks.
pub(crate) async fn start_s3() -> S3Server {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let bucket = format!("parley-it-{}-{n}", std::process::id());
    let access_key = format!("parley-it-key-{n}");
    let secret_key = format!("parley-it-secret-{n}-not-secret");

    let dir = tempfile::tempdir().expect("a temp dir for the S3 server");
    std::fs::create_dir(dir.path().join(&bucket)).expect("the bucket's directory");
    let fs = s3s_fs::FileSystem::new(dir.path()).expect("s3s-fs over the temp dir");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(access_key.clone(), secret_key.clone()));
    let service = builder.build();

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port for S3");
    let endpoint = format!("http://{}", listener.local_addr().expect("the S3 server's address"));
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let service = service.clone();
            connections.spawn(async move {
                let io = hyper_util::rt::TokioIo::new(socket);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
            // Reap finished connections so a long test does not accumulate them.
            while connections.try_join_next().is_some() {}
        }
    });
    S3Server { endpoint, bucket, access_key, secret_key, dir, task }
}
