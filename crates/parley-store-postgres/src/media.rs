//! Media records and the references messages hold to them (see `Store`'s media methods).
//!
//! `refs` counts the messages that reference an upload. A send raises it (`UPDATE … WHERE
//! state = 1`, which keeps the row locked until the send commits) and the collector dooms
//! only rows whose `refs` is zero, skipping locked ones and rechecking `refs = 0` on the row
//! it updates. So a send racing the collector either references a ready upload, which the
//! collector then leaves alone, or finds it doomed and is refused; never a message whose
//! media is gone.

use deadpool_postgres::ClientWrapper;
use parley_core::ids::*;
use parley_core::media::{Media, MediaState};
use parley_core::model::Message;
use parley_core::validate::MediaRef;
use parley_store::StoreError;
use parley_store::media::MediaUsage;
use tokio_postgres::Row;

use crate::{PgResult as Result, execute, query, query_one, query_opt};

const COLS: &str = "media_id, uploader_id, size, content_type, sha256, state, created_at";

fn row(r: &Row) -> Result<Media> {
    let digest: Vec<u8> = r.try_get(4)?;
    Ok(Media {
        id: MediaId(r.try_get(0)?),
        uploader: UserId(r.try_get(1)?),
        size: r.try_get::<_, i64>(2)? as u64,
        content_type: r.try_get(3)?,
        sha256: digest.try_into().unwrap_or([0; 32]),
        state: MediaState::from_i16(r.try_get(5)?),
        created_at: r.try_get(6)?,
    })
}

pub(crate) async fn create(
    db: &ClientWrapper,
    id: MediaId,
    uploader: UserId,
    size: u64,
    content_type: &str,
    sha256: [u8; 32],
) -> Result<Media> {
    let media = Media {
        id,
        uploader,
        size,
        content_type: content_type.to_owned(),
        sha256,
        state: MediaState::Pending,
        created_at: parley_core::now_ms(),
    };
    execute(
        db,
        &format!("INSERT INTO media ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &media.id.0,
            &media.uploader.0,
            &(media.size as i64),
            &media.content_type,
            &&media.sha256[..],
            &media.state.as_i16(),
            &media.created_at,
        ],
    )
    .await?;
    Ok(media)
}

pub(crate) async fn get(db: &ClientWrapper, id: MediaId) -> Result<Option<Media>> {
    query_opt(db, &format!("SELECT {COLS} FROM media WHERE media_id = $1"), &[&id.0])
        .await?
        .map(|r| row(&r))
        .transpose()
}

pub(crate) async fn ready(db: &ClientWrapper, id: MediaId) -> Result<bool> {
    Ok(execute(db, "UPDATE media SET state = 1 WHERE media_id = $1 AND state = 0", &[&id.0]).await? == 1)
}

pub(crate) async fn doom_upload(db: &ClientWrapper, uploader: UserId, id: MediaId) -> Result<bool> {
    // One statement: the row's lock orders it against a send taking a reference.
    let r = query_opt(
        db,
        "WITH target AS (SELECT media_id, refs FROM media
                         WHERE media_id = $1 AND uploader_id = $2 AND state < 2 FOR UPDATE),
              doomed AS (UPDATE media m SET state = 2 FROM target t
                         WHERE m.media_id = t.media_id AND t.refs = 0 RETURNING m.media_id)
         SELECT t.refs, (SELECT count(*) FROM doomed) FROM target t",
        &[&id.0, &uploader.0],
    )
    .await?;
    match r {
        None => Ok(false),
        Some(r) if r.try_get::<_, i64>(1)? == 1 => Ok(true),
        Some(_) => Err(StoreError::Conflict("a message references this media".into()).into()),
    }
}

pub(crate) async fn visible(db: &ClientWrapper, user: UserId, id: MediaId) -> Result<bool> {
    Ok(query_one(
        db,
        "SELECT EXISTS (SELECT 1 FROM media WHERE media_id = $1 AND uploader_id = $2 AND state < 2)
             OR EXISTS (SELECT 1 FROM media_refs r JOIN members m
                            ON m.conversation_id = r.conversation_id AND m.user_id = $2
                        WHERE r.media_id = $1 AND r.seq >= m.joined_seq
                          AND (m.left_seq IS NULL OR r.seq <= m.left_seq))",
        &[&id.0, &user.0],
    )
    .await?
    .try_get(0)?)
}

