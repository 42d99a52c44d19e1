//! `parley bench`: runs a scenario of `parley-bench`, prints a summary, then the JSON report.

use std::time::Duration;

use parley_bench::{BacklogArgs, SendsArgs};

use crate::cli::BenchCommand;

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Sends { conns, window, duration, server } => {
            let args = SendsArgs { server: server.server, conns, window, duration: Duration::from_secs_f64(duration) };
            eprintln!("sends: {conns} connection(s), window {window}, {duration} s ...");
            let r = parley_bench::sends(args).await?;
            eprintln!(
                "{:.0} durable sends/s ({} sent, {} errors); send→sent p50 {:.2} ms, p99 {:.2} ms",
                r.sends_per_sec, r.sent, r.errors, r.send_to_sent_ms.p50, r.send_to_sent_ms.p99
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        BenchCommand::Group { members, rate, senders, duration, admin_token, server } => {
            let args = parley_bench::group::GroupArgs {
                server: server.server,
                admin_token,
                members,
                rate,
                senders,
                duration: Duration::from_secs_f64(duration),
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
            println!("{}", serde_json::to_string(&r)?);
        }
        BenchCommand::Backlog { messages, server } => {
            eprintln!("backlog: {messages} messages to an offline device ...");
            let r = parley_bench::backlog(BacklogArgs { server: server.server, messages }).await?;
            eprintln!(
                "replayed {} messages in {:.3} s ({:.0} messages/s) until synced",
                r.replayed, r.seconds_to_synced, r.messages_per_sec
            );
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}
