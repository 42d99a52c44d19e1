//! End-to-end encryption's server side: device lists and their versions, the key directory
//! (one-time keys handed out once: the single writer serializes claims) and the to-device queue
//! (numbered per recipient device by a counter on the device's row).

use std::collections::HashMap;

use parley_core::ids::*;
use parley_store::e2ee::*;
use parley_store::{StoreError, StoreEvent};
use rusqlite::{Connection, OptionalExtension, params};

use crate::SqlResult as Result;
use crate::writer::WriteCtx;

/// Bumps `user`'s device list version; returns the new one.
pub(crate) fn bump_version(ctx: &mut WriteCtx<'_>, user: UserId) -> Result<i64> {
    Ok(ctx
        .conn
        .prepare_cached(
            "UPDATE users SET device_list_version = device_list_version + 1 WHERE id = ?1 RETURNING device_list_version",
        )?
        .query_row([user.0], |r| r.get(0))?)
}

/// `user`'s device list changed: a new version, a new device epoch in each of their current
/// conversations (senders must share keys with the new set), and the event that tells the
/// users who share a conversation with them.
pub(crate) fn list_changed(ctx: &mut WriteCtx<'_>, user: UserId) -> Result<()> {
    let list_version = bump_version(ctx, user)?;
    ctx.conn
        .prepare_cached(
            "UPDATE conversations SET device_epoch = device_epoch + 1
             WHERE id IN (SELECT conversation_id FROM members WHERE user_id = ?1 AND left_seq IS NULL)",
        )?
        .execute([user.0])?;
    ctx.events.push(StoreEvent::DeviceListChanged { user, list_version });
    Ok(())
}

/// A revoked device's keys and queue go with it.
pub(crate) fn forget_device(ctx: &mut WriteCtx<'_>, device: DeviceId) -> Result<()> {
    for sql in [
        "DELETE FROM one_time_keys WHERE device_id = ?1",
        "DELETE FROM fallback_keys WHERE device_id = ?1",
        "DELETE FROM to_device WHERE device_id = ?1",
        "DELETE FROM to_device_sends WHERE sender_device_id = ?1",
    ] {
        ctx.conn.prepare_cached(sql)?.execute([device.0])?;
    }
    Ok(())
}

/// Whether `a` is `b` or shares a current conversation with them.
fn shares(c: &Connection, a: UserId, b: UserId) -> Result<bool> {
    if a == b {
        return Ok(true);
    }
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM members x JOIN members y ON y.conversation_id = x.conversation_id
                        WHERE x.user_id = ?1 AND y.user_id = ?2 AND x.left_seq IS NULL AND y.left_seq IS NULL)",
    )?
    .query_row(params![a.0, b.0], |r| r.get(0))?)
}

fn one_time_count(c: &Connection, device: DeviceId) -> Result<u32> {
    Ok(c.prepare_cached("SELECT count(*) FROM one_time_keys WHERE device_id = ?1")?
        .query_row([device.0], |r| r.get(0))?)
}

pub(crate) fn put_keys(ctx: &mut WriteCtx<'_>, user: UserId, device: DeviceId, keys: KeyUpload) -> Result<u32> {
    if let Some(identity) = &keys.identity {
        let stored: Option<Option<String>> = ctx
            .conn
            .prepare_cached("SELECT identity FROM devices WHERE id = ?1 AND user_id = ?2")?
            .query_row(params![device.0, user.0], |r| r.get(0))
            .optional()?;
        match stored {
            None => return Err(StoreError::NotFound.into()),
            Some(Some(s)) if &s == identity => {}
            Some(Some(_)) => {
                return Err(StoreError::Conflict("this device's identity is already set to another key".into()).into());
            }
            Some(None) => {
                ctx.conn
                    .prepare_cached("UPDATE devices SET identity = ?2 WHERE id = ?1")?
                    .execute(params![device.0, identity])?;
                list_changed(ctx, user)?;
            }
        }
    }
    for (key_id, key) in &keys.one_time {
        let stored: Option<String> = ctx
            .conn
            .prepare_cached("SELECT key FROM one_time_keys WHERE device_id = ?1 AND key_id = ?2")?
            .query_row(params![device.0, key_id], |r| r.get(0))
            .optional()?;
        match stored {
            Some(s) if &s == key => {}
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                    "one-time key {key_id:?} is already stored with another key"
                ))
                .into());
            }
            None => {
                ctx.conn
                    .prepare_cached("INSERT INTO one_time_keys (device_id, key_id, key) VALUES (?1, ?2, ?3)")?
                    .execute(params![device.0, key_id, key])?;
            }
        }
    }
    let count = one_time_count(ctx.conn, device)?;
    if count > MAX_ONE_TIME_KEYS {
        return Err(StoreError::Invalid(format!("a device stores at most {MAX_ONE_TIME_KEYS} one-time keys")).into());
    }
    if let Some((key_id, key)) = &keys.fallback {
        ctx.conn
            .prepare_cached(
                "INSERT INTO fallback_keys (device_id, key_id, key, used) VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT (device_id) DO UPDATE SET key_id = excluded.key_id, key = excluded.key,
                     used = CASE WHEN fallback_keys.key_id = excluded.key_id AND fallback_keys.key = excluded.key
                                 THEN fallback_keys.used ELSE 0 END",
            )?
            .execute(params![device.0, key_id, key])?;
    }
    Ok(count)
}

