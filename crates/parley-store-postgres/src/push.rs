//! Push registrations, notification settings and the push queue (see `parley_store::push`).
//!
//! Pushes are queued by the writer inside the commit of the messages that cause them; claiming,
//! finishing and registrations run on pooled connections, one statement at a time, so they never
//! hold row locks across statements (no lock cycle with a writer appending to the same rows).
//! Claims use `FOR UPDATE SKIP LOCKED`: nodes claiming at once never take the same row.

use std::collections::HashMap;

use deadpool_postgres::ClientWrapper;
use parley_core::ids::*;
use parley_core::model::Message;
use parley_core::push::{
    self, MemberSettings, Notify, PushAddress, PushFailure, PushKind, PushRegistration, Recipient,
};
use parley_store::{PushDecisions, PushDone, PushJob, PushOutcome, StoreError};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::{PgResult as Result, execute, query, query_one, query_opt};

const REG_COLS: &str = "r.device_id, r.user_id, r.kind, r.address, r.p256dh, r.auth, r.sandbox, r.registered_at, \
     r.last_success_at, r.last_error_at, r.last_error_status, r.last_error_reason, r.invalidated_at";

fn registration(r: &Row, at: usize) -> Result<PushRegistration> {
    let kind = PushKind::parse(r.try_get(at + 2)?).unwrap_or(PushKind::WebPush);
    let address: String = r.try_get(at + 3)?;
    let address = if kind.is_web() {
        PushAddress::Web {
            endpoint: address,
            p256dh: r.try_get::<_, Option<String>>(at + 4)?.unwrap_or_default(),
            auth: r.try_get::<_, Option<String>>(at + 5)?.unwrap_or_default(),
        }
    } else {
        PushAddress::Token { token: address, sandbox: r.try_get(at + 6)? }
    };
    let last_error = match r.try_get::<_, Option<i64>>(at + 9)? {
        Some(at_ms) => Some(PushFailure {
            at: at_ms,
            status: r.try_get::<_, Option<i32>>(at + 10)?.unwrap_or(0) as u16,
            reason: r.try_get::<_, Option<String>>(at + 11)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(PushRegistration {
        device_id: DeviceId(r.try_get(at)?),
        user_id: UserId(r.try_get(at + 1)?),
        kind,
        address,
        registered_at: r.try_get(at + 7)?,
        last_success_at: r.try_get(at + 8)?,
        last_error,
        invalidated_at: r.try_get(at + 12)?,
    })
}

pub(crate) async fn set_push(
    db: &ClientWrapper,
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
    // Only for a device that still exists (it may have been revoked a moment ago).
    let n = execute(
        db,
        "INSERT INTO push_registrations (device_id, user_id, kind, address, p256dh, auth, sandbox, registered_at)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM devices WHERE id = $1 AND user_id = $2)
         ON CONFLICT (device_id) DO UPDATE SET user_id = excluded.user_id, kind = excluded.kind,
             address = excluded.address, p256dh = excluded.p256dh, auth = excluded.auth,
             sandbox = excluded.sandbox, registered_at = excluded.registered_at, last_success_at = NULL,
             last_error_at = NULL, last_error_status = NULL, last_error_reason = NULL,
             invalidated_at = NULL, invalidation_told = FALSE",
        &[&device.0, &user.0, &kind.as_str(), &addr, &p256dh, &auth, &sandbox, &now],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound.into());
    }
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

pub(crate) async fn delete_push(db: &ClientWrapper, device: DeviceId) -> Result<bool> {
    let n = execute(db, "DELETE FROM push_registrations WHERE device_id = $1", &[&device.0]).await?;
    execute(db, "DELETE FROM push_jobs WHERE device_id = $1", &[&device.0]).await?;
    Ok(n > 0)
}

pub(crate) async fn registration_of(db: &ClientWrapper, device: DeviceId) -> Result<Option<PushRegistration>> {
    let sql = format!("SELECT {REG_COLS} FROM push_registrations r WHERE r.device_id = $1");
    query_opt(db, &sql, &[&device.0]).await?.map(|r| registration(&r, 0)).transpose()
}

pub(crate) async fn take_invalidated(db: &ClientWrapper, device: DeviceId) -> Result<Option<PushKind>> {
    let row = query_opt(
        db,
        "UPDATE push_registrations SET invalidation_told = TRUE
         WHERE device_id = $1 AND invalidated_at IS NOT NULL AND NOT invalidation_told RETURNING kind",
        &[&device.0],
    )
    .await?;
    Ok(match row {
        Some(r) => PushKind::parse(r.try_get(0)?),
        None => None,
    })
}

pub(crate) async fn set_settings(
    db: &ClientWrapper,
    user: UserId,
    conv: ConversationId,
    patch: push::SettingsPatch,
) -> Result<Option<MemberSettings>> {
    // One statement, so two devices patching different fields at once both take effect.
    let (set_mute, mute) = match patch.muted_until {
        Some(v) => (true, v),
        None => (false, None),
    };
    let notify = patch.notify.map(|n| n.as_str());
    let row = query_opt(
        db,
        "UPDATE members SET muted_until = CASE WHEN $3 THEN $4 ELSE muted_until END,
                            notify = coalesce($5, notify)
         WHERE conversation_id = $1 AND user_id = $2 AND left_seq IS NULL RETURNING muted_until, notify",
        &[&conv.0, &user.0, &set_mute, &mute, &notify],
    )
    .await?;
    Ok(match row {
        Some(r) => Some(MemberSettings {
            muted_until: r.try_get(0)?,
            notify: Notify::parse(r.try_get(1)?).unwrap_or_default(),
        }),
        None => None,
    })
}

pub(crate) async fn set_dnd(db: &ClientWrapper, user: UserId, until: Option<i64>) -> Result<()> {
    execute(db, "UPDATE users SET dnd_until = $2 WHERE id = $1", &[&user.0, &until]).await?;
    Ok(())
}

pub(crate) async fn dnd_until(db: &ClientWrapper, user: UserId) -> Result<Option<i64>> {
    Ok(match query_opt(db, "SELECT dnd_until FROM users WHERE id = $1", &[&user.0]).await? {
        Some(r) => r.try_get(0)?,
        None => None,
    })
}

/// Queues the pushes `entries` cause (see the SQLite backend's `queue`): one statement finds the
/// recipients with live registrations, the rules decide, one statement merges the rows. Returns
/// what was decided (all zero when nobody had a registration).
pub(crate) async fn queue(db: &ClientWrapper, entries: &[Message]) -> Result<PushDecisions> {
    let pushing: Vec<&Message> = entries.iter().filter(|m| push::pushes(m.kind) && m.system.is_none()).collect();
    let mut decisions = PushDecisions::default();
    if pushing.is_empty() {
        return Ok(decisions);
    }
    let convs: Vec<i64> = pushing.iter().map(|m| m.conversation_id.0).collect();
    let senders: Vec<i64> = pushing.iter().map(|m| m.sender_id.0).collect();
    let idx: Vec<i32> = (0..pushing.len() as i32).collect();
    let rows = query(
        db,
        "SELECT e.i, r.device_id, m.user_id, m.muted_until, m.notify, u.dnd_until
         FROM unnest($1::int8[], $2::int8[], $3::int4[]) AS e(conv, sender, i)
         JOIN members m ON m.conversation_id = e.conv AND m.left_seq IS NULL AND m.user_id <> e.sender
         JOIN push_registrations r ON r.user_id = m.user_id AND r.invalidated_at IS NULL
         JOIN users u ON u.id = m.user_id",
        &[&convs, &senders, &idx],
    )
    .await?;
    // Read only for entries that may push someone.
    let mut mentions: HashMap<i32, Vec<UserId>> = HashMap::new();
    // One row per (device, conversation) in a statement: merged here first.
    let mut merged: HashMap<(i64, i64), (i64, i64, i32)> = HashMap::new();
    for r in &rows {
        let i: i32 = r.try_get(0)?;
        let m = pushing[i as usize];
        let recipient = Recipient {
            user: UserId(r.try_get(2)?),
            settings: MemberSettings {
                muted_until: r.try_get(3)?,
                notify: Notify::parse(r.try_get(4)?).unwrap_or_default(),
            },
            dnd_until: r.try_get(5)?,
        };
        let names = mentions.entry(i).or_insert_with(|| push::mentions(m.kind, &m.body)).contains(&recipient.user);
        let decision = push::decide(&recipient, names, m.ts);
        decisions.count(decision);
        if decision.is_err() {
            continue;
        }
        let key = (r.try_get::<_, i64>(1)?, m.conversation_id.0);
        merged.entry(key).and_modify(|e| *e = (e.0.max(m.seq.0), e.1.min(m.ts), e.2 + 1)).or_insert((m.seq.0, m.ts, 0));
    }
    if merged.is_empty() {
        return Ok(decisions);
    }
    let mut keys: Vec<_> = merged.into_iter().collect();
    // Rows in a fixed order, so two writers merging into the same rows cannot deadlock.
    keys.sort_unstable_by_key(|(k, _)| *k);
    let devices: Vec<i64> = keys.iter().map(|(k, _)| k.0).collect();
    let kconvs: Vec<i64> = keys.iter().map(|(k, _)| k.1).collect();
    let seqs: Vec<i64> = keys.iter().map(|(_, v)| v.0).collect();
    let ts: Vec<i64> = keys.iter().map(|(_, v)| v.1).collect();
    let extra: Vec<i32> = keys.iter().map(|(_, v)| v.2).collect();
    execute(
        db,
        "INSERT INTO push_jobs AS j (device_id, conversation_id, seq, queued_at, due_at, merged)
         SELECT d, c, s, t, t, x FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int4[]) AS k(d, c, s, t, x)
         ON CONFLICT (device_id, conversation_id) DO UPDATE SET
             merged = CASE WHEN j.seq IS NULL THEN excluded.merged ELSE j.merged + excluded.merged + 1 END,
             queued_at = CASE WHEN j.seq IS NULL THEN excluded.queued_at ELSE j.queued_at END,
             due_at = CASE WHEN j.seq IS NULL THEN greatest(excluded.due_at, j.window_end) ELSE j.due_at END,
             attempts = CASE WHEN j.seq IS NULL THEN 0 ELSE j.attempts END,
             seq = greatest(coalesce(j.seq, 0), excluded.seq)",
        &[&devices, &kconvs, &seqs, &ts, &extra],
    )
    .await?;
    Ok(decisions)
}

pub(crate) async fn claim(db: &ClientWrapper, node: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<PushJob>> {
    // Idle rows whose merge window has ended carry nothing any more.
    execute(
        db,
        "DELETE FROM push_jobs WHERE ctid IN (SELECT ctid FROM push_jobs WHERE seq IS NULL AND window_end < $1
         LIMIT 512 FOR UPDATE SKIP LOCKED)",
        &[&now],
    )
    .await?;
    let sql = format!(
        "WITH claimed AS (
             UPDATE push_jobs j SET lease_until = $2, lease_owner = $3
             FROM (SELECT device_id, conversation_id FROM push_jobs
                   WHERE seq IS NOT NULL AND due_at <= $1 AND lease_until <= $1
                   ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) k
             WHERE j.device_id = k.device_id AND j.conversation_id = k.conversation_id
             RETURNING j.*
         )
         SELECT j.conversation_id, j.seq, j.queued_at, j.merged, j.attempts,
                coalesce((SELECT c.seq FROM device_cursors c WHERE c.device_id = j.device_id
                          AND c.conversation_id = j.conversation_id), 0),
                coalesce(m.read_seq, 0),
                (SELECT count(*) FROM (SELECT 1 FROM messages x WHERE x.conversation_id = j.conversation_id
                     AND x.seq > greatest(coalesce(m.read_seq, 0), coalesce(m.joined_seq, 1) - 1)
                     AND x.sender_id <> r.user_id AND x.kind IN {content} LIMIT {cap}) q),
                {REG_COLS}, j.device_id
         FROM claimed j LEFT JOIN push_registrations r ON r.device_id = j.device_id
         LEFT JOIN members m ON m.conversation_id = j.conversation_id AND m.user_id = r.user_id
         ORDER BY j.due_at",
        content = crate::conversations::content_kinds_sql(),
        cap = parley_store::push::UNREAD_CAP,
    );
    let limit = i64::from(limit);
    let rows = query(db, &sql, &[&now, &(now + lease_ms), &node, &limit]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if r.try_get::<_, Option<i64>>(8)?.is_none() {
            // The registration went away: so does its row.
            let conv: i64 = r.try_get(0)?;
            let dev: i64 = r.try_get(21)?;
            execute(db, "DELETE FROM push_jobs WHERE device_id = $1 AND conversation_id = $2", &[&dev, &conv]).await?;
            continue;
        }
        out.push(PushJob {
            conversation_id: ConversationId(r.try_get(0)?),
            seq: Seq(r.try_get(1)?),
            queued_at: r.try_get(2)?,
            merged: r.try_get::<_, i32>(3)? as u32,
            attempts: r.try_get::<_, i32>(4)? as u32,
            acknowledged: Seq(r.try_get(5)?),
            read: Seq(r.try_get(6)?),
            unread_count: r.try_get(7)?,
            registration: registration(r, 8)?,
        });
    }
    Ok(out)
}

pub(crate) async fn next_due(db: &ClientWrapper) -> Result<Option<i64>> {
    Ok(query_one(db, "SELECT min(greatest(due_at, lease_until)) FROM push_jobs WHERE seq IS NOT NULL", &[])
        .await?
        .try_get(0)?)
}

pub(crate) async fn finish(db: &ClientWrapper, done: Vec<PushDone>) -> Result<()> {
    for d in done {
        let (dev, conv, seq) = (d.device_id.0, d.conversation_id.0, d.seq.0);
        match &d.outcome {
            PushOutcome::Sent { at, window_end } => {
                settle(db, dev, conv, seq, Some(*window_end)).await?;
                execute(
                    db,
                    "UPDATE push_registrations SET last_success_at = $2 WHERE device_id = $1 AND registered_at = $3",
                    &[&dev, at, &d.registered_at],
                )
                .await?;
            }
            PushOutcome::Suppressed => settle(db, dev, conv, seq, None).await?,
            PushOutcome::Deferred { due_at } => {
                execute(
                    db,
                    "UPDATE push_jobs SET due_at = $3, lease_until = 0, lease_owner = NULL
                     WHERE device_id = $1 AND conversation_id = $2",
                    &[&dev, &conv, due_at],
                )
                .await?;
            }
            PushOutcome::Retry { due_at, failure } => {
                execute(
                    db,
                    "UPDATE push_jobs SET due_at = $3, attempts = attempts + 1, lease_until = 0, lease_owner = NULL
                     WHERE device_id = $1 AND conversation_id = $2",
                    &[&dev, &conv, due_at],
                )
                .await?;
                record_failure(db, dev, d.registered_at, failure).await?;
            }
            PushOutcome::Failed { failure } => {
                settle(db, dev, conv, seq, None).await?;
                record_failure(db, dev, d.registered_at, failure).await?;
            }
            PushOutcome::Invalidated { failure } => {
                record_failure(db, dev, d.registered_at, failure).await?;
                let n = execute(
                    db,
                    "UPDATE push_registrations SET invalidated_at = $2, invalidation_told = FALSE
                     WHERE device_id = $1 AND registered_at = $3 AND invalidated_at IS NULL",
                    &[&dev, &failure.at, &d.registered_at],
                )
                .await?;
                if n > 0 {
                    execute(db, "DELETE FROM push_jobs WHERE device_id = $1", &[&dev]).await?;
                } else {
                    settle(db, dev, conv, seq, None).await?;
                }
            }
        }
    }
    Ok(())
}

/// Ends a claimed push (see the SQLite backend's `settle`).
async fn settle(db: &ClientWrapper, dev: i64, conv: i64, seq: i64, window_end: Option<i64>) -> Result<()> {
    execute(
        db,
        "UPDATE push_jobs SET
             window_end = coalesce($4, window_end),
             due_at = CASE WHEN seq > $3 THEN greatest(due_at, coalesce($4, window_end)) ELSE due_at END,
             merged = CASE WHEN seq > $3 THEN 0 ELSE merged END,
             seq = CASE WHEN seq > $3 THEN seq ELSE NULL END,
             attempts = 0, lease_until = 0, lease_owner = NULL
         WHERE device_id = $1 AND conversation_id = $2",
        &[&dev, &conv, &seq, &window_end],
    )
    .await?;
    Ok(())
}

async fn record_failure(db: &ClientWrapper, dev: i64, registered_at: i64, f: &PushFailure) -> Result<()> {
    let status = i32::from(f.status);
    let params: [&(dyn ToSql + Sync); 5] = [&dev, &f.at, &status, &f.reason, &registered_at];
    execute(
        db,
        "UPDATE push_registrations SET last_error_at = $2, last_error_status = $3, last_error_reason = $4
         WHERE device_id = $1 AND registered_at = $5",
        &params,
    )
    .await?;
    Ok(())
}

pub(crate) async fn release(db: &ClientWrapper, node: &str) -> Result<()> {
    execute(db, "UPDATE push_jobs SET lease_until = 0, lease_owner = NULL WHERE lease_owner = $1", &[&node]).await?;
    Ok(())
}

pub(crate) async fn secret(db: &ClientWrapper, name: &str, fresh: Vec<u8>) -> Result<Vec<u8>> {
    execute(db, "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", &[&name, &fresh])
        .await?;
    Ok(query_one(db, "SELECT value FROM secrets WHERE name = $1", &[&name]).await?.try_get(0)?)
}
