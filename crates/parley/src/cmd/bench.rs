//! `parley bench`: runs a scenario of `parley-bench`, prints a summary, then the JSON report.

use std::io::IsTerminal;
use std::time::Duration;

use parley_bench::server_metrics::{Reading, ServerSide};
use parley_bench::{BacklogArgs, SendsArgs};

use crate::cli::{AdminTarget, BenchCommand};

/// Runs the scenario with a progress bar on standard error, then reads the server's `/metrics`
/// to explain the run, and prints the report with the server's side added.
pub(super) async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let server = server_url(&cmd);
    let before = Reading::fetch(&server).await;
    if let Err(e) = &before {
        eprintln!("(cannot read {server}/metrics: {e}; the report will not include the server's side)");
    }
    let bar = tokio::spawn(progress_bar());
    let result = scenario(cmd).await;
    bar.abort();
    let _ = bar.await;
    clear_progress_line();
    let mut report = result?;
    if let (Ok(before), Ok(after)) = (before, Reading::fetch(&server).await) {
        let side = ServerSide::between(&before, &after);
        for line in side.describe() {
            eprintln!("{line}");
        }
        if let Some(obj) = report.as_object_mut() {
            obj.insert("server_metrics".into(), serde_json::to_value(&side)?);
        }
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn server_url(cmd: &BenchCommand) -> String {
    match cmd {
        BenchCommand::Sends { server, .. }
        | BenchCommand::Presence { server, .. }
        | BenchCommand::Media { server, .. }
        | BenchCommand::Backlog { server, .. } => server.server.clone(),
        BenchCommand::Group { target, .. }
        | BenchCommand::Push { target, .. }
        | BenchCommand::Pairs { target, .. }
        | BenchCommand::Max { target, .. }
        | BenchCommand::Storm { target, .. }
        | BenchCommand::Idle { target, .. } => target.server.server.clone(),
    }
}

/// Redraws the current phase's bar in place when standard error is a terminal; otherwise (a log
/// file, CI) prints a line every 5 s.
async fn progress_bar() {
    let tty = std::io::stderr().is_terminal();
    let every = if tty { Duration::from_millis(250) } else { Duration::from_secs(5) };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Some(s) = parley_bench::progress::snapshot() {
            if tty {
                eprint!("\r\x1b[2K{}", s.render(30));
            } else {
                eprintln!("{}", s.render(30));
            }
        }
    }
}

fn clear_progress_line() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