pub(crate) fn key_counts(c: &Connection, device: DeviceId) -> Result<(u32, bool)> {
    let fallback: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM fallback_keys WHERE device_id = ?1 AND used = 0)")?
        .query_row([device.0], |r| r.get(0))?;
    Ok((one_time_count(c, device)?, fallback))
}

pub(crate) fn claim(
    ctx: &mut WriteCtx<'_>,
    claimer: UserId,
    devices: Vec<(UserId, DeviceId)>,
) -> Result<Vec<ClaimedKey>> {
    let mut allowed: HashMap<UserId, bool> = HashMap::new();
    let mut out = Vec::with_capacity(devices.len());
    for (user, device) in devices {
        if out.iter().any(|c: &ClaimedKey| c.device == device) {
            continue;
        }
        let ok = match allowed.get(&user) {
            Some(&ok) => ok,
            None => {
                let ok = shares(ctx.conn, claimer, user)?;
                allowed.insert(user, ok);
                ok
            }
        };
        if !ok {
            continue;
        }
        let identity: Option<String> = ctx
            .conn
            .prepare_cached("SELECT identity FROM devices WHERE id = ?1 AND user_id = ?2")?
            .query_row(params![device.0, user.0], |r| r.get(0))
            .optional()?
            .flatten();
        let Some(identity) = identity else { continue };
        let one_time: Option<(String, String)> = ctx
            .conn
            .prepare_cached(
                "DELETE FROM one_time_keys WHERE device_id = ?1
                     AND key_id = (SELECT key_id FROM one_time_keys WHERE device_id = ?1 ORDER BY key_id LIMIT 1)
                 RETURNING key_id, key",
            )?
            .query_row([device.0], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (key, fallback) = match one_time {
            Some(k) => {
                let left = one_time_count(ctx.conn, device)?;
                if left < KEYS_LOW {
                    ctx.events.push(StoreEvent::KeysLow { user, device, count: left });
                }
                (Some(k), false)
            }
            None => {
                let fb: Option<(String, String)> = ctx
                    .conn
                    .prepare_cached("UPDATE fallback_keys SET used = 1 WHERE device_id = ?1 RETURNING key_id, key")?
                    .query_row([device.0], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                ctx.events.push(StoreEvent::KeysLow { user, device, count: 0 });
                let used = fb.is_some();
                (fb, used)
            }
        };
        out.push(ClaimedKey { user, device, identity, key, fallback });
    }
    Ok(out)
}

pub(crate) fn device_list(c: &Connection, viewer: UserId, user: UserId) -> Result<Option<DeviceList>> {
    if !shares(c, viewer, user)? {
        return Ok(None);
    }
    let Some(list_version) = c
        .prepare_cached("SELECT device_list_version FROM users WHERE id = ?1")?
        .query_row([user.0], |r| r.get(0))
        .optional()?
    else {
        return Ok(None);
    };
    let devices = c
        .prepare_cached("SELECT id, identity FROM devices WHERE user_id = ?1 ORDER BY id")?
        .query_map([user.0], |r| Ok((DeviceId(r.get(0)?), r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(DeviceList { list_version, devices }))
}

pub(crate) fn queue(
    ctx: &mut WriteCtx<'_>,
    sender: UserId,
    device: DeviceId,
    client_id: &str,
    messages: Vec<ToDeviceOut>,
) -> Result<()> {
    let now = parley_core::now_ms();
    ctx.conn
        .prepare_cached("DELETE FROM to_device_sends WHERE sender_device_id = ?1 AND created_at < ?2")?
        .execute(params![device.0, now - TO_DEVICE_KEY_MS])?;
    let fresh = ctx
        .conn
        .prepare_cached(
            "INSERT INTO to_device_sends (sender_device_id, client_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![device.0, client_id, now])?;
    if fresh == 0 {
        return Ok(());
    }
    let mut allowed: HashMap<UserId, bool> = HashMap::new();
    let mut poked: Vec<(UserId, DeviceId)> = Vec::new();
    for m in messages {
        let ok = match allowed.get(&m.user) {
            Some(&ok) => ok,
            None => {
                let ok = shares(ctx.conn, sender, m.user)?;
                allowed.insert(m.user, ok);
                ok
            }
        };
        let owner: Option<i64> = ctx
            .conn
            .prepare_cached("SELECT user_id FROM devices WHERE id = ?1")?
            .query_row([m.device.0], |r| r.get(0))
            .optional()?;
        if !ok || owner != Some(m.user.0) {
            continue;
        }
        let queued: u32 = ctx
            .conn
            .prepare_cached("SELECT count(*) FROM to_device WHERE device_id = ?1")?
            .query_row([m.device.0], |r| r.get(0))?;
        if queued >= MAX_TO_DEVICE_QUEUE {
            return Err(StoreError::Full {
                message: format!(
                    "device {} has {MAX_TO_DEVICE_QUEUE} to-device messages waiting; try again once it has read them",
                    m.device
                ),
                retry_after_ms: 60_000,
            }
            .into());
        }
        let id: i64 = ctx
            .conn
            .prepare_cached(
                "UPDATE devices SET to_device_seq = to_device_seq + 1 WHERE id = ?1 RETURNING to_device_seq",
            )?
            .query_row([m.device.0], |r| r.get(0))?;
        ctx.conn
            .prepare_cached(
                "INSERT INTO to_device (device_id, id, sender_user_id, sender_device_id, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![m.device.0, id, sender.0, device.0, m.payload])?;
        if !poked.contains(&(m.user, m.device)) {
            poked.push((m.user, m.device));
        }
    }
    if !poked.is_empty() {
        ctx.events.push(StoreEvent::ToDevice(poked));
    }
    Ok(())
}

pub(crate) fn after(c: &Connection, device: DeviceId, after_id: i64, limit: u32) -> Result<Vec<ToDeviceMessage>> {
    Ok(c.prepare_cached(
        "SELECT id, sender_user_id, sender_device_id, payload FROM to_device
         WHERE device_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?
    .query_map(params![device.0, after_id, limit], |r| {
        Ok(ToDeviceMessage {
            id: r.get(0)?,
            sender_user: UserId(r.get(1)?),
            sender_device: DeviceId(r.get(2)?),
            payload: r.get(3)?,
        })
    })?
    .collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn ack(ctx: &mut WriteCtx<'_>, device: DeviceId, up_to_id: i64) -> Result<()> {
    ctx.conn
        .prepare_cached("DELETE FROM to_device WHERE device_id = ?1 AND id <= ?2")?
        .execute(params![device.0, up_to_id])?;
    Ok(())
}

pub(crate) fn co_members(c: &Connection, user: UserId) -> Result<Vec<UserId>> {
    let mut out: Vec<UserId> = c
        .prepare_cached(
            "SELECT DISTINCT y.user_id FROM members x JOIN members y ON y.conversation_id = x.conversation_id
             WHERE x.user_id = ?1 AND x.left_seq IS NULL AND y.left_seq IS NULL",
        )?
        .query_map([user.0], |r| Ok(UserId(r.get(0)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if !out.contains(&user) {
        out.push(user);
    }
    Ok(out)
}
