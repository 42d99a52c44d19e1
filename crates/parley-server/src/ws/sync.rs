//! Catching a connection up from the log: the connect-time replay, the in-place resync after
//! routed frames may have been lost, and the filling of a gap a routed frame reveals, all through
//! one routine ([`Conn::write_log`]); and the ordering of routed frames ([`Conn::outbound`]).
//!
//! The connection registers with the router before the replay starts, so anything committed
//! during the replay is also queued live; the connection's per-conversation high-water marks
//! (`seen`) drop whatever the replay already wrote. Nothing is lost and nothing is reordered.
//!
//! # In depth
//!
//! After `auth` the connection registers with the router *before* reading the backlog, so nothing
//! committed during the replay can fall between the two. It then pages through every conversation
//! whose log is past this device's cursor (`Store::backlog`, `Store::log_range`), writes those
//! messages (skipping the device's own), records the high-water mark per conversation, and sends
//! `synced`. Live frames queued meanwhile are then written, minus anything the replay already
//! covered.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::ws::Utf8Bytes;
use parley_core::ids::{ConversationId, Seq};
use parley_proto::frames::{ServerFrame, Synced, close};
use parley_router::Outbound;

use super::conn::{Conn, End};
use crate::convert;
use crate::metrics::Metrics;

/// Log entries read per query while catching up.
const PAGE: u32 = 512;

/// High-water marks of what a connection has written (or skipped as its own), per conversation.
pub(super) type Seen = HashMap<ConversationId, Seq>;

/// Reading the log failed: the client reconnects and syncs again.
fn sync_failed() -> End {
    End::Close(close::GOING_AWAY, "sync failed")
}

impl Conn {
    /// Connect-time sync: every message past this device's cursors, in seq order per
    /// conversation, then `synced`.
    pub(super) async fn replay(&mut self) -> Result<(), End> {
        self.catch_up().await?;
        self.write_to_device().await?;
        self.feed(ServerFrame::Synced(Synced {}).to_json().into()).await?;
        self.flush().await
    }

    /// Frames routed to this node may have been lost (its link to the other nodes broke): write
    /// what the log has past this connection's high-water marks, as a reconnect's replay would,
    /// without closing. Live frames queued meanwhile are then dropped as repeats.
    pub(super) async fn resync(&mut self) -> Result<(), End> {
        self.catch_up().await
    }

    /// The replay and the resync: for each conversation with a backlog, the log past both the
    /// device's cursor and this connection's high-water mark (at connect there is none yet).
    async fn catch_up(&mut self) -> Result<(), End> {
        let backlog = self.app.store.backlog(self.device, self.user).await.map_err(|_| sync_failed())?;
        for b in backlog {
            let conv = b.conversation_id;
            let after = self.seen.get(&conv).copied().unwrap_or(b.after_seq).max(b.after_seq);
            let (last, written) = self.write_log(conv, after, b.upto_seq).await?;
            self.app.metrics.replayed.fetch_add(written, Ordering::Relaxed);
            // Every conversation gets a high-water mark, up to date or not, so a live entry that
            // arrives ahead of an earlier one is seen as a gap and filled, never as the start.
            self.seen.insert(conv, last);
        }
        self.flush().await
    }

    /// Writes one routed frame, keeping each conversation gap-free and free of repeats.
    pub(super) async fn outbound(&mut self, out: Outbound) -> Result<(), End> {
        if let Some(device) = out.device {
            if device != self.device {
                return Ok(());
            }
            // An empty frame for this device: its to-device queue has more.
            if out.json.is_empty() {
                return self.write_to_device().await;
            }
        }
        if let Some(p) = out.position {
            let known = match self.seen.get(&p.conversation_id) {
                Some(&last) => Some(last),
                // Joined after this connection synced: its stream starts at the join entry.
                None => self.app.members.window(p.conversation_id, self.user).await.map(|w| w.joined_seq - 1),
            };
            if let Some(last) = known {
                if p.seq <= last {
                    return Ok(());
                }
                if p.seq > last + 1 {
                    self.fill_gap(p.conversation_id, last, p.seq - 1).await?;
                }
            }
            self.seen.insert(p.conversation_id, p.seq);
            if p.sender_device_id == Some(self.device) {
                return Ok(());
            }
        }
        Metrics::inc(&self.app.metrics.deliveries);
        // Routed frames are built from `String`s, so they are valid UTF-8.
        let text = Utf8Bytes::try_from(out.json).map_err(|_| End::Close(close::GOING_AWAY, "internal error"))?;
        self.feed(text).await
    }

    /// Routing reordered or dropped something (possible across nodes): read the gap from the log,
    /// within this user's membership window (a re-added member never sees the time they were out).
    async fn fill_gap(&mut self, conv: ConversationId, after: Seq, upto: Seq) -> Result<(), End> {
        let Some(w) = self.app.members.window(conv, self.user).await else {
            return Ok(());
        };
        let after = after.max(w.joined_seq - 1);
        let upto = w.left_seq.map_or(upto, |l| upto.min(l));
        self.write_log(conv, after, upto).await?;
        Ok(())
    }

    /// Writes `conv`'s log entries in (`after`, `upto`], page by page, skipping this device's own
    /// sends. Returns the last seq examined (`after` when there was none) and the frames written.
    async fn write_log(&mut self, conv: ConversationId, mut after: Seq, upto: Seq) -> Result<(Seq, u64), End> {
        let (device, mut written) = (self.device, 0);
        while after < upto {
            let entries = self.app.store.log_range(conv, after, upto, PAGE).await.map_err(|_| sync_failed())?;
            let full = entries.len() as u32 == PAGE;
            after = entries.last().map_or(after, |m| m.seq);
            for m in entries.iter().filter(|m| m.sender_device_id != Some(device)) {
                self.feed(ServerFrame::Message(&convert::message(m)).to_json().into()).await?;
                written += 1;
            }
            // Each page goes out before the next is read, so a long backlog streams to the client
            // instead of piling up in the socket's buffer.
            self.flush().await?;
            // A short page is the end of the range.
            if !full {
                break;
            }
        }
        Ok((after, written))
    }
}