async fn scenario(cmd: BenchCommand) -> anyhow::Result<serde_json::Value> {
    Ok(match cmd {
        BenchCommand::Sends { conns, window, duration, server } => {
            let args = SendsArgs { server: server.server, conns, window, duration: Duration::from_secs_f64(duration) };
            eprintln!("sends: {conns} connection(s), window {window}, {duration} s ...");
            let r = parley_bench::sends(args).await?;
            eprintln!(
                "{:.0} durable sends/s ({} sent, {} errors); send→sent p50 {:.2} ms, p99 {:.2} ms",
                r.sends_per_sec, r.sent, r.errors, r.send_to_sent_ms.p50, r.send_to_sent_ms.p99
            );
            serde_json::to_value(&r)?
        }
        BenchCommand::Push { devices, rate, duration, server_pid, target: AdminTarget { admin_token, server } } => {
            let args = parley_bench::push::PushArgs {
                server: server.server,
                admin_token,
                devices,
                rate,
                duration: Duration::from_secs_f64(duration),
                server_pid,
            };
            eprintln!(
                "push: {devices} offline devices, one message to all of them {rate} times a second for {duration} s ..."
            );
            let r = parley_bench::push::run(args).await?;
            eprintln!(
                "{} of {} pushes arrived ({:.0}/s); sent→push p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} sampled){}",
                r.pushes_received,
                r.pushes_expected,
                r.pushes_per_sec,
                r.sent_to_push_ms.p50,
                r.sent_to_push_ms.p99,
                r.sent_to_push_ms.max,
                r.sent_to_push_ms.count,
                r.server_cpu_us_per_push.map(|c| format!("; server CPU {c:.0} µs per push")).unwrap_or_default()
            );
            serde_json::to_value(&r)?
        }
        BenchCommand::Group {
            members,
            rate,
            senders,
            duration,
            no_ack,
            target: AdminTarget { admin_token, server },
        } => {
            let args = parley_bench::group::GroupArgs {
                server: server.server,
                admin_token,
                members,
                rate,
                senders,
                duration: Duration::from_secs_f64(duration),
                ack: !no_ack,
            };
            eprintln!("group: {members} members online, {senders} sender(s) at {rate}/s for {duration} s ...");
            let r = parley_bench::group::run(args).await?;
            eprintln!(
                "{} messages, {} deliveries ({:.0}/s); send→last member p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
                 per recipient p50 {:.2} ms, p99 {:.2} ms; missing {}, duplicates {}, out of order {}",
                r.messages,
                r.deliveries,
                r.deliveries_per_sec,
                r.send_to_last_member_ms.p50,
                r.send_to_last_member_ms.p99,
                r.send_to_last_member_ms.max,
                r.per_recipient_ms.p50,
                r.per_recipient_ms.p99,
                r.missing,
                r.duplicates,
                r.out_of_order
            );
            serde_json::to_value(&r)?
        }
        BenchCommand::Presence {
            users,
            contacts,
            churn_pct,
            duration,
            offline_ms,
            admin_token,
            server_pid,
            server,
        } => {
            let args = parley_bench::presence::PresenceArgs {
                server: server.server,
                admin_token,
                users,
                contacts,
                churn_pct,
                duration: Duration::from_secs_f64(duration),
                offline_ms,
                server_pid,
            };
            eprintln!(
                "presence: {users} users, ~{contacts} contacts each, {churn_pct}% churn per second for {duration} s, \
                 away {offline_ms} ms (+50–500) ..."
            );
            let r = parley_bench::presence::run(args).await?;
            let ms = |s: &parley_bench::Summary| {
                format!(
                    "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
                    s.p50, s.p90, s.p99, s.max, s.count
                )
            };
            eprintln!(
                "{} churn cycles ({} skipped, {} unfinished); {} presence frames in {:.1} s \
                 ({} online, {} offline changes, {} snapshot frames)",
                r.churn_cycles,
                r.churn_skipped,
                r.churn_unfinished,
                r.presence_frames,
                r.window_seconds,
                r.online_changes,
                r.offline_changes,
                r.snapshot_frames
            );
            eprintln!("connect → watcher presence: {}", ms(&r.connect_to_watcher_online_ms));
            eprintln!("disconnect → watcher offline: {}", ms(&r.disconnect_to_watcher_offline_ms));
            eprintln!("reconnect → ready: {}", ms(&r.reconnect_ms));
            eprintln!("this process's 10 ms timer late by: {}", ms(&r.bench_lag_ms));
            if r.bench_lag_ms.p99 > 5.0 {
                eprintln!(
                    "warning: this process was itself late (timer p99 {:.1} ms): the latencies include the load \
                     generator's own delays; use fewer users per bench process",
                    r.bench_lag_ms.p99
                );
            }
            if let (Some(cpu), per_frame) = (r.server_cpu_seconds, r.server_cpu_us_per_presence_frame) {
                eprintln!(
                    "server CPU {cpu:.2} s over the churn ({:.1} µs per presence frame)",
                    per_frame.unwrap_or(0.0)
                );
            }
            eprintln!(
                "checks: stale at end {}, unmatched {}, repeats {}, foreign {}, initial offline {}, \
                 initial snapshots {}/{}; errors: connect {}, close {}, dropped {}",
                r.stale_at_end,
                r.unmatched,
                r.repeats,
                r.foreign,
                r.initial_offline,
                r.initial_snapshots,
                r.subscribers,
                r.connect_errors,
                r.close_errors,
                r.dropped
            );
            serde_json::to_value(&r)?
        }
        BenchCommand::Pairs {
            users,
            rate,
            duration,
            server_pid,
            also_server,
            also_server_pid,
            target: AdminTarget { admin_token, server },
        } => {
            let args = parley_bench::pairs::PairsArgs {
                server: server.server,
                admin_token,
                users,
                rate,
                duration: Duration::from_secs_f64(duration),
                server_pid,
                other_servers: also_server,
                other_pids: also_server_pid,
            };
            eprintln!("pairs: {users} users, {rate} msgs/s in all, {duration} s ...");
            let r = parley_bench::pairs::run(args).await?;
            let cpu = r.server_cpu_us_per_delivered.map_or("? (give --server-pid)".into(), |c| format!("{c:.1} µs"));
            eprintln!(
                "{} sent, {} delivered ({:.0}/s), {} lost, {} duplicated, {} send errors; send→sent p50 {:.2} ms p99 {:.2} ms; \
                 send→delivery p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms; server CPU per delivered message {cpu}",
                r.sent,
                r.delivered,
                r.delivered_per_sec,
                r.lost,
                r.duplicated,
                r.send_errors,
                r.send_to_sent_ms.p50,
                r.send_to_sent_ms.p99,
                r.send_to_delivery_ms.p50,
                r.send_to_delivery_ms.p90,
                r.send_to_delivery_ms.p99,
                r.send_to_delivery_ms.p999,
                r.send_to_delivery_ms.max
            );
            if r.nodes > 1 && !r.node_cpu_seconds.is_empty() {
                let per_node: Vec<String> = r
                    .node_cpu_seconds
                    .iter()
                    .map(|c| format!("{:.1} µs", c * 1e6 / r.delivered.max(1) as f64))
                    .collect();
                eprintln!("{} nodes; CPU per delivered message by node: {}", r.nodes, per_node.join(", "));
            }
            serde_json::to_value(&r)?
        }
        BenchCommand::Max { users, step, p99_bound_ms, target: AdminTarget { admin_token, server } } => {
            eprintln!("max: {users} users, {step} s per step, p99 bound {p99_bound_ms} ms ...");
            let args = parley_bench::max::MaxArgs {
                server: server.server,
                admin_token,
                users,
                step: Duration::from_secs_f64(step),
                p99_bound_ms,
            };
            let r = parley_bench::max::run(args).await?;
            for s in &r.steps {
                eprintln!(
                    "  window {:>3}: {:>7.0} sends/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                    s.window, s.sends_per_sec, s.send_to_sent_ms.p50, s.send_to_sent_ms.p99, s.errors
                );
            }
            match r.best_sends_per_sec {
                Some(best) => eprintln!("max within the bound: {best:.0} durable sends/s"),
                None => eprintln!("no step stayed within the bound"),
            }
            serde_json::to_value(&r)?
        }
        BenchCommand::Storm { conns, target: AdminTarget { admin_token, server } } => {
            eprintln!("storm: {conns} devices drop and reconnect at once ...");
            let r =
                parley_bench::storm::run(parley_bench::storm::StormArgs { server: server.server, admin_token, conns })
                    .await?;
            eprintln!(
                "{} of {} back and synced in {:.2} s ({} errors); per device p50 {:.1} ms, p99 {:.1} ms",
                r.resynced,
                r.conns,
                r.seconds_to_all_synced,
                r.errors,
                r.reconnect_to_synced_ms.p50,
                r.reconnect_to_synced_ms.p99
            );
            serde_json::to_value(&r)?
        }
        BenchCommand::Media { clients, sizes_mib, files, server_pid, server } => {
            let sizes: Vec<u64> = sizes_mib.iter().map(|m| (m * 1024.0 * 1024.0) as u64).filter(|&s| s > 0).collect();
            let args = parley_bench::media::MediaArgs {
                server: server.server,
                clients,
                sizes: sizes.clone(),
                files,
                server_pid,
            };
            eprintln!("media: {clients} clients, {files} files each of {sizes_mib:?} MiB, up then down ...");
            let r = parley_bench::media::run(args).await?;
            for s in &r.sizes {
                let rss = |k: Option<u64>| k.map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
                eprintln!(
                    "{:.1} MiB x {}: upload {:.0} MB/s, download {:.0} MB/s, ready p50 {:.0} ms p99 {:.0} ms; server RSS {} before, max {} up / {} down",
                    s.size_bytes as f64 / 1048576.0,
                    s.uploads,
                    s.upload_mb_per_sec,
                    s.download_mb_per_sec,
                    s.time_to_ready_ms.p50,
                    s.time_to_ready_ms.p99,
                    rss(r.server_rss_before_kib),
                    rss(s.server_rss_upload_max_kib),
                    rss(s.server_rss_download_max_kib),
                );
            }
            serde_json::to_value(&r)?
        }
        BenchCommand::Idle { conns, hold, server_pid, target: AdminTarget { admin_token, server } } => {
            let args = parley_bench::idle::IdleArgs {
                server: server.server,
                admin_token,
                conns,
                hold: Duration::from_secs_f64(hold),
                server_pid,
            };
            eprintln!("idle: {conns} connections, held {hold} s ...");
            let r = parley_bench::idle::run(args).await?;
            let per_conn = r.server_bytes_per_conn.map_or("? (give --server-pid)".into(), |b| format!("{:.0} B", b));
            eprintln!(
                "{} connected in {:.2} s ({:.0}/s); server memory per idle connection: {per_conn}",
                r.connected, r.connect_seconds, r.connects_per_sec
            );
            serde_json::to_value(&r)?
        }
        BenchCommand::Backlog { messages, server } => {
            eprintln!("backlog: {messages} messages to an offline device ...");
            let r = parley_bench::backlog(BacklogArgs { server: server.server, messages }).await?;
            eprintln!(
                "replayed {} messages in {:.3} s ({:.0} messages/s) until synced",
                r.replayed, r.seconds_to_synced, r.messages_per_sec
            );
            serde_json::to_value(&r)?
        }
    })
}
