//! Push registrations, notification settings and the push queue (see `parley_store::push`).

use parley_core::ids::*;
use parley_core::model::Message;
use parley_core::push::{
    self, MemberSettings, Notify, PushAddress, PushFailure, PushKind, PushRegistration, Recipient,
};
use parley_store::{PushDecisions, PushDone, PushJob, PushOutcome, StoreError, StoreEvent};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::SqlResult as Result;
use crate::writer::WriteCtx;

const REG_COLS: &str = "device_id, user_id, kind, address, p256dh, auth, sandbox, registered_at, last_success_at,
     last_error_at, last_error_status, last_error_reason, invalidated_at";

fn registration(r: &Row<'_>, at: usize) -> rusqlite::Result<PushRegistration> {
    let kind: String = r.get(at + 2)?;
    let kind = PushKind::parse(&kind).unwrap_or(PushKind::WebPush);
    let address: String = r.get(at + 3)?;
    let address = if kind.is_web() {
        PushAddress::Web {
            endpoint: address,
            p256dh: r.get::<_, Option<String>>(at + 4)?.unwrap_or_default(),
            auth: r.get::<_, Option<String>>(at + 5)?.unwrap_or_default(),
        }
    } else {
        PushAddress::Token { token: address, sandbox: r.get(at + 6)? }
    };
    let last_error = match r.get::<_, Option<i64>>(at + 9)? {
        Some(at_ms) => Some(PushFailure {
            at: at_ms,
            status: r.get::<_, Option<i64>>(at + 10)?.unwrap_or(0) as u16,
            reason: r.get::<_, Option<String>>(at + 11)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(PushRegistration {
        device_id: DeviceId(r.get(at)?),
        user_id: UserId(r.get(at + 1)?),
        kind,
        address,
        registered_at: r.get(at + 7)?,
        last_success_at: r.get(at + 8)?,
        last_error,
        invalidated_at: r.get(at + 12)?,
    })
}

pub(crate) fn set_push(
    ctx: &mut WriteCtx<'_>,
    device: DeviceId,
    user: UserId,
    kind: PushKind,
    address: PushAddress,
) -> Result<PushRegistration> {
    let now = parley_core::now_ms();
    let (addr, p256dh, auth, sandbox) = match &address {
        PushAddress::Web { endpoint, p256dh, auth } => {
            (endpoint.clone(), Some(p256dh.clone()), Some(auth.clone()), false)
        }
        PushAddress::Token { token, sandbox } => (token.clone(), None, None, *sandbox),
    };
    // The device must still exist (it may have been revoked a moment ago).
    let exists: bool = ctx
        .conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?1 AND user_id = ?2)")?
        .query_row(params![device.0, user.0], |r| r.get(0))?;
    if !exists {
        return Err(StoreError::NotFound.into());
    }
    ctx.conn
        .prepare_cached(
            "INSERT OR REPLACE INTO push_registrations (device_id, user_id, kind, address, p256dh, auth, sandbox, registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![device.0, user.0, kind.as_str(), addr, p256dh, auth, sandbox, now])?;
    // Set for good (until a restart reads the table again): a rolled-back job only costs queries.
    ctx.push_live.set(true);
    Ok(PushRegistration {
        device_id: device,
        user_id: user,
        kind,
        address,
        registered_at: now,
        last_success_at: None,
        last_error: None,
        invalidated_at: None,
    })
}

pub(crate) fn delete_push(ctx: &mut WriteCtx<'_>, device: DeviceId) -> Result<bool> {
    let n = ctx.conn.prepare_cached("DELETE FROM push_registrations WHERE device_id = ?1")?.execute([device.0])?;
    ctx.conn.prepare_cached("DELETE FROM push_jobs WHERE device_id = ?1")?.execute([device.0])?;
    Ok(n > 0)
}

pub(crate) fn registration_of(c: &Connection, device: DeviceId) -> Result<Option<PushRegistration>> {
    Ok(c.prepare_cached(&format!("SELECT {REG_COLS} FROM push_registrations WHERE device_id = ?1"))?
        .query_row([device.0], |r| registration(r, 0))
        .optional()?)
}

pub(crate) fn take_invalidated(ctx: &mut WriteCtx<'_>, device: DeviceId) -> Result<Option<PushKind>> {
    let kind: Option<String> = ctx
        .conn
        .prepare_cached(
            "UPDATE push_registrations SET invalidation_told = 1
             WHERE device_id = ?1 AND invalidated_at IS NOT NULL AND invalidation_told = 0 RETURNING kind",
        )?
        .query_row([device.0], |r| r.get(0))
        .optional()?;
    Ok(kind.as_deref().and_then(PushKind::parse))
}

pub(crate) fn set_settings(
    ctx: &mut WriteCtx<'_>,
    user: UserId,
    conv: ConversationId,
    patch: push::SettingsPatch,
) -> Result<Option<MemberSettings>> {
    let Some(current) = settings(ctx.conn, user, conv)? else { return Ok(None) };
    let next = current.apply(patch);
    ctx.conn
        .prepare_cached("UPDATE members SET muted_until = ?3, notify = ?4 WHERE conversation_id = ?1 AND user_id = ?2")?
        .execute(params![conv.0, user.0, next.muted_until, next.notify.as_str()])?;
    Ok(Some(next))
}

/// A current member's settings.
fn settings(c: &Connection, user: UserId, conv: ConversationId) -> Result<Option<MemberSettings>> {
    Ok(c.prepare_cached(
        "SELECT muted_until, notify FROM members WHERE conversation_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
    )?
    .query_row(params![conv.0, user.0], |r| {
        let notify: String = r.get(1)?;
        Ok(MemberSettings { muted_until: r.get(0)?, notify: Notify::parse(&notify).unwrap_or_default() })
    })
    .optional()?)
}

pub(crate) fn set_dnd(ctx: &mut WriteCtx<'_>, user: UserId, until: Option<i64>) -> Result<()> {
    ctx.conn.prepare_cached("UPDATE users SET dnd_until = ?2 WHERE id = ?1")?.execute(params![user.0, until])?;
    Ok(())
}

pub(crate) fn dnd_until(c: &Connection, user: UserId) -> Result<Option<i64>> {
    Ok(c.prepare_cached("SELECT dnd_until FROM users WHERE id = ?1")?
        .query_row([user.0], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten())
}

/// Queues the pushes a just-inserted message causes, in its own commit: one row per device of
/// every other member with a live registration whose settings let it through, merged into the
/// device's pending push for the conversation if there is one.
pub(crate) fn queue(ctx: &mut WriteCtx<'_>, m: &Message) -> Result<()> {
    if !ctx.push_live.get() || !push::pushes(m.kind) || m.system.is_some() {
        return Ok(());
    }
    let mut targets = ctx.conn.prepare_cached(
        "SELECT r.device_id, m.user_id, m.muted_until, m.notify, u.dnd_until
         FROM members m JOIN push_registrations r ON r.user_id = m.user_id JOIN users u ON u.id = m.user_id
         WHERE m.conversation_id = ?1 AND m.left_seq IS NULL AND m.user_id != ?2 AND r.invalidated_at IS NULL",
    )?;
    let rows = targets.query_map(params![m.conversation_id.0, m.sender_id.0], |r| {
        let notify: String = r.get(3)?;
        Ok((
            DeviceId(r.get(0)?),
            Recipient {
                user: UserId(r.get(1)?),
                settings: MemberSettings { muted_until: r.get(2)?, notify: Notify::parse(&notify).unwrap_or_default() },
                dnd_until: r.get(4)?,
            },
        ))
    })?;
    let mut upsert = ctx.conn.prepare_cached(
        "INSERT INTO push_jobs (device_id, conversation_id, seq, queued_at, due_at)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (device_id, conversation_id) DO UPDATE SET
             merged = CASE WHEN seq IS NULL THEN 0 ELSE merged + 1 END,
             queued_at = CASE WHEN seq IS NULL THEN excluded.queued_at ELSE queued_at END,
             due_at = CASE WHEN seq IS NULL THEN max(excluded.due_at, window_end) ELSE due_at END,
             attempts = CASE WHEN seq IS NULL THEN 0 ELSE attempts END,
             seq = max(coalesce(seq, 0), excluded.seq)",
    )?;
    // Read only when someone is to be pushed: most messages push nobody.
    let mut mentioned: Option<Vec<UserId>> = None;
    let mut decisions = PushDecisions::default();
    for row in rows {
        let (device, r) = row?;
        let names = mentioned.get_or_insert_with(|| push::mentions(m.kind, &m.body)).contains(&r.user);
        let decision = push::decide(&r, names, m.ts);
        if decision.is_ok() {
            upsert.execute(params![device.0, m.conversation_id.0, m.seq.0, m.ts])?;
        }
        decisions.count(decision);
    }
    if decisions != PushDecisions::default() {
        ctx.events.push(StoreEvent::Pushes(decisions));
    }
    Ok(())
}

pub(crate) fn claim(ctx: &mut WriteCtx<'_>, node: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<PushJob>> {
    // Idle rows whose merge window has ended carry nothing any more.
    ctx.conn
        .prepare_cached(
            "DELETE FROM push_jobs WHERE (device_id, conversation_id) IN (SELECT device_id, conversation_id
             FROM push_jobs WHERE seq IS NULL AND window_end < ?1 LIMIT 512)",
        )?
        .execute([now])?;
    let keys: Vec<(i64, i64)> = ctx
        .conn
        .prepare_cached(
            "UPDATE push_jobs SET lease_until = ?2, lease_owner = ?3
             WHERE (device_id, conversation_id) IN (SELECT device_id, conversation_id FROM push_jobs
                 WHERE seq IS NOT NULL AND due_at <= ?1 AND lease_until <= ?1 ORDER BY due_at LIMIT ?4)
             RETURNING device_id, conversation_id",
        )?
        .query_map(params![now, now + lease_ms, node, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut details = ctx.conn.prepare_cached(&format!(
        "SELECT j.seq, j.queued_at, j.merged, j.attempts,
                coalesce((SELECT c.seq FROM device_cursors c WHERE c.device_id = j.device_id
                          AND c.conversation_id = j.conversation_id), 0),
                coalesce(m.read_seq, 0),
                (SELECT count(*) FROM (SELECT 1 FROM messages x WHERE x.conversation_id = j.conversation_id
                     AND x.seq > max(coalesce(m.read_seq, 0), coalesce(m.joined_seq, 1) - 1)
                     AND x.sender_id != r.user_id AND x.kind IN {content} LIMIT {cap})),
                {REG}
         FROM push_jobs j JOIN push_registrations r ON r.device_id = j.device_id
         LEFT JOIN members m ON m.conversation_id = j.conversation_id AND m.user_id = r.user_id
         WHERE j.device_id = ?1 AND j.conversation_id = ?2",
        content = crate::conversations::content_kinds_sql(),
        cap = parley_store::push::UNREAD_CAP,
        REG = REG_COLS.split(',').map(|c| format!("r.{}", c.trim())).collect::<Vec<_>>().join(", "),
    ))?;
    let mut out = Vec::with_capacity(keys.len());
    for (device, conv) in keys {
        let job = details
            .query_row(params![device, conv], |r| {
                Ok(PushJob {
                    conversation_id: ConversationId(conv),
                    seq: Seq(r.get(0)?),
                    queued_at: r.get(1)?,
                    merged: r.get::<_, i64>(2)? as u32,
                    attempts: r.get::<_, i64>(3)? as u32,
                    acknowledged: Seq(r.get(4)?),
                    read: Seq(r.get(5)?),
                    unread_count: r.get(6)?,
                    registration: registration(r, 7)?,
                })
            })
            .optional()?;
        match job {
            Some(job) => out.push(job),
            // The registration went away: so does its row.
            None => {
                ctx.conn
                    .prepare_cached("DELETE FROM push_jobs WHERE device_id = ?1 AND conversation_id = ?2")?
                    .execute(params![device, conv])?;
            }
        }
    }
    Ok(out)
}

pub(crate) fn next_due(c: &Connection) -> Result<Option<i64>> {
    Ok(c.prepare_cached("SELECT min(max(due_at, lease_until)) FROM push_jobs WHERE seq IS NOT NULL")?
        .query_row([], |r| r.get(0))?)
}

pub(crate) fn finish(ctx: &mut WriteCtx<'_>, done: Vec<PushDone>) -> Result<()> {
    for d in done {
        let (dev, conv, seq) = (d.device_id.0, d.conversation_id.0, d.seq.0);
        match &d.outcome {
            PushOutcome::Sent { at, window_end } => {
                settle(ctx.conn, dev, conv, seq, Some(*window_end))?;
                ctx.conn
                    .prepare_cached(
                        "UPDATE push_registrations SET last_success_at = ?2 WHERE device_id = ?1 AND registered_at = ?3",
                    )?
                    .execute(params![dev, at, d.registered_at])?;
            }
            PushOutcome::Suppressed => settle(ctx.conn, dev, conv, seq, None)?,
            PushOutcome::Deferred { due_at } => {
                ctx.conn
                    .prepare_cached(
                        "UPDATE push_jobs SET due_at = ?3, lease_until = 0, lease_owner = NULL
                         WHERE device_id = ?1 AND conversation_id = ?2",
                    )?
                    .execute(params![dev, conv, due_at])?;
            }
            PushOutcome::Retry { due_at, failure } => {
                ctx.conn
                    .prepare_cached(
                        "UPDATE push_jobs SET due_at = ?3, attempts = attempts + 1, lease_until = 0, lease_owner = NULL
                         WHERE device_id = ?1 AND conversation_id = ?2",
                    )?
                    .execute(params![dev, conv, due_at])?;
                record_failure(ctx.conn, dev, d.registered_at, failure)?;
            }
            PushOutcome::Failed { failure } => {
                settle(ctx.conn, dev, conv, seq, None)?;
                record_failure(ctx.conn, dev, d.registered_at, failure)?;
            }
            PushOutcome::Invalidated { failure } => {
                record_failure(ctx.conn, dev, d.registered_at, failure)?;
                let n = ctx
                    .conn
                    .prepare_cached(
                        "UPDATE push_registrations SET invalidated_at = ?2, invalidation_told = 0
                         WHERE device_id = ?1 AND registered_at = ?3 AND invalidated_at IS NULL",
                    )?
                    .execute(params![dev, failure.at, d.registered_at])?;
                if n > 0 {
                    ctx.conn.prepare_cached("DELETE FROM push_jobs WHERE device_id = ?1")?.execute([dev])?;
                } else {
                    settle(ctx.conn, dev, conv, seq, None)?;
                }
            }
        }
    }
    Ok(())
}

/// Ends a claimed push: the row goes idle (keeping the merge window a sent push opened), unless
/// a later message raised its seq meanwhile, in which case that one is due when the window ends.
fn settle(c: &Connection, dev: i64, conv: i64, seq: i64, window_end: Option<i64>) -> Result<()> {
    c.prepare_cached(
        "UPDATE push_jobs SET
             window_end = coalesce(?4, window_end),
             due_at = CASE WHEN seq > ?3 THEN max(due_at, coalesce(?4, window_end)) ELSE due_at END,
             merged = CASE WHEN seq > ?3 THEN 0 ELSE merged END,
             seq = CASE WHEN seq > ?3 THEN seq ELSE NULL END,
             attempts = 0, lease_until = 0, lease_owner = NULL
         WHERE device_id = ?1 AND conversation_id = ?2",
    )?
    .execute(params![dev, conv, seq, window_end])?;
    Ok(())
}

fn record_failure(c: &Connection, dev: i64, registered_at: i64, f: &PushFailure) -> Result<()> {
    c.prepare_cached(
        "UPDATE push_registrations SET last_error_at = ?2, last_error_status = ?3, last_error_reason = ?4
         WHERE device_id = ?1 AND registered_at = ?5",
    )?
    .execute(params![dev, f.at, f.status, f.reason, registered_at])?;
    Ok(())
}

/// One process owns an SQLite database, so every lease is this node's, whatever name an earlier
/// run (killed before it could finish) claimed under: all are released.
pub(crate) fn release(ctx: &mut WriteCtx<'_>, _node: &str) -> Result<()> {
    ctx.conn
        .prepare_cached("UPDATE push_jobs SET lease_until = 0, lease_owner = NULL WHERE lease_owner IS NOT NULL")?
        .execute([])?;
    Ok(())
}

pub(crate) fn secret(ctx: &mut WriteCtx<'_>, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>> {
    ctx.conn
        .prepare_cached("INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)")?
        .execute(params![name, fresh])?;
    Ok(ctx.conn.prepare_cached("SELECT value FROM secrets WHERE name = ?1")?.query_row([name], |r| r.get(0))?)
}
