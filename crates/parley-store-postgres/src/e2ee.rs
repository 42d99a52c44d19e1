//! End-to-end encryption's server side, as the SQLite backend keeps it: device lists and their
//! versions, the key directory and the to-device queue. Concurrent claims on several nodes take
//! different one-time keys (`FOR UPDATE SKIP LOCKED`); to-device ids come from a counter on the
//! recipient device's row, bumped under its lock in device order, so they increase per device in
//! commit order whichever node queues.

use std::collections::HashMap;

use deadpool_postgres::ClientWrapper;
use parley_core::ids::*;
use parley_store::e2ee::*;
use parley_store::{StoreError, StoreEvent};

use crate::writer::Ctx;
use crate::{PgResult as Result, execute, query, query_one, query_opt};

/// `user`'s device list changed: a new version, a new device epoch in each of their current
/// conversations, and the event that tells the users who share a conversation with them.
pub(crate) async fn list_changed(ctx: &mut Ctx<'_>, user: UserId) -> Result<()> {
    let list_version: i64 = query_one(
        ctx.db,
        "UPDATE users SET device_list_version = device_list_version + 1 WHERE id = $1 RETURNING device_list_version",
        &[&user.0],
    )
    .await?
    .try_get(0)?;
    execute(
        ctx.db,
        "UPDATE conversations SET device_epoch = device_epoch + 1
         WHERE id IN (SELECT conversation_id FROM members WHERE user_id = $1 AND left_seq IS NULL)",
        &[&user.0],
    )
    .await?;
    ctx.events.push(StoreEvent::DeviceListChanged { user, list_version });
    Ok(())
}

pub(crate) async fn forget_device(db: &ClientWrapper, device: DeviceId) -> Result<()> {
    for sql in [
        "DELETE FROM one_time_keys WHERE device_id = $1",
        "DELETE FROM fallback_keys WHERE device_id = $1",
        "DELETE FROM to_device WHERE device_id = $1",
        "DELETE FROM to_device_sends WHERE sender_device_id = $1",
    ] {
        execute(db, sql, &[&device.0]).await?;
    }
    Ok(())
}

async fn shares(db: &ClientWrapper, a: UserId, b: UserId) -> Result<bool> {
    if a == b {
        return Ok(true);
    }
    Ok(query_one(
        db,
        "SELECT EXISTS (SELECT 1 FROM members x JOIN members y ON y.conversation_id = x.conversation_id
                        WHERE x.user_id = $1 AND y.user_id = $2 AND x.left_seq IS NULL AND y.left_seq IS NULL)",
        &[&a.0, &b.0],
    )
    .await?
    .try_get(0)?)
}

async fn one_time_count(db: &ClientWrapper, device: DeviceId) -> Result<u32> {
    let n: i64 =
        query_one(db, "SELECT count(*) FROM one_time_keys WHERE device_id = $1", &[&device.0]).await?.try_get(0)?;
    Ok(n as u32)
}

pub(crate) async fn put_keys(ctx: &mut Ctx<'_>, user: UserId, device: DeviceId, keys: &KeyUpload) -> Result<u32> {
    // The device's row lock orders concurrent uploads of one device.
    let Some(row) = query_opt(
        ctx.db,
        "SELECT identity FROM devices WHERE id = $1 AND user_id = $2 FOR UPDATE",
        &[&device.0, &user.0],
    )
    .await?
    else {
        return Err(StoreError::NotFound.into());
    };
    if let Some(identity) = &keys.identity {
        match row.try_get::<_, Option<String>>(0)? {
            Some(s) if &s == identity => {}
            Some(_) => {
                return Err(StoreError::Conflict("this device's identity is already set to another key".into()).into());
            }
            None => {
                execute(ctx.db, "UPDATE devices SET identity = $2 WHERE id = $1", &[&device.0, identity]).await?;
                list_changed(ctx, user).await?;
            }
        }
    }
    for (key_id, key) in &keys.one_time {
        let stored = query_opt(
            ctx.db,
            "SELECT key FROM one_time_keys WHERE device_id = $1 AND key_id = $2",
            &[&device.0, key_id],
        )
        .await?;
        match stored {
            Some(r) if &r.try_get::<_, String>(0)? == key => {}
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "one-time key {key_id:?} is already stored with another key"
                ))
                .into());
            }
            None => {
                execute(
                    ctx.db,
                    "INSERT INTO one_time_keys (device_id, key_id, key) VALUES ($1, $2, $3)",
                    &[&device.0, key_id, key],
                )
                .await?;
            }
        }
    }
    let count = one_time_count(ctx.db, device).await?;
    if count > MAX_ONE_TIME_KEYS {
        return Err(StoreError::Invalid(format!("a device stores at most {MAX_ONE_TIME_KEYS} one-time keys")).into());
    }
    if let Some((key_id, key)) = &keys.fallback {
        execute(
            ctx.db,
            "INSERT INTO fallback_keys (device_id, key_id, key, used) VALUES ($1, $2, $3, FALSE)
             ON CONFLICT (device_id) DO UPDATE SET key_id = excluded.key_id, key = excluded.key,
                 used = fallback_keys.used AND fallback_keys.key_id = excluded.key_id AND fallback_keys.key = excluded.key",
            &[&device.0, key_id, key],
        )
        .await?;
    }
    Ok(count)
}

