//! The web client as the binary serves it: every file with its content type, the security
//! headers (CSP, nosniff), ETag revalidation with 304, and that `/v1/...` keeps its JSON errors.

use reqwest::header::{self, HeaderMap};

use crate::harness::*;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("missing header {name}: {headers:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_have_content_types_and_security_headers() {
    let srv = TestServer::start().await;
    let http = &srv.api().http;

    let index = http.get(srv.api().url("/")).send().await.expect("GET /");
    assert_eq!(index.status(), 200);
    let h = index.headers().clone();
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    let csp = header(&h, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive:?}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "CSP allows inline code: {csp}");
    let html = index.text().await.expect("index body");
    assert!(html.contains("<script type=\"module\" src=\"/js/main.js\"></script>"), "{html}");
    assert!(!html.contains("<script>") && !html.contains("style="), "inline script or style in index.html");

    // `/index.html` is the same page; every file the page and its modules name is served with
    // its type.
    let same = http.get(srv.api().url("/index.html")).send().await.expect("GET /index.html");
    assert_eq!(same.status(), 200);
    assert_eq!(header(same.headers(), "etag"), header(&h, "etag"));

    let mut pending = vec!["/js/main.js".to_string(), "/app.css".to_string(), "/favicon.svg".to_string()];
    pending.push("/manifest.webmanifest".to_string());
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = pending.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let r = http.get(srv.api().url(&path)).send().await.expect("GET asset");
        assert_eq!(r.status(), 200, "{path}");
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("webmanifest") => "application/manifest+json",
            other => panic!("unexpected asset {path} ({other:?})"),
        };
        assert_eq!(header(r.headers(), "content-type"), expected, "{path}");
        assert_eq!(header(r.headers(), "x-content-type-options"), "nosniff", "{path}");
        assert!(r.headers().contains_key("content-security-policy"), "{path}");
        let body = r.text().await.expect("asset body");
        assert!(!body.is_empty(), "{path} is empty");
        if path.ends_with(".js") {
            // Follow the static imports, so every module the client loads is checked.
            let dir = &path[..path.rfind('/').expect("a slash") + 1];
            for import in body.lines().filter_map(|l| l.trim().strip_prefix("import ")) {
                let Some(spec) = import.split(" from ").nth(1) else { continue };
                let spec = spec.trim_end_matches(';').trim_matches(|c| c == '\'' || c == '"');
                assert!(spec.starts_with("./") || spec.starts_with("../"), "{path} imports {spec}");
                pending.push(resolve(dir, spec));
            }
        }
    }
    assert!(seen.len() > 10, "the client is made of more modules than {seen:?}");

    // HEAD answers the headers without a body.
    let head = http.head(srv.api().url("/app.css")).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(header(head.headers(), "content-type"), "text/css; charset=utf-8");
}

/// `dir` + a relative module specifier, with `..` applied.
fn resolve(dir: &str, spec: &str) -> String {
    let mut parts: Vec<&str> = dir.trim_end_matches('/').split('/').collect();
    for seg in spec.split('/') {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_revalidation_answers_304() {
    let srv = TestServer::start().await;
    let http = &srv.api().http;
    for path in ["/", "/js/main.js", "/app.css"] {
        let first = http.get(srv.api().url(path)).send().await.expect("GET");
        assert_eq!(first.status(), 200);
        let etag = header(first.headers(), "etag").to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10, "a strong ETag: {etag}");

        let again = http.get(srv.api().url(path)).header(header::IF_NONE_MATCH, &etag).send().await.expect("GET");
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(header(again.headers(), "etag"), etag);
        assert_eq!(header(again.headers(), "cache-control"), "no-cache");
        assert!(again.bytes().await.expect("body").is_empty(), "a 304 has no body");

        // A list naming it, or its weak form, matches too; another tag does not.
        let listed = format!("\"something-else\", W/{etag}");
        let r = http.get(srv.api().url(path)).header(header::IF_NONE_MATCH, listed).send().await.expect("GET");
        assert_eq!(r.status(), 304, "{path}");
        let stale = http.get(srv.api().url(path)).header(header::IF_NONE_MATCH, "\"stale\"").send().await.expect("GET");
        assert_eq!(stale.status(), 200, "{path}");
        assert!(!stale.bytes().await.expect("body").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_paths_and_json_errors() {
    let srv = TestServer::start().await;
    srv.get("/v1/unknown", None).await.expect_error(404, "not_found");
    srv.get("/v1", None).await.expect_error(404, "not_found");
    srv.get("/no-such-page", None).await.expect_error(404, "not_found");
    srv.post("/", &serde_json::json!({}), None).await.expect_error(405, "method_not_allowed");
    assert_eq!(srv.get("/healthz", None).await.status, 200);
    assert_eq!(srv.get("/readyz", None).await.status, 200);
    let metrics = srv.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    srv.get("/v1/me", None).await.expect_error(401, "unauthorized");
}
