//! `parley send-file USER PATH` and `parley download MEDIA_ID PATH`, with a progress bar.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use parley_client::media::{media_body, preview};
use parley_client::proto::Id;
use parley_client::{Client, new_client_id};

use super::session;
use crate::cli::{DownloadArgs, SendFileArgs};

/// Largest file whose preview is made (decoding reads it whole into memory).
const PREVIEW_MAX_BYTES: u64 = 32 * 1024 * 1024;

fn bar(total: u64, quiet: bool, verb: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// The MIME type of a file by its extension; anything unknown is a plain file.
pub(crate) fn content_type_of(path: &Path) -> &'static str {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

pub(super) async fn send_file(args: SendFileArgs) -> anyhow::Result<()> {
    let s = session::load()?;
    let client = Client::new(&s.server).with_token(&s.token);
    let to = client.user_by_name(&args.to).await?;
    let conv = client.create_direct(to.user_id).await?;
    if conv.encrypted {
        return send_encrypted_file(&s, conv.conversation_id, &to.username, &args).await;
    }
    let meta = tokio::fs::metadata(&args.path).await.with_context(|| format!("cannot read {}", args.path.display()))?;
    let content_type = args.content_type.clone().unwrap_or_else(|| content_type_of(&args.path).to_owned());
    let preview = if content_type.starts_with("image/") && meta.len() <= PREVIEW_MAX_BYTES {
        let bytes = tokio::fs::read(&args.path).await?;
        tokio::task::spawn_blocking(move || preview(&bytes)).await?
    } else {
        None
    };
    let bar = bar(meta.len(), args.quiet, "uploading");
    let progress = |done: u64, _total: u64| bar.set_position(done);
    let media = client.upload_file(&args.path, &content_type, &progress).await?;
    bar.finish_and_clear();
    let name = args.path.file_name().map(|n| n.to_string_lossy().into_owned());
    let body = media_body(&media, args.caption.as_deref(), name.as_deref(), preview.as_ref());
    let m = client.post_message(conv.conversation_id, &new_client_id(), "media", body).await?;
    println!(
        "sent {} ({} bytes, media {}) to {} (seq {})",
        args.path.display(),
        media.size,
        media.media_id,
        to.username,
        m.seq
    );
    Ok(())
}

/// In an end-to-end encrypted conversation: the file is encrypted on this device (read whole
/// into memory) and its key travels inside the encrypted message.
async fn send_encrypted_file(s: &session::Saved, conv: Id, to: &str, args: &SendFileArgs) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(&args.path).await.with_context(|| format!("cannot read {}", args.path.display()))?;
    let size = bytes.len();
    let content_type = args.content_type.clone().unwrap_or_else(|| content_type_of(&args.path).to_owned());
    let name = args.path.file_name().map(|n| n.to_string_lossy().into_owned());
    let opts = parley_client::ConnectOptions { auto_ack: false, ..Default::default() };
    let (e2ee, _events) = super::e2ee::open(s, opts).await?;
    let sent = e2ee.send_media(conv, bytes, &content_type, args.caption.as_deref(), name.as_deref()).await?;
    let _ = e2ee.connection().close().await;
    println!("sent {} ({size} bytes, end-to-end encrypted) to {to} (seq {})", args.path.display(), sent.seq);
    Ok(())
}

pub(super) async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let s = session::load()?;
    let client = Client::new(&s.server).with_token(&s.token);
    let id = Id::parse(&args.media_id);
    let size = client.media(id).await?.media.size;
    let bar = bar(size, args.quiet, "downloading");
    let progress = |done: u64, _total: u64| bar.set_position(done);
    let media = client.download_file(id, &args.path, &progress).await?;
    bar.finish_and_clear();
    println!("saved {} ({} bytes, {})", args.path.display(), media.size, media.content_type);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type_of(Path::new("a/B.JPG")), "image/jpeg");
        assert_eq!(content_type_of(Path::new("voice.ogg")), "audio/ogg");
        assert_eq!(content_type_of(Path::new("noext")), "application/octet-stream");
    }
}
