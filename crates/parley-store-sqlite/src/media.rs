//! Media records and the references messages hold to them (see `Store`'s media methods).
//!
//! `refs` counts the messages that reference an upload; a send raises it in its own
//! transaction and only while the upload is ready, and the collector marks an upload doomed
//! only while it is zero, both on the one writer thread: a send racing the collector either
//! sees a ready upload (and the collector then sees `refs > 0`) or is refused.

use parley_core::ids::*;
use parley_core::media::{Media, MediaState};
use parley_core::model::Message;
use parley_core::validate::MediaRef;
use parley_store::StoreError;
use parley_store::media::MediaUsage;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::SqlResult as Result;
use crate::writer::WriteCtx;

const COLS: &str = "media_id, uploader_id, size, content_type, sha256, state, created_at";

fn row(r: &Row<'_>) -> rusqlite::Result<Media> {
    let digest: Vec<u8> = r.get(4)?;
    Ok(Media {
        id: MediaId(r.get(0)?),
        uploader: UserId(r.get(1)?),
        size: r.get::<_, i64>(2)? as u64,
        content_type: r.get(3)?,
        sha256: digest.try_into().unwrap_or([0; 32]),
        state: MediaState::from_i16(r.get(5)?),
        created_at: r.get(6)?,
    })
}

pub(crate) fn create(
    ctx: &mut WriteCtx<'_>,
    uploader: UserId,
    size: u64,
    content_type: &str,
    sha256: [u8; 32],
) -> Result<Media> {
    let media = Media {
        id: MediaId(ctx.ids.next()),
        uploader,
        size,
        content_type: content_type.to_owned(),
        sha256,
        state: MediaState::Pending,
        created_at: parley_core::now_ms(),
    };
    ctx.conn.prepare_cached(&format!("INSERT INTO media ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))?.execute(
        params![
            media.id.0,
            media.uploader.0,
            media.size as i64,
            media.content_type,
            &media.sha256[..],
            media.state.as_i16(),
            media.created_at
        ],
    )?;
    Ok(media)
}

pub(crate) fn get(c: &Connection, id: MediaId) -> Result<Option<Media>> {
    Ok(c.prepare_cached(&format!("SELECT {COLS} FROM media WHERE media_id = ?1"))?.query_row([id.0], row).optional()?)
}

pub(crate) fn ready(ctx: &mut WriteCtx<'_>, id: MediaId) -> Result<bool> {
    Ok(ctx.conn.prepare_cached("UPDATE media SET state = 1 WHERE media_id = ?1 AND state = 0")?.execute([id.0])? == 1)
}

pub(crate) fn doom_upload(ctx: &mut WriteCtx<'_>, uploader: UserId, id: MediaId) -> Result<bool> {
    let found: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT refs FROM media WHERE media_id = ?1 AND uploader_id = ?2 AND state < 2")?
        .query_row(params![id.0, uploader.0], |r| r.get(0))
        .optional()?;
    match found {
        None => Ok(false),
        Some(refs) if refs > 0 => Err(StoreError::Conflict("a message references this media".into()).into()),
        Some(_) => {
            ctx.conn.prepare_cached("UPDATE media SET state = 2 WHERE media_id = ?1")?.execute([id.0])?;
            Ok(true)
        }
    }
}

pub(crate) fn visible(c: &Connection, user: UserId, id: MediaId) -> Result<bool> {
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM media WHERE media_id = ?1 AND uploader_id = ?2 AND state < 2)
             OR EXISTS (SELECT 1 FROM media_refs r JOIN members m
                            ON m.conversation_id = r.conversation_id AND m.user_id = ?2
                        WHERE r.media_id = ?1 AND r.seq >= m.joined_seq
                          AND (m.left_seq IS NULL OR r.seq <= m.left_seq))",
    )?
    .query_row(params![id.0, user.0], |r| r.get(0))?)
}

