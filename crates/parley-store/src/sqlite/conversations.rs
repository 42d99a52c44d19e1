//! Conversations, membership and the per-member view of a conversation.

use parley_core::ids::*;
use parley_core::model::*;
use parley_core::{MessageKind, now_ms};
use rusqlite::{Connection, OptionalExtension, params};

use super::messages::{self, insert_entry};
use super::writer::WriteCtx;
use crate::{Result, StoreError};

pub(super) fn create_direct(ctx: &mut WriteCtx<'_>, a: UserId, b: UserId) -> Result<(ConversationId, bool)> {
    let key = format!("{}:{}", a.min(b), a.max(b));
    let existing: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")?
        .query_row([&key], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    let other_exists: bool =
        ctx.conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)")?.query_row([b], |r| r.get(0))?;
    if !other_exists {
        return Err(StoreError::NotFound);
    }
    let id = ctx.ids.next();
    let now = now_ms();
    let members: &[UserId] = if a == b { &[a] } else { &[a, b] };
    ctx.conn
        .prepare_cached(
            "INSERT INTO conversations (id, kind, title, direct_key, created_at, last_seq, last_activity, members_count)
             VALUES (?1, 'direct', NULL, ?2, ?3, 0, ?3, ?4)",
        )?
        .execute(params![id, key, now, members.len() as i64])?;
    let mut add = ctx.conn.prepare_cached(
        "INSERT INTO members (conversation_id, user_id, role, joined_seq, joined_at) VALUES (?1, ?2, 'member', 1, ?3)",
    )?;
    for &m in members {
        add.execute(params![id, m, now])?;
    }
    drop(add);
    insert_entry(ctx, id, a, None, None, MessageKind::ConversationCreated, r#"{"kind":"direct"}"#.into())?;
    Ok((id, true))
}

/// The member's row and the conversation, for a current member only.
struct Membership {
    kind: ConversationKind,
    title: Option<String>,
    created_at: i64,
    last_seq: i64,
    members_count: i64,
    joined_seq: i64,
    read_seq: i64,
    delivered_seq: i64,
}

const MEMBERSHIP_COLS: &str =
    "c.id, c.kind, c.title, c.created_at, c.last_seq, c.members_count, m.joined_seq, m.read_seq, m.delivered_seq";

fn membership_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ConversationId, Membership)> {
    let kind: String = r.get(1)?;
    Ok((
        r.get(0)?,
        Membership {
            kind: ConversationKind::parse(&kind).unwrap_or(ConversationKind::Group),
            title: r.get(2)?,
            created_at: r.get(3)?,
            last_seq: r.get(4)?,
            members_count: r.get(5)?,
            joined_seq: r.get(6)?,
            read_seq: r.get(7)?,
            delivered_seq: r.get(8)?,
        },
    ))
}

fn build_view(
    c: &Connection,
    user: UserId,
    id: ConversationId,
    m: Membership,
    with_members: bool,
) -> Result<ConversationView> {
    let last_message = c
        .prepare_cached(&format!(
            "SELECT {} FROM messages WHERE conversation_id = ?1 AND seq >= ?2 AND kind IN {}
             ORDER BY seq DESC LIMIT 1",
            messages::COLS,
            MessageKind::CONTENT_SQL_LIST
        ))?
        .query_row(params![id, m.joined_seq], messages::row)
        .optional()?;
    let unread_count: i64 = c
        .prepare_cached(&format!(
            "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND sender_id != ?3 AND kind IN {}",
            MessageKind::CONTENT_SQL_LIST
        ))?
        .query_row(params![id, m.read_seq.max(m.joined_seq - 1), user], |r| r.get(0))?;
    let members = if with_members { Some(member_views(c, id)?) } else { None };
    Ok(ConversationView {
        id,
        kind: m.kind,
        title: m.title,
        created_at: m.created_at,
        last_seq: m.last_seq,
        last_message,
        unread_count,
        read_seq: m.read_seq,
        delivered_seq: m.delivered_seq,
        members_count: m.members_count,
        members,
    })
}

fn member_views(c: &Connection, id: ConversationId) -> Result<Vec<MemberView>> {
    let mut st = c.prepare_cached(
        "SELECT m.user_id, u.username, u.display_name, m.role, m.read_seq, m.delivered_seq
         FROM members m JOIN users u ON u.id = m.user_id
         WHERE m.conversation_id = ?1 AND m.left_seq IS NULL ORDER BY m.joined_seq, m.user_id",
    )?;
    let rows = st.query_map([id], |r| {
        let role: String = r.get(3)?;
        Ok(MemberView {
            user_id: r.get(0)?,
            username: r.get(1)?,
            display_name: r.get(2)?,
            role: Role::parse(&role),
            read_seq: r.get(4)?,
            delivered_seq: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn view(
    c: &Connection,
    user: UserId,
    id: ConversationId,
    with_members: bool,
) -> Result<Option<ConversationView>> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {MEMBERSHIP_COLS} FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = ?1 AND m.user_id = ?2 AND m.left_seq IS NULL"
        ))?
        .query_row(params![id, user], membership_row)
        .optional()?;
    match row {
        Some((id, m)) => Ok(Some(build_view(c, user, id, m, with_members)?)),
        None => Ok(None),
    }
}

pub(super) fn list(c: &Connection, user: UserId) -> Result<Vec<ConversationView>> {
    let rows: Vec<(ConversationId, Membership)> = {
        let mut st = c.prepare_cached(&format!(
            "SELECT {MEMBERSHIP_COLS} FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.user_id = ?1 AND m.left_seq IS NULL ORDER BY c.last_activity DESC, c.id DESC"
        ))?;
        st.query_map([user], membership_row)?.collect::<rusqlite::Result<_>>()?
    };
    rows.into_iter().map(|(id, m)| build_view(c, user, id, m, false)).collect()
}

pub(super) fn member_ids(c: &Connection, id: ConversationId) -> Result<Vec<UserId>> {
    let mut st = c.prepare_cached("SELECT user_id FROM members WHERE conversation_id = ?1 AND left_seq IS NULL")?;
    let rows = st.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
