//! The media-store suite (`parley_media::conformance`) against the local store as the real
//! binary serves it: the test opens the same directory (and so the same signing key) as the
//! server, signs URLs with it, and every request goes to the server's `/blobs` routes. The S3
//! backend runs the same suite in its own crate, against a real S3 implementation.

use std::sync::Arc;

use parley_media::MediaStore;

use crate::harness::TestServer;

async fn local() -> (Arc<dyn MediaStore>, TestServer) {
    let srv = TestServer::start().await;
    let store = parley_media_fs::FsMedia::open(&srv.data_dir().join("media"), &srv.api().base).expect("open the store");
    (Arc::new(store), srv)
}

parley_media::media_store_conformance!(local().await);