pub(crate) fn usage(c: &Connection, user: UserId, since: i64) -> Result<MediaUsage> {
    Ok(c.prepare_cached(
        "SELECT count(*), coalesce(sum(size), 0), min(created_at) FROM media
         WHERE uploader_id = ?1 AND created_at >= ?2",
    )?
    .query_row(params![user.0, since], |r| {
        Ok(MediaUsage { uploads: r.get::<_, i64>(0)? as u64, bytes: r.get::<_, i64>(1)? as u64, oldest: r.get(2)? })
    })?)
}

pub(crate) fn doom(ctx: &mut WriteCtx<'_>, orphan_before: i64, limit: u32) -> Result<Vec<MediaId>> {
    ctx.conn
        .prepare_cached(
            "UPDATE media SET state = 2 WHERE media_id IN (
                 SELECT media_id FROM media WHERE refs = 0 AND state < 2 AND (used = 1 OR created_at < ?1) LIMIT ?2)",
        )?
        .execute(params![orphan_before, limit])?;
    let ids = ctx
        .conn
        .prepare_cached("SELECT media_id FROM media WHERE state = 2 LIMIT ?1")?
        .query_map([limit], |r| Ok(MediaId(r.get(0)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

pub(crate) fn forget(ctx: &mut WriteCtx<'_>, ids: &[MediaId]) -> Result<()> {
    let mut stmt = ctx.conn.prepare_cached("UPDATE media SET state = 3 WHERE media_id = ?1 AND state = 2")?;
    for id in ids {
        stmt.execute([id.0])?;
    }
    Ok(())
}

pub(crate) fn tombstones(c: &Connection, before: i64, limit: u32) -> Result<Vec<MediaId>> {
    Ok(c.prepare_cached("SELECT media_id FROM media WHERE state = 3 AND created_at < ?1 LIMIT ?2")?
        .query_map(params![before, limit], |r| Ok(MediaId(r.get(0)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn purge(ctx: &mut WriteCtx<'_>, ids: &[MediaId]) -> Result<()> {
    let mut stmt = ctx.conn.prepare_cached("DELETE FROM media WHERE media_id = ?1 AND state = 3")?;
    for id in ids {
        stmt.execute([id.0])?;
    }
    Ok(())
}

/// A send's check of the uploads it names: each ready, the sender's and (for `media`) as the
/// body describes it. Takes a reference on each; [`record_refs`] writes them once the seq is known.
pub(crate) fn take_refs(ctx: &mut WriteCtx<'_>, sender: UserId, media: &[MediaRef]) -> Result<()> {
    for m in media {
        let found: Option<(i64, String)> = ctx
            .conn
            .prepare_cached(
                "UPDATE media SET refs = refs + 1, used = 1
                 WHERE media_id = ?1 AND uploader_id = ?2 AND state = 1 RETURNING size, content_type",
            )?
            .query_row(params![m.id.0, sender.0], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        parley_store::media::check_ref(m, found.map(|(size, ct)| (size as u64, ct)))?;
    }
    Ok(())
}

pub(crate) fn record_refs(ctx: &mut WriteCtx<'_>, message: &Message, media: &[MediaRef]) -> Result<()> {
    let mut stmt =
        ctx.conn.prepare_cached("INSERT INTO media_refs (media_id, conversation_id, seq) VALUES (?1, ?2, ?3)")?;
    for m in media {
        stmt.execute(params![m.id.0, message.conversation_id.0, message.seq.0])?;
    }
    Ok(())
}

/// A deleted message no longer holds its uploads: the collector removes those nothing else
/// references.
pub(crate) fn drop_refs(ctx: &mut WriteCtx<'_>, conv: ConversationId, seq: Seq) -> Result<()> {
    let ids: Vec<i64> = ctx
        .conn
        .prepare_cached("DELETE FROM media_refs WHERE conversation_id = ?1 AND seq = ?2 RETURNING media_id")?
        .query_map(params![conv.0, seq.0], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = ctx.conn.prepare_cached("UPDATE media SET refs = refs - 1 WHERE media_id = ?1 AND refs > 0")?;
    for id in ids {
        stmt.execute([id])?;
    }
    Ok(())
}