pub(crate) async fn key_counts(db: &ClientWrapper, device: DeviceId) -> Result<(u32, bool)> {
    let fallback: bool =
        query_one(db, "SELECT EXISTS (SELECT 1 FROM fallback_keys WHERE device_id = $1 AND NOT used)", &[&device.0])
            .await?
            .try_get(0)?;
    Ok((one_time_count(db, device).await?, fallback))
}

pub(crate) async fn claim(
    ctx: &mut Ctx<'_>,
    claimer: UserId,
    devices: &[(UserId, DeviceId)],
) -> Result<Vec<ClaimedKey>> {
    let mut allowed: HashMap<UserId, bool> = HashMap::new();
    let mut out: Vec<ClaimedKey> = Vec::with_capacity(devices.len());
    for &(user, device) in devices {
        if out.iter().any(|c| c.device == device) {
            continue;
        }
        let ok = match allowed.get(&user) {
            Some(&ok) => ok,
            None => {
                let ok = shares(ctx.db, claimer, user).await?;
                allowed.insert(user, ok);
                ok
            }
        };
        if !ok {
            continue;
        }
        let identity =
            query_opt(ctx.db, "SELECT identity FROM devices WHERE id = $1 AND user_id = $2", &[&device.0, &user.0])
                .await?
                .map(|r| r.try_get::<_, Option<String>>(0))
                .transpose()?
                .flatten();
        let Some(identity) = identity else { continue };
        // A key another claim holds (uncommitted) is skipped, not waited for: each goes once.
        let one_time = query_opt(
            ctx.db,
            "DELETE FROM one_time_keys WHERE (device_id, key_id) = (
                 SELECT device_id, key_id FROM one_time_keys WHERE device_id = $1
                 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING key_id, key",
            &[&device.0],
        )
        .await?;
        let (key, fallback) = match one_time {
            Some(r) => {
                let left = one_time_count(ctx.db, device).await?;
                if left < KEYS_LOW {
                    ctx.events.push(StoreEvent::KeysLow { user, device, count: left });
                }
                (Some((r.try_get(0)?, r.try_get(1)?)), false)
            }
            None => {
                let fb = query_opt(
                    ctx.db,
                    "UPDATE fallback_keys SET used = TRUE WHERE device_id = $1 RETURNING key_id, key",
                    &[&device.0],
                )
                .await?;
                ctx.events.push(StoreEvent::KeysLow { user, device, count: 0 });
                match fb {
                    Some(r) => (Some((r.try_get(0)?, r.try_get(1)?)), true),
                    None => (None, false),
                }
            }
        };
        out.push(ClaimedKey { user, device, identity, key, fallback });
    }
    Ok(out)
}

pub(crate) async fn device_list(db: &ClientWrapper, viewer: UserId, user: UserId) -> Result<Option<DeviceList>> {
    if !shares(db, viewer, user).await? {
        return Ok(None);
    }
    let Some(v) = query_opt(db, "SELECT device_list_version FROM users WHERE id = $1", &[&user.0]).await? else {
        return Ok(None);
    };
    let rows = query(db, "SELECT id, identity FROM devices WHERE user_id = $1 ORDER BY id", &[&user.0]).await?;
    let devices = rows.iter().map(|r| Ok((DeviceId(r.try_get(0)?), r.try_get(1)?))).collect::<Result<_>>()?;
    Ok(Some(DeviceList { list_version: v.try_get(0)?, devices }))
}

