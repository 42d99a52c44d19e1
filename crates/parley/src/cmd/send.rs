//! `parley send USER TEXT`: one message, durably stored before this returns; encrypted on this
//! device when the conversation is end-to-end encrypted (`--encrypted` starts one).

use parley_client::{Client, ConnectOptions, new_client_id};

use super::{e2ee, session};
use crate::cli::SendArgs;

pub(super) async fn run(args: SendArgs) -> anyhow::Result<()> {
    let s = session::load()?;
    let client = Client::new(&s.server).with_token(&s.token);
    let to = client.user_by_name(&args.to).await?;
    let conv = client.create_direct_with(to.user_id, args.encrypted).await?;
    if conv.encrypted {
        // This connection only sends: it must not acknowledge messages `watch` has not shown.
        let (e2ee, _events) = e2ee::open(&s, ConnectOptions { auto_ack: false, ..Default::default() }).await?;
        let sent = e2ee.send_text(conv.conversation_id, &args.text).await?;
        let _ = e2ee.connection().close().await;
        println!("sent to {} (seq {}, end-to-end encrypted)", to.username, sent.seq);
        return Ok(());
    }
    if args.encrypted {
        anyhow::bail!(
            "the conversation with {} is not end-to-end encrypted (it was started without --encrypted); not sending",
            to.username
        );
    }
    let body = serde_json::json!({ "text": args.text });
    let m = client.post_message(conv.conversation_id, &new_client_id(), "text", body).await?;
    println!("sent to {} (seq {})", to.username, m.seq);
    Ok(())
}
