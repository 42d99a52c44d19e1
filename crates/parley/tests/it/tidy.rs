//! Tidy checks over the source tree: the house rules that a compiler does not enforce, kept
//! true by a test (rust-analyzer's `tidy.rs` is the model).

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module says what it is for in a `//!` first line, so a newcomer reading any file
/// learns its purpose before its code.
#[test]
fn every_module_starts_with_a_doc_line() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "modules without a `//!` first line:\n{}", missing.join("\n"));
}

/// The names in a crate manifest's normal dependency tables (`[dependencies]` and any
/// `[target.*.dependencies]`; dev-dependencies are the tests' business).
fn dependencies(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("{krate}/Cargo.toml: {e}"));
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let table = line.trim_matches(['[', ']']);
            in_deps = table == "dependencies" || (table.starts_with("target.") && table.ends_with(".dependencies"));
        } else if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            out.push(name.trim().to_owned());
        }
    }
    out
}

/// Every crate of the workspace, by folder name (= crate name).
fn crates() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The boundaries of docs/ARCHITECTURE.md's crate map: trait crates and the server name no
/// backend and no database or transport driver; only the binary wires backends in.
#[test]
fn boundaries_hold() {
    let drivers = ["rusqlite", "tokio-postgres", "deadpool-postgres", "async-nats", "redis", "rusty-s3"];
    let backends =
        ["parley-store-sqlite", "parley-store-postgres", "parley-router-cluster", "parley-media-fs", "parley-media-s3"];
    for krate in [
        "parley-core",
        "parley-proto",
        "parley-store",
        "parley-router",
        "parley-media",
        "parley-server",
        "parley-client",
    ] {
        let deps = dependencies(krate);
        assert!(!deps.is_empty() || krate == "parley-core", "{krate} has no [dependencies]?");
        for d in drivers.iter().chain(&backends) {
            assert!(!deps.iter().any(|x| x == d), "{krate} must not depend on {d}");
        }
    }
    // The domain and the wire know nothing of storage, routing or HTTP, nor of each other.
    for krate in ["parley-core", "parley-proto"] {
        for d in ["parley-store", "parley-router", "parley-media", "parley-server", "axum", "tokio"] {
            assert!(!dependencies(krate).iter().any(|x| x == d), "{krate} must not depend on {d}");
        }
    }
    assert!(!dependencies("parley-core").iter().any(|d| d == "parley-proto"), "parley-core must not know the wire");
    let ours: Vec<String> = dependencies("parley-proto").into_iter().filter(|d| d.starts_with("parley-")).collect();
    assert!(ours.is_empty(), "parley-proto must depend on nothing of ours: {ours:?}");
    assert!(!dependencies("parley-client").iter().any(|d| d == "parley-server"), "the SDK must not know the server");
    // Only the binary wires backends in.
    for krate in crates().iter().filter(|k| *k != "parley" && !backends.contains(&k.as_str())) {
        for b in backends {
            assert!(!dependencies(krate).iter().any(|d| d == b), "only the binary may depend on {b}, not {krate}");
        }
    }
    // Each backend depends on its trait crate, and on no other backend.
    for (backend, boundary) in [
        ("parley-store-sqlite", "parley-store"),
        ("parley-store-postgres", "parley-store"),
        ("parley-router-cluster", "parley-router"),
        ("parley-media-fs", "parley-media"),
        ("parley-media-s3", "parley-media"),
    ] {
        let deps = dependencies(backend);
        assert!(deps.iter().any(|d| d == boundary), "{backend} implements {boundary}");
        for other in backends.iter().filter(|b| **b != backend) {
            assert!(!deps.iter().any(|d| d == other), "{backend} must not depend on {other}");
        }
        assert!(!deps.iter().any(|d| d == "parley-server"), "{backend} must not depend on parley-server");
    }
}