pub(crate) async fn queue(
    ctx: &mut Ctx<'_>,
    sender: UserId,
    device: DeviceId,
    client_id: &str,
    messages: &[ToDeviceOut],
) -> Result<()> {
    let now = parley_core::now_ms();
    execute(
        ctx.db,
        "DELETE FROM to_device_sends WHERE sender_device_id = $1 AND created_at < $2",
        &[&device.0, &(now - TO_DEVICE_KEY_MS)],
    )
    .await?;
    let fresh = execute(
        ctx.db,
        "INSERT INTO to_device_sends (sender_device_id, client_id, created_at) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&device.0, &client_id, &now],
    )
    .await?;
    if fresh == 0 {
        return Ok(());
    }
    let mut allowed: HashMap<UserId, bool> = HashMap::new();
    let mut kept: Vec<&ToDeviceOut> = Vec::with_capacity(messages.len());
    for m in messages {
        let ok = match allowed.get(&m.user) {
            Some(&ok) => ok,
            None => {
                let ok = shares(ctx.db, sender, m.user).await?;
                allowed.insert(m.user, ok);
                ok
            }
        };
        if ok {
            kept.push(m);
        }
    }
    // Device rows locked in id order, so two nodes queueing for the same devices never deadlock.
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by_key(|&i| kept[i].device.0);
    let mut poked: Vec<(UserId, DeviceId)> = Vec::new();
    for i in order {
        let m = kept[i];
        let Some(r) = query_opt(
            ctx.db,
            "UPDATE devices SET to_device_seq = to_device_seq + 1 WHERE id = $1 AND user_id = $2 RETURNING to_device_seq",
            &[&m.device.0, &m.user.0],
        )
        .await?
        else {
            continue;
        };
        let id: i64 = r.try_get(0)?;
        let queued: i64 = query_one(ctx.db, "SELECT count(*) FROM to_device WHERE device_id = $1", &[&m.device.0])
            .await?
            .try_get(0)?;
        if queued >= i64::from(MAX_TO_DEVICE_QUEUE) {
            return Err(StoreError::Full {
                message: format!(
                    "device {} has {MAX_TO_DEVICE_QUEUE} to-device messages waiting; try again once it has read them",
                    m.device
                ),
                retry_after_ms: 60_000,
            }
            .into());
        }
        execute(
            ctx.db,
            "INSERT INTO to_device (device_id, id, sender_user_id, sender_device_id, payload) VALUES ($1, $2, $3, $4, $5)",
            &[&m.device.0, &id, &sender.0, &device.0, &m.payload],
        )
        .await?;
        if !poked.contains(&(m.user, m.device)) {
            poked.push((m.user, m.device));
        }
    }
    if !poked.is_empty() {
        ctx.events.push(StoreEvent::ToDevice(poked));
    }
    Ok(())
}

pub(crate) async fn after(
    db: &ClientWrapper,
    device: DeviceId,
    after_id: i64,
    limit: u32,
) -> Result<Vec<ToDeviceMessage>> {
    let rows = query(
        db,
        "SELECT id, sender_user_id, sender_device_id, payload FROM to_device
         WHERE device_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        &[&device.0, &after_id, &i64::from(limit)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ToDeviceMessage {
                id: r.try_get(0)?,
                sender_user: UserId(r.try_get(1)?),
                sender_device: DeviceId(r.try_get(2)?),
                payload: r.try_get(3)?,
            })
        })
        .collect()
}

pub(crate) async fn ack(ctx: &mut Ctx<'_>, device: DeviceId, up_to_id: i64) -> Result<()> {
    execute(ctx.db, "DELETE FROM to_device WHERE device_id = $1 AND id <= $2", &[&device.0, &up_to_id]).await?;
    Ok(())
}

pub(crate) async fn co_members(db: &ClientWrapper, user: UserId) -> Result<Vec<UserId>> {
    let rows = query(
        db,
        "SELECT DISTINCT y.user_id FROM members x JOIN members y ON y.conversation_id = x.conversation_id
         WHERE x.user_id = $1 AND x.left_seq IS NULL AND y.left_seq IS NULL",
        &[&user.0],
    )
    .await?;
    let mut out: Vec<UserId> = rows.iter().map(|r| Ok(UserId(r.try_get(0)?))).collect::<Result<_>>()?;
    if !out.contains(&user) {
        out.push(user);
    }
    Ok(out)
}
