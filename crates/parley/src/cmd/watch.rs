//! `parley watch`: prints messages as they arrive (the backlog first) and acknowledges them.

use std::collections::HashMap;

use parley_client::{Client, ConnectOptions, Connection, Event};
use parley_proto::Id;

use super::session;
use crate::cli::WatchArgs;

pub(super) async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let s = session::load()?;
    let client = Client::new(&s.server).with_token(&s.token);
    let (conn, mut events) = Connection::connect(&s.server, &s.token, ConnectOptions::default()).await?;
    let mut names: HashMap<Id, String> = HashMap::new();
    let mut seen = 0usize;
    eprintln!("watching as {} (Ctrl-C to stop)", s.username);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(event) = event else { break };
        match event {
            Event::Message(m) => {
                let name = match names.get(&m.sender_id) {
                    Some(n) => n.clone(),
                    None => {
                        let n = sender_name(&client, &m).await;
                        names.insert(m.sender_id, n.clone());
                        n
                    }
                };
                let body: serde_json::Value = serde_json::from_str(m.body.get()).unwrap_or_default();
                match (m.kind.as_str(), body.get("text").and_then(|t| t.as_str())) {
                    ("text", Some(text)) => println!("[{}] {name}: {text}", m.conversation_id),
                    ("media", _) => {
                        let field = |f: &str| body.get(f).and_then(|v| v.as_str()).unwrap_or("").to_owned();
                        let size = body.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
                        let label =
                            [field("name"), field("caption")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>();
                        println!(
                            "[{}] {name}: [{} {size} bytes{}] media {} (parley download {} FILE)",
                            m.conversation_id,
                            field("content_type"),
                            if label.is_empty() { String::new() } else { format!(": {}", label.join(" — ")) },
                            field("media_id"),
                            field("media_id"),
                        )
                    }
                    ("conversation_created", _) => {
                        println!("[{}] * {name} started the conversation", m.conversation_id);
                        continue;
                    }
                    (kind, _) => println!("[{}] {name}: ({kind})", m.conversation_id),
                }
                seen += 1;
                if args.count.is_some_and(|c| seen >= c) {
                    // Make sure the acknowledgement reached the server before leaving.
                    conn.ping().await?;
                    break;
                }
            }
            Event::Synced => eprintln!("(up to date)"),
            Event::Disconnected { code, reason } => {
                eprintln!("(disconnected: {code:?} {reason}; reconnecting)")
            }
            Event::Reconnected => eprintln!("(reconnected)"),
            Event::Error(e) => eprintln!("(server error: {} {})", e.code, e.message),
            _ => {}
        }
    }
    let _ = conn.close().await;
    Ok(())
}

async fn sender_name(client: &Client, m: &parley_proto::Message) -> String {
    // The conversation's member list names the sender without a lookup by id.
    if let Ok(conv) = client.conversation(m.conversation_id).await
        && let Some(member) = conv.members.unwrap_or_default().into_iter().find(|x| x.user_id == m.sender_id)
    {
        return member.username;
    }
    m.sender_id.to_string()
}
