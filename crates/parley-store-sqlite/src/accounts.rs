//! Users and devices.

use parley_core::ids::*;
use parley_core::model::*;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::writer::WriteCtx;
use parley_store::StoreError;

use crate::SqlResult as Result;

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User { id: UserId(r.get(0)?), username: r.get(1)?, display_name: r.get(2)?, created_at: r.get(3)? })
}

fn device_row(r: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: DeviceId(r.get(0)?),
        user_id: UserId(r.get(1)?),
        name: r.get(2)?,
        created_at: r.get(3)?,
        last_active_at: r.get(4)?,
    })
}

pub(crate) fn create_user(ctx: &mut WriteCtx<'_>, username: &str, display_name: &str, hash: &str) -> Result<User> {
    let user = User {
        id: UserId(ctx.ids.next()),
        username: username.to_owned(),
        display_name: display_name.to_owned(),
        created_at: parley_core::now_ms(),
    };
    let inserted = ctx
        .conn
        .prepare_cached(
            "INSERT INTO users (id, username, display_name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (username) DO NOTHING",
        )?
        .execute(params![user.id.0, user.username, user.display_name, hash, user.created_at])?;
    if inserted == 0 {
        return Err(StoreError::Conflict("username is taken".into()).into());
    }
    Ok(user)
}

pub(crate) fn user(c: &Connection, id: UserId) -> Result<Option<User>> {
    Ok(c.prepare_cached("SELECT id, username, display_name, created_at FROM users WHERE id = ?1")?
        .query_row([id.0], user_row)
        .optional()?)
}

pub(crate) fn credentials(c: &Connection, username: &str) -> Result<Option<UserCredentials>> {
    Ok(c.prepare_cached("SELECT id, username, display_name, created_at, password_hash FROM users WHERE username = ?1")?
        .query_row([username], |r| Ok(UserCredentials { user: user_row(r)?, password_hash: r.get(4)? }))
        .optional()?)
}

pub(crate) fn create_device(
    ctx: &mut WriteCtx<'_>,
    user_id: UserId,
    name: &str,
    token_hash: &[u8; 32],
) -> Result<Device> {
    let device = insert_device(ctx, user_id, name, token_hash)?;
    crate::e2ee::list_changed(ctx, user_id)?;
    Ok(device)
}

fn insert_device(ctx: &mut WriteCtx<'_>, user_id: UserId, name: &str, token_hash: &[u8; 32]) -> Result<Device> {
    let now = parley_core::now_ms();
    let device =
        Device { id: DeviceId(ctx.ids.next()), user_id, name: name.to_owned(), created_at: now, last_active_at: now };
    ctx.conn
        .prepare_cached(
            "INSERT INTO devices (id, user_id, name, token_hash, created_at, last_active_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute(params![device.id.0, user_id.0, device.name, &token_hash[..], now])?;
    Ok(device)
}

pub(crate) fn device_by_token(c: &Connection, token_hash: &[u8; 32]) -> Result<Option<Device>> {
    use subtle::ConstantTimeEq;
    // Found through the index on the hash, then compared again in constant time, so neither the
    // lookup's nor the comparison's timing says anything about a stored token.
    let found = c
        .prepare_cached(
            "SELECT id, user_id, name, created_at, last_active_at, token_hash FROM devices WHERE token_hash = ?1",
        )?
        .query_row([&token_hash[..]], |r| Ok((device_row(r)?, r.get::<_, Vec<u8>>(5)?)))
        .optional()?;
    Ok(found.filter(|(_, stored)| bool::from(stored.as_slice().ct_eq(&token_hash[..]))).map(|(d, _)| d))
}

pub(crate) fn devices(c: &Connection, user_id: UserId) -> Result<Vec<Device>> {
    let mut st = c.prepare_cached(
        "SELECT id, user_id, name, created_at, last_active_at FROM devices WHERE user_id = ?1 ORDER BY id",
    )?;
    let rows = st.query_map([user_id.0], device_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn touch_device(ctx: &mut WriteCtx<'_>, device_id: DeviceId, at: i64) -> Result<()> {
    ctx.conn
        .prepare_cached("UPDATE devices SET last_active_at = max(last_active_at, ?2) WHERE id = ?1")?
        .execute(params![device_id.0, at])?;
    Ok(())
}

pub(crate) fn delete_device(ctx: &mut WriteCtx<'_>, user_id: UserId, device_id: DeviceId) -> Result<bool> {
    let n = ctx
        .conn
        .prepare_cached("DELETE FROM devices WHERE id = ?1 AND user_id = ?2")?
        .execute(params![device_id.0, user_id.0])?;
    if n > 0 {
        ctx.conn.prepare_cached("DELETE FROM device_cursors WHERE device_id = ?1")?.execute([device_id.0])?;
        crate::push::delete_push(ctx, device_id)?;
        crate::e2ee::forget_device(ctx, device_id)?;
        crate::e2ee::list_changed(ctx, user_id)?;
    }
    Ok(n > 0)
}

pub(crate) fn create_accounts(ctx: &mut WriteCtx<'_>, accounts: Vec<NewAccount>) -> Result<Vec<(User, Device)>> {
    let mut out = Vec::with_capacity(accounts.len());
    for a in accounts {
        // New accounts share no conversation yet: nobody to tell about their first device.
        let user = create_user(ctx, &a.username, &a.display_name, &a.password_hash)?;
        let device = insert_device(ctx, user.id, &a.device_name, &a.token_hash)?;
        crate::e2ee::bump_version(ctx, user.id)?;
        out.push((user, device));
    }
    Ok(out)
}

pub(crate) fn presence_records(c: &Connection, users: &[UserId]) -> Result<Vec<PresenceRecord>> {
    let mut st = c.prepare_cached("SELECT id, last_seen, last_seen_visible FROM users WHERE id = ?1")?;
    let mut out = Vec::with_capacity(users.len());
    for &u in users {
        if let Some(r) = st
            .query_row([u.0], |r| {
                Ok(PresenceRecord { user_id: UserId(r.get(0)?), last_seen: r.get(1)?, last_seen_visible: r.get(2)? })
            })
            .optional()?
        {
            out.push(r);
        }
    }
    Ok(out)
}

pub(crate) fn set_last_seen(ctx: &mut WriteCtx<'_>, user: UserId, at: i64) -> Result<()> {
    ctx.conn
        .prepare_cached("UPDATE users SET last_seen = max(coalesce(last_seen, 0), ?2) WHERE id = ?1")?
        .execute(params![user.0, at])?;
    Ok(())
}

pub(crate) fn set_last_seen_visible(ctx: &mut WriteCtx<'_>, user: UserId, visible: bool) -> Result<()> {
    ctx.conn
        .prepare_cached("UPDATE users SET last_seen_visible = ?2 WHERE id = ?1")?
        .execute(params![user.0, visible])?;
    Ok(())
}
