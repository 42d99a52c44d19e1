//! `parley watch`: prints messages as they arrive (the backlog first) and acknowledges them;
//! messages of end-to-end encrypted conversations are decrypted on this device.

use std::collections::HashMap;

use parley_client::{Client, ConnectOptions, Event};
use parley_e2ee::{Decrypted, E2eeEvent};
use parley_proto::Id;
use serde_json::Value;

use super::{e2ee, session};
use crate::cli::WatchArgs;

pub(super) async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let s = session::load()?;
    let client = Client::new(&s.server).with_token(&s.token);
    let (e2ee, mut events) = e2ee::open(&s, ConnectOptions::default()).await?;
    let conn = e2ee.connection().clone();
    let mut names: HashMap<Id, String> = HashMap::new();
    let mut seen = 0usize;
    eprintln!("watching as {} (Ctrl-C to stop)", s.username);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(event) = event else { break };
        for e in e2ee.handle(&event).await.unwrap_or_else(|e| {
            eprintln!("(end-to-end encryption: {e})");
            Vec::new()
        }) {
            match e {
                E2eeEvent::Message(d) => {
                    let name = name_of(&client, &mut names, d.conversation_id, d.sender_id).await;
                    print_decrypted(&name, &d);
                    seen += 1;
                }
                E2eeEvent::Undecryptable { conversation_id, seq, waiting_for_key, reason, .. } => {
                    if waiting_for_key {
                        eprintln!("[{conversation_id}] (message {seq} is encrypted; waiting for its key)");
                    } else {
                        eprintln!("[{conversation_id}] (message {seq} cannot be decrypted: {reason})");
                    }
                }
                E2eeEvent::DevicesChanged { user_id, conversation_ids } => {
                    let name = names.get(&user_id).cloned().unwrap_or_else(|| user_id.to_string());
                    let convs: Vec<String> = conversation_ids.iter().map(Id::to_string).collect();
                    eprintln!(
                        "(warning: {name}'s devices changed; the safety number with them is new{}: \
                         check it with `parley keys fingerprint`)",
                        if convs.is_empty() { String::new() } else { format!(" [{}]", convs.join(", ")) }
                    );
                }
            }
        }
        match event {
            Event::Message(m) => {
                let name = name_of(&client, &mut names, m.conversation_id, m.sender_id).await;
                let body: Value = serde_json::from_str(m.body.get()).unwrap_or_default();
                match (m.kind.as_str(), body.get("text").and_then(|t| t.as_str())) {
                    ("text", Some(text)) => println!("[{}] {name}: {text}", m.conversation_id),
                    ("media", _) => print_media(m.conversation_id, &name, &body, false),
                    ("conversation_created", _) => {
                        println!("[{}] * {name} started the conversation", m.conversation_id);
                        continue;
                    }
                    // Printed above once decrypted.
                    ("encrypted", _) => continue,
                    (kind, _) => println!("[{}] {name}: ({kind})", m.conversation_id),
                }
                seen += 1;
            }
            Event::Synced => eprintln!("(up to date)"),
            Event::Disconnected { code, reason } => {
                eprintln!("(disconnected: {code:?} {reason}; reconnecting)")
            }
            Event::Reconnected => eprintln!("(reconnected)"),
            Event::Error(e) => eprintln!("(server error: {} {})", e.code, e.message),
            _ => {}
        }
        if args.count.is_some_and(|c| seen >= c) {
            // Make sure the acknowledgement reached the server before leaving.
            conn.ping().await?;
            break;
        }
    }
    let _ = conn.close().await;
    Ok(())
}

fn print_decrypted(name: &str, d: &Decrypted) {
    let conv = d.conversation_id;
    let text = d.body.get("text").and_then(Value::as_str);
    match (d.kind.as_str(), text) {
        ("text", Some(text)) => println!("[{conv}] {name}: {text}"),
        ("edit", Some(text)) => println!("[{conv}] {name} (edit of {}): {text}", d.body["target_seq"]),
        ("reaction", _) => println!(
            "[{conv}] {name} reacted {} to {}",
            d.body.get("emoji").and_then(Value::as_str).unwrap_or(""),
            d.body["target_seq"]
        ),
        ("media", _) => print_media(conv, name, &d.body, true),
        (kind, _) => println!("[{conv}] {name}: ({kind})"),
    }
}

fn print_media(conv: Id, name: &str, body: &Value, encrypted: bool) {
    let field = |f: &str| body.get(f).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let size = body.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
    let label = [field("name"), field("caption")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>();
    let how = if encrypted {
        "end-to-end encrypted".to_owned()
    } else {
        format!("parley download {} FILE", field("media_id"))
    };
    println!(
        "[{conv}] {name}: [{} {size} bytes{}] media {} ({how})",
        field("content_type"),
        if label.is_empty() { String::new() } else { format!(": {}", label.join(" — ")) },
        field("media_id"),
    )
}

async fn name_of(client: &Client, names: &mut HashMap<Id, String>, conv: Id, user: Id) -> String {
    if let Some(n) = names.get(&user) {
        return n.clone();
    }
    let n = sender_name(client, conv, user).await;
    names.insert(user, n.clone());
    n
}

async fn sender_name(client: &Client, conv: Id, user: Id) -> String {
    // The conversation's member list names the sender without a lookup by id.
    if let Ok(c) = client.conversation(conv).await
        && let Some(member) = c.members.unwrap_or_default().into_iter().find(|x| x.user_id == user)
    {
        return member.username;
    }
    user.to_string()
}
