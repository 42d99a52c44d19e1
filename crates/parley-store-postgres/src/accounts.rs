//! Users and devices.

use deadpool_postgres::ClientWrapper;
use parley_core::ids::*;
use parley_core::model::*;
use tokio_postgres::Row;

use crate::writer::Ctx;
use crate::{PgResult, execute, query, query_opt};
use parley_store::StoreError;

fn user_row(r: &Row) -> PgResult<User> {
    Ok(User {
        id: UserId(r.try_get(0)?),
        username: r.try_get(1)?,
        display_name: r.try_get(2)?,
        created_at: r.try_get(3)?,
    })
}

fn device_row(r: &Row) -> PgResult<Device> {
    Ok(Device {
        id: DeviceId(r.try_get(0)?),
        user_id: UserId(r.try_get(1)?),
        name: r.try_get(2)?,
        created_at: r.try_get(3)?,
        last_active_at: r.try_get(4)?,
    })
}

fn taken() -> StoreError {
    StoreError::Conflict("username is taken".into())
}

pub(crate) async fn create_user(ctx: &mut Ctx<'_>, username: &str, display_name: &str, hash: &str) -> PgResult<User> {
    let user = User {
        id: UserId(ctx.ids.next()),
        username: username.to_owned(),
        display_name: display_name.to_owned(),
        created_at: parley_core::now_ms(),
    };
    let inserted = execute(
        ctx.db,
        "INSERT INTO users (id, username, display_name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (username) DO NOTHING",
        &[&user.id.0, &user.username, &user.display_name, &hash, &user.created_at],
    )
    .await?;
    if inserted == 0 {
        return Err(taken().into());
    }
    Ok(user)
}

pub(crate) async fn user(db: &ClientWrapper, id: UserId) -> PgResult<Option<User>> {
    query_opt(db, "SELECT id, username, display_name, created_at FROM users WHERE id = $1", &[&id.0])
        .await?
        .map(|r| user_row(&r))
        .transpose()
}

pub(crate) async fn credentials(db: &ClientWrapper, username: &str) -> PgResult<Option<UserCredentials>> {
    let row = query_opt(
        db,
        "SELECT id, username, display_name, created_at, password_hash FROM users WHERE username = $1",
        &[&username],
    )
    .await?;
    row.map(|r| Ok(UserCredentials { user: user_row(&r)?, password_hash: r.try_get(4)? })).transpose()
}

pub(crate) async fn create_device(
    ctx: &mut Ctx<'_>,
    user_id: UserId,
    name: &str,
    token_hash: &[u8; 32],
) -> PgResult<Device> {
    let now = parley_core::now_ms();
    let device =
        Device { id: DeviceId(ctx.ids.next()), user_id, name: name.to_owned(), created_at: now, last_active_at: now };
    execute(
        ctx.db,
        "INSERT INTO devices (id, user_id, name, token_hash, created_at, last_active_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
        &[&device.id.0, &user_id.0, &device.name, &&token_hash[..], &now],
    )
    .await?;
    crate::e2ee::list_changed(ctx, user_id).await?;
    Ok(device)
}

pub(crate) async fn device_by_token(db: &ClientWrapper, token_hash: &[u8; 32]) -> PgResult<Option<Device>> {
    use subtle::ConstantTimeEq;
    // Found through the index on the hash, then compared again in constant time, so neither the
    // lookup's nor the comparison's timing says anything about a stored token.
    let Some(r) = query_opt(
        db,
        "SELECT id, user_id, name, created_at, last_active_at, token_hash FROM devices WHERE token_hash = $1",
        &[&&token_hash[..]],
    )
    .await?
    else {
        return Ok(None);
    };
    let stored: Vec<u8> = r.try_get(5)?;
    if bool::from(stored.as_slice().ct_eq(&token_hash[..])) { Ok(Some(device_row(&r)?)) } else { Ok(None) }
}

pub(crate) async fn devices(db: &ClientWrapper, user_id: UserId) -> PgResult<Vec<Device>> {
    let rows = query(
        db,
        "SELECT id, user_id, name, created_at, last_active_at FROM devices WHERE user_id = $1 ORDER BY id",
        &[&user_id.0],
    )
    .await?;
    rows.iter().map(device_row).collect()
}

