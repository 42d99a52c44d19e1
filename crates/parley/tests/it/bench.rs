//! `parley bench` against a real server at tiny scale: every scenario runs to the end, reports
//! valid JSON, and its own correctness checks hold. The figures are never asserted here (they
//! belong in docs/BENCHMARKS.md); this only keeps the instrument working.

use std::process::Command;

use serde_json::Value;

use crate::harness::*;

/// Runs `parley bench ARGS --server URL` to completion and returns its JSON report.
fn bench(srv: &TestServer, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("bench")
        .args(args)
        .args(["--server", &srv.api().base])
        .output()
        .expect("run parley bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "parley bench {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}\n{stderr}"))
}

fn load_server_flags() -> [&'static str; 6] {
    ["--admin-token", ADMIN_TOKEN, "--send-rate-per-sec", "1000000", "--send-burst", "1000000"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_backlog_scenarios_run_and_lose_nothing() {
    let srv = TestServer::start_with(&load_server_flags()).await;
    let r =
        tokio::task::block_in_place(|| bench(&srv, &["sends", "--conns", "2", "--window", "4", "--duration", "0.5"]));
    assert!(r["sent"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    // The server's side, read from /metrics before and after: it persisted what was sent.
    let side = &r["server_metrics"];
    assert!(side["messages_persisted"].as_f64().unwrap() >= r["sent"].as_f64().unwrap(), "{r}");
    assert!(side["commits"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(side["too_slow_closes"], 0.0, "{r}");
    let r = tokio::task::block_in_place(|| bench(&srv, &["backlog", "--messages", "300"]));
    assert_eq!(r["replayed"], 300, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_scenario_runs_and_every_member_gets_every_message_once_in_order() {
    let srv = TestServer::start_with(&load_server_flags()).await;
    let args = ["group", "--members", "24", "--senders", "3", "--rate", "10", "--duration", "0.5"];
    let r = tokio::task::block_in_place(|| bench(&srv, &[&args[..], &["--admin-token", ADMIN_TOKEN]].concat()));
    assert_eq!(
        (r["missing"].as_u64(), r["duplicates"].as_u64(), r["out_of_order"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["deliveries"].as_u64().unwrap(), r["messages"].as_u64().unwrap() * 23, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_scenario_runs_with_consistent_watchers() {
    let mut flags = load_server_flags().to_vec();
    flags.extend(["--presence-grace-ms", "100"]);
    let srv = TestServer::start_with(&flags).await;
    let pid = srv.pid().expect("server pid").to_string();
    let args = [
        "presence",
        "--users",
        "30",
        "--contacts",
        "5",
        "--churn-pct",
        "10",
        "--duration",
        "1",
        "--offline-ms",
        "300",
        "--admin-token",
        ADMIN_TOKEN,
        "--server-pid",
        &pid,
    ];
    let r = tokio::task::block_in_place(|| bench(&srv, &args));
    assert_eq!(r["connected"], 30, "{r}");
    for check in ["stale_at_end", "repeats", "foreign", "connect_errors", "dropped"] {
        assert_eq!(r[check], 0, "{check}: {r}");
    }
    assert!(r["churn_cycles"].as_u64().unwrap() > 0, "{r}");
    assert!(r["server_cpu_seconds"].is_number(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_scenario_connects_everyone_and_reads_server_memory() {
    let srv = TestServer::start_with(&load_server_flags()).await;
    let pid = srv.pid().expect("server pid").to_string();
    let args = ["idle", "--conns", "50", "--hold", "0.2", "--server-pid", &pid, "--admin-token", ADMIN_TOKEN];
    let r = tokio::task::block_in_place(|| bench(&srv, &args));
    assert_eq!(r["connected"], 50, "{r}");
    assert!(r["server_rss_after_kib"].as_u64().unwrap() > 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_scenario_delivers_everything_once() {
    let srv = TestServer::start_with(&load_server_flags()).await;
    let pid = srv.pid().expect("server pid").to_string();
    let args = [
        "pairs",
        "--users",
        "20",
        "--rate",
        "100",
        "--duration",
        "0.5",
        "--server-pid",
        &pid,
        "--admin-token",
        ADMIN_TOKEN,
    ];
    let r = tokio::task::block_in_place(|| bench(&srv, &args));
    assert!(r["sent"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        (r["lost"].as_u64(), r["duplicated"].as_u64(), r["send_errors"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["delivered"], r["sent"], "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_scenario_brings_every_device_back() {
    let srv = TestServer::start_with(&load_server_flags()).await;
    let r = tokio::task::block_in_place(|| bench(&srv, &["storm", "--conns", "40", "--admin-token", ADMIN_TOKEN]));
    assert_eq!((r["resynced"].as_u64(), r["errors"].as_u64()), (Some(40), Some(0)), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_scenario_steps_up_and_reports_each_step() {
    let srv = TestServer::start_with(&load_server_flags()).await;
    let args = ["max", "--users", "4", "--step", "0.2", "--p99-bound-ms", "1000", "--admin-token", ADMIN_TOKEN];
    let r = tokio::task::block_in_place(|| bench(&srv, &args));
    let steps = r["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "{r}");
    assert!(steps.iter().all(|s| s["errors"] == 0 && s["sends_per_sec"].as_f64().unwrap() > 0.0), "{r}");
    assert!(r["best_sends_per_sec"].is_number(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_scenario_pushes_every_device_with_pushes_that_decrypt() {
    let mut flags = load_server_flags().to_vec();
    flags.extend(["--push-allow-private-endpoints", "--push-coalesce-ms", "0", "--push-device-per-minute", "1000000"]);
    let srv = TestServer::start_with(&flags).await;
    let args = ["push", "--devices", "20", "--rate", "4", "--duration", "0.5", "--admin-token", ADMIN_TOKEN];
    let r = tokio::task::block_in_place(|| bench(&srv, &args));
    // Pushes to a device may merge while one is in flight, so each device gets at least one.
    let received = r["pushes_received"].as_u64().unwrap();
    assert!((20..=40).contains(&received), "{r}");
    assert_eq!(r["undecodable"], 0, "{r}");
    assert!(r["sent_to_push_ms"]["count"].as_u64().unwrap() >= 2, "devices 0 and 10 are sampled: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_scenario_uploads_and_downloads_every_file() {
    let srv = TestServer::start_with(&["--media-uploads-per-minute", "100000", "--media-upload-burst", "100000"]).await;
    let pid = srv.pid().expect("pid").to_string();
    let args = ["media", "--clients", "3", "--sizes-mib", "0.25,1", "--files", "2", "--server-pid", &pid];
    let r = tokio::task::block_in_place(|| bench(&srv, &args));
    let sizes = r["sizes"].as_array().expect("sizes");
    assert_eq!(sizes.len(), 2, "{r}");
    for s in sizes {
        assert_eq!(s["uploads"], 6, "{r}");
        assert!(s["upload_mb_per_sec"].as_f64().unwrap() > 0.0 && s["download_mb_per_sec"].as_f64().unwrap() > 0.0);
        assert!(s["server_rss_upload_max_kib"].as_u64().unwrap() > 0, "{r}");
    }
    // The bench deletes what it uploaded.
    let objects = srv.data_dir().join("media").join("objects");
    let left: usize =
        std::fs::read_dir(objects).unwrap().flatten().map(|d| std::fs::read_dir(d.path()).unwrap().count()).sum();
    assert_eq!(left, 0);
}
