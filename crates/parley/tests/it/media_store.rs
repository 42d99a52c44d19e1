//! The media-store suite (`parley_media::conformance`) against the local store as the real
//! binary serves it: the test opens the same directory (and so the same signing key) as the
//! server, signs URLs with it, and every request goes to the server's `/blobs` routes. The
//! server stores bytes only for uploads it has a record of, so each object the suite uploads is
//! first asked for through `POST /v1/media`. The S3 backend runs the same suite in its own
//! crate, against a real S3 implementation.

use std::sync::Arc;

use base64::Engine;
use parley_core::ids::MediaId;
use parley_media::MediaStore;
use serde_json::json;

use crate::harness::{Device, TestServer, s};

struct Local {
    _srv: TestServer,
    dev: Device,
}

#[async_trait::async_trait]
impl parley_media::conformance::Ids for Local {
    async fn id_for(&self, size: u64, sha256: [u8; 32], content_type: &str) -> MediaId {
        // The suite also tries empty and mismatched objects; the record is made for the size
        // declared (at least 1 byte).
        let body = json!({
            "size": size.max(1),
            "content_type": content_type,
            "sha256": base64::engine::general_purpose::STANDARD.encode(sha256),
        });
        MediaId(s(&self.dev.post("/v1/media", &body).await.expect(201), "media_id").parse().expect("an id"))
    }
}

async fn local() -> (Arc<dyn MediaStore>, Local) {
    let srv = TestServer::start_with(&["--media-upload-burst", "1000"]).await;
    let store = parley_media_fs::FsMedia::open(&srv.data_dir().join("media"), &srv.api().base).expect("open the store");
    let dev = srv.login().await;
    (Arc::new(store), Local { _srv: srv, dev })
}

parley_media::media_store_conformance!(local().await);