pub(crate) async fn delete_device(ctx: &mut Ctx<'_>, user_id: UserId, device_id: DeviceId) -> PgResult<bool> {
    let n = execute(ctx.db, "DELETE FROM devices WHERE id = $1 AND user_id = $2", &[&device_id.0, &user_id.0]).await?;
    if n > 0 {
        execute(ctx.db, "DELETE FROM device_cursors WHERE device_id = $1", &[&device_id.0]).await?;
        execute(ctx.db, "DELETE FROM push_registrations WHERE device_id = $1", &[&device_id.0]).await?;
        execute(ctx.db, "DELETE FROM push_jobs WHERE device_id = $1", &[&device_id.0]).await?;
        crate::e2ee::forget_device(ctx.db, device_id).await?;
        crate::e2ee::list_changed(ctx, user_id).await?;
    }
    Ok(n > 0)
}

/// All the accounts in two multi-row statements; a taken username (or one named twice) leaves
/// nothing written, since the job's savepoint is rolled back.
pub(crate) async fn create_accounts(ctx: &mut Ctx<'_>, accounts: &[NewAccount]) -> PgResult<Vec<(User, Device)>> {
    let mut out = Vec::with_capacity(accounts.len());
    for a in accounts {
        let now = parley_core::now_ms();
        let user = User {
            id: UserId(ctx.ids.next()),
            username: a.username.clone(),
            display_name: a.display_name.clone(),
            created_at: now,
        };
        let device = Device {
            id: DeviceId(ctx.ids.next()),
            user_id: user.id,
            name: a.device_name.clone(),
            created_at: now,
            last_active_at: now,
        };
        out.push((user, device));
    }
    let user_ids: Vec<i64> = out.iter().map(|(u, _)| u.id.0).collect();
    let names: Vec<&str> = out.iter().map(|(u, _)| u.username.as_str()).collect();
    let display: Vec<&str> = out.iter().map(|(u, _)| u.display_name.as_str()).collect();
    let hashes: Vec<&str> = accounts.iter().map(|a| a.password_hash.as_str()).collect();
    let created: Vec<i64> = out.iter().map(|(u, _)| u.created_at).collect();
    let inserted = execute(
        ctx.db,
        "INSERT INTO users (id, username, display_name, password_hash, created_at)
         SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[])
         ON CONFLICT (username) DO NOTHING",
        &[&user_ids, &names, &display, &hashes, &created],
    )
    .await?;
    if inserted as usize != out.len() {
        return Err(taken().into());
    }
    let device_ids: Vec<i64> = out.iter().map(|(_, d)| d.id.0).collect();
    let device_names: Vec<&str> = out.iter().map(|(_, d)| d.name.as_str()).collect();
    let tokens: Vec<&[u8]> = accounts.iter().map(|a| &a.token_hash[..]).collect();
    execute(
        ctx.db,
        "INSERT INTO devices (id, user_id, name, token_hash, created_at, last_active_at)
         SELECT id, user_id, name, token_hash, created_at, created_at
         FROM unnest($1::int8[], $2::int8[], $3::text[], $4::bytea[], $5::int8[])
             AS k(id, user_id, name, token_hash, created_at)",
        &[&device_ids, &user_ids, &device_names, &tokens, &created],
    )
    .await?;
    // Each new account's list holds its first device (nobody shares a conversation yet).
    execute(ctx.db, "UPDATE users SET device_list_version = 1 WHERE id = ANY($1)", &[&user_ids]).await?;
    Ok(out)
}

pub(crate) async fn presence_records(db: &ClientWrapper, users: &[UserId]) -> PgResult<Vec<PresenceRecord>> {
    // In the order asked, as the SQLite backend answers.
    let rows = query(
        db,
        "SELECT u.id, u.last_seen, u.last_seen_visible
         FROM unnest($1::int8[]) WITH ORDINALITY AS k(id, ord) JOIN users u ON u.id = k.id ORDER BY k.ord",
        &[&crate::raw(users)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PresenceRecord {
                user_id: UserId(r.try_get(0)?),
                last_seen: r.try_get(1)?,
                last_seen_visible: r.try_get(2)?,
            })
        })
        .collect()
}

pub(crate) async fn set_last_seen_visible(ctx: &mut Ctx<'_>, user: UserId, visible: bool) -> PgResult<()> {
    execute(ctx.db, "UPDATE users SET last_seen_visible = $2 WHERE id = $1", &[&user.0, &visible]).await?;
    Ok(())
}
