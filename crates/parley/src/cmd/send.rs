//! `parley send USER TEXT`: one message, durably stored before this returns.

use parley_client::{Client, new_client_id};

use super::session;
use crate::cli::SendArgs;

pub(super) async fn run(args: SendArgs) -> anyhow::Result<()> {
    let s = session::load()?;
    let client = Client::new(&s.server).with_token(&s.token);
    let to = client.user_by_name(&args.to).await?;
    let conv = client.create_direct(to.user_id).await?;
    let body = serde_json::json!({ "text": args.text });
    let m = client.post_message(conv.conversation_id, &new_client_id(), "text", body).await?;
    println!("sent to {} (seq {})", to.username, m.seq);
    Ok(())
}