pub(crate) async fn usage(db: &ClientWrapper, user: UserId, since: i64) -> Result<MediaUsage> {
    let r = query_one(
        db,
        "SELECT count(*), coalesce(sum(size), 0)::int8, min(created_at) FROM media
         WHERE uploader_id = $1 AND created_at >= $2",
        &[&user.0, &since],
    )
    .await?;
    Ok(MediaUsage {
        uploads: r.try_get::<_, i64>(0)? as u64,
        bytes: r.try_get::<_, i64>(1)? as u64,
        oldest: r.try_get(2)?,
    })
}

pub(crate) async fn doom(db: &ClientWrapper, orphan_before: i64, limit: u32) -> Result<Vec<MediaId>> {
    let limit = i64::from(limit);
    execute(
        db,
        "UPDATE media SET state = 2 WHERE refs = 0 AND state < 2 AND media_id IN (
             SELECT media_id FROM media WHERE refs = 0 AND state < 2 AND (used OR created_at < $1)
             LIMIT $2 FOR UPDATE SKIP LOCKED)",
        &[&orphan_before, &limit],
    )
    .await?;
    let rows = query(db, "SELECT media_id FROM media WHERE state = 2 LIMIT $1", &[&limit]).await?;
    rows.iter().map(|r| Ok(MediaId(r.try_get(0)?))).collect()
}

pub(crate) async fn forget(db: &ClientWrapper, ids: &[MediaId]) -> Result<()> {
    execute(db, "UPDATE media SET state = 3 WHERE media_id = ANY($1) AND state = 2", &[&crate::raw(ids)]).await?;
    Ok(())
}

pub(crate) async fn tombstones(db: &ClientWrapper, before: i64, limit: u32) -> Result<Vec<MediaId>> {
    let rows = query(
        db,
        "SELECT media_id FROM media WHERE state = 3 AND created_at < $1 LIMIT $2",
        &[&before, &i64::from(limit)],
    )
    .await?;
    rows.iter().map(|r| Ok(MediaId(r.try_get(0)?))).collect()
}

pub(crate) async fn purge(db: &ClientWrapper, ids: &[MediaId]) -> Result<()> {
    execute(db, "DELETE FROM media WHERE media_id = ANY($1) AND state = 3", &[&crate::raw(ids)]).await?;
    Ok(())
}

/// A send's check of the uploads it names (see [`parley_store::media::check_ref`]); takes a
/// reference on each, holding its row lock until the send commits.
pub(crate) async fn take_refs(db: &ClientWrapper, sender: UserId, media: &[MediaRef]) -> Result<()> {
    for m in media {
        let found = query_opt(
            db,
            "UPDATE media SET refs = refs + 1, used = TRUE
             WHERE media_id = $1 AND uploader_id = $2 AND state = 1 RETURNING size, content_type",
            &[&m.id.0, &sender.0],
        )
        .await?;
        let found = match found {
            Some(r) => Some((r.try_get::<_, i64>(0)? as u64, r.try_get::<_, String>(1)?)),
            None => None,
        };
        parley_store::media::check_ref(m, found)?;
    }
    Ok(())
}

pub(crate) async fn record_refs(db: &ClientWrapper, message: &Message, media: &[MediaRef]) -> Result<()> {
    for m in media {
        execute(
            db,
            "INSERT INTO media_refs (media_id, conversation_id, seq) VALUES ($1, $2, $3)",
            &[&m.id.0, &message.conversation_id.0, &message.seq.0],
        )
        .await?;
    }
    Ok(())
}

/// A deleted message no longer holds its uploads: the collector removes those nothing else
/// references.
pub(crate) async fn drop_refs(db: &ClientWrapper, conv: ConversationId, seq: Seq) -> Result<()> {
    execute(
        db,
        "WITH gone AS (DELETE FROM media_refs WHERE conversation_id = $1 AND seq = $2 RETURNING media_id)
         UPDATE media m SET refs = m.refs - d.n
         FROM (SELECT media_id, count(*)::int4 AS n FROM gone GROUP BY media_id) d
         WHERE m.media_id = d.media_id",
        &[&conv.0, &seq.0],
    )
    .await?;
    Ok(())
}
