//! The web client: the files under `web/` at the repository root, embedded in the binary when it
//! is built (no Node.js, nothing read from disk at run time) and served at `/` like any static
//! site, with a Content-Security-Policy that allows nothing but this origin.
//!
//! File names carry no content hash, so every answer says `Cache-Control: no-cache`: the browser
//! keeps its copy and revalidates it with the strong `ETag` (a hash of the bytes, computed once
//! when the router is built), which costs a 304 without a body when nothing changed.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// Scripts, styles, images and connections from this origin only (plus, for media, the object
/// store's origin when it is not this server, and `blob:`/`data:` images the page makes itself:
/// previews, blurhashes, recordings); no inline script or style, no plugins, no framing, no
/// `<base>`, and DOM sinks such as `innerHTML` refuse strings (Trusted Types with one policy that
/// vouches for nothing but `/sw.js`), so user text can only ever reach the page as text.
pub(super) fn content_security_policy(media_origin: Option<&str>) -> String {
    let media = media_origin.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{media}; \
         media-src 'self' blob:{media}; font-src 'self'; connect-src 'self'{media}; manifest-src 'self'; \
         worker-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'; \
         require-trusted-types-for 'script'; trusted-types parley-sw"
    )
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";
const MANIFEST: &str = "application/manifest+json";

/// One embedded file: where it is served, its content type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// An [`Asset`] whose bytes are `web/<path>`, read by the compiler (which rebuilds when it changes).
macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web", $path)),
        }
    };
}

/// Every file of the client. A unit test fails when a file under `web/` is missing here.
static ASSETS: &[Asset] = &[
    asset!("/index.html", HTML),
    asset!("/app.css", CSS),
    asset!("/favicon.svg", SVG),
    asset!("/manifest.webmanifest", MANIFEST),
    asset!("/js/main.js", JS),
    asset!("/js/api.js", JS),
    asset!("/js/socket.js", JS),
    asset!("/js/state.js", JS),
    asset!("/js/outbox.js", JS),
    asset!("/js/dom.js", JS),
    asset!("/js/format.js", JS),
    asset!("/js/icons.js", JS),
    asset!("/js/types.js", JS),
    asset!("/js/ui/auth.js", JS),
    asset!("/js/ui/sidebar.js", JS),
    asset!("/js/ui/chat.js", JS),
    asset!("/js/ui/messages.js", JS),
    asset!("/js/ui/composer.js", JS),
    asset!("/js/ui/dialogs.js", JS),
    asset!("/js/ui/groupinfo.js", JS),
    asset!("/js/ui/settings.js", JS),
    asset!("/js/push.js", JS),
    asset!("/js/blurhash.js", JS),
    asset!("/js/media.js", JS),
    asset!("/js/uploads.js", JS),
    asset!("/js/ui/media.js", JS),
    asset!("/js/ui/recorder.js", JS),
    asset!("/sw.js", JS),
];

/// Adds a `GET` (and so `HEAD`) route for every embedded file, and `/` for `index.html`.
pub(super) fn mount<S: Clone + Send + Sync + 'static>(mut router: Router<S>, media_origin: Option<&str>) -> Router<S> {
    // An origin is `scheme://host[:port]`; anything else would not be one directive's source.
    let media_origin = media_origin.filter(|o| o.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b','));
    let csp = HeaderValue::from_str(&content_security_policy(media_origin))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    for asset in ASSETS {
        let etag = etag(asset.body);
        let csp = csp.clone();
        let handler = move |headers: HeaderMap| std::future::ready(serve(asset, &etag, &csp, &headers));
        if asset.path == "/index.html" {
            router = router.route("/", get(handler.clone()));
        }
        router = router.route(asset.path, get(handler));
    }
    router
}

/// A strong validator: the first 128 bits of the SHA-256 of the bytes, quoted.
fn etag(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

fn serve(asset: &'static Asset, etag: &HeaderValue, csp: &HeaderValue, request: &HeaderMap) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::CONTENT_SECURITY_POLICY, csp.clone()),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
    ];
    if matches(request, etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (StatusCode::OK, headers, asset.body).into_response()
}

/// Whether `If-None-Match` names `etag` (or is `*`). The comparison is the weak one RFC 9110
/// prescribes for this header: a `W/` prefix is ignored.
fn matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.trim_start_matches("W/").as_bytes() == ours
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    /// Every file the client is made of, as served paths: `web/` minus its tests and tooling.
    fn client_files(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read web/") {
            let path = entry.expect("dir entry").path();
            let rel = path.strip_prefix(root).expect("under web/").to_string_lossy().replace('\\', "/");
            if path.is_dir() {
                if rel != "test" && rel != "node_modules" {
                    client_files(&path, root, out);
                }
            } else if rel != "tsconfig.json" && !rel.ends_with(".md") {
                out.insert(format!("/{rel}"));
            }
        }
    }

    #[test]
    fn every_client_file_is_embedded() {
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web"));
        let mut on_disk = BTreeSet::new();
        client_files(&root, &root, &mut on_disk);
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        assert_eq!(on_disk, embedded, "web/ and the embedded table differ");
        for asset in ASSETS {
            let ext = asset.path.rsplit('.').next().unwrap_or_default();
            let expected = match ext {
                "html" => HTML,
                "css" => CSS,
                "js" => JS,
                "svg" => SVG,
                "webmanifest" => MANIFEST,
                other => panic!("no content type known for .{other}"),
            };
            assert_eq!(asset.content_type, expected, "{}", asset.path);
        }
    }

    #[test]
    fn if_none_match() {
        let tag = etag(b"hello");
        let mut h = HeaderMap::new();
        assert!(!matches(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"nope\", W/\"also-not\""));
        assert!(!matches(&h, &tag));
        h.append(header::IF_NONE_MATCH, tag.clone());
        assert!(matches(&h, &tag));
        let weak = HeaderValue::from_str(&format!("W/{}", tag.to_str().unwrap())).unwrap();
        h.insert(header::IF_NONE_MATCH, weak);
        assert!(matches(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches(&h, &tag));
    }
}
