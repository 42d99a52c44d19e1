//! Conversations, membership and the per-member view of a conversation.

use parley_core::push::{MemberSettings, Notify};
use std::collections::{HashMap, HashSet};

use parley_core::ids::*;
use parley_core::model::*;
use parley_core::now_ms;
use parley_core::rules::{self, GroupAct, RoleChange, Seat};
use parley_core::system::{Created, SystemEntry};
use rusqlite::{Connection, OptionalExtension, params};

use crate::messages::{self, Entry, current, insert_entry};
use crate::writer::WriteCtx;
use parley_store::StoreError;

use crate::SqlResult as Result;

fn user_exists(c: &Connection, user: UserId) -> Result<bool> {
    Ok(c.prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)")?.query_row([user.0], |r| r.get(0))?)
}

fn insert_conversation(
    ctx: &WriteCtx<'_>,
    id: ConversationId,
    kind: ConversationKind,
    title: Option<&str>,
    key: Option<&str>,
    now: i64,
    encrypted: bool,
) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO conversations (id, kind, title, direct_key, created_at, last_seq, last_activity, members_count,
                                        encrypted)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5, 0, ?6)",
        )?
        .execute(params![id.0, kind.as_str(), title, key, now, encrypted])?;
    Ok(())
}

/// Makes `user` a member from `seq` on (a new row, or a former member's row reopened), with
/// pointers at the seq before they joined, and counts them.
fn join(ctx: &WriteCtx<'_>, conv: ConversationId, user: UserId, role: Role, seq: Seq, now: i64) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO members (conversation_id, user_id, role, joined_seq, left_seq, joined_at, read_seq, delivered_seq)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?4 - 1, ?4 - 1)
             ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role, joined_seq = excluded.joined_seq,
                 left_seq = NULL, joined_at = excluded.joined_at,
                 read_seq = max(read_seq, excluded.read_seq), delivered_seq = max(delivered_seq, excluded.delivered_seq)",
        )?
        .execute(params![conv.0, user.0, role.as_str(), seq.0, now])?;
    ctx.conn
        // A member more: the devices messages are encrypted for changed.
        .prepare_cached(
            "UPDATE conversations SET members_count = members_count + 1, device_epoch = device_epoch + 1 WHERE id = ?1",
        )?
        .execute([conv.0])?;
    Ok(())
}

/// The seq the next entry of `conv` will get.
fn next_seq(c: &Connection, conv: ConversationId) -> Result<i64> {
    Ok(c.prepare_cached("SELECT last_seq + 1 FROM conversations WHERE id = ?1")?.query_row([conv.0], |r| r.get(0))?)
}

pub(crate) fn create_direct(
    ctx: &mut WriteCtx<'_>,
    a: UserId,
    b: UserId,
    encrypted: bool,
) -> Result<(ConversationId, bool)> {
    let key = rules::direct_key(a, b);
    let existing: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")?
        .query_row([&key], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok((ConversationId(id), false));
    }
    if !user_exists(ctx.conn, b)? {
        return Err(StoreError::NotFound.into());
    }
    let id = ConversationId(ctx.ids.next());
    let now = now_ms();
    insert_conversation(ctx, id, ConversationKind::Direct, None, Some(&key), now, encrypted)?;
    let members: &[UserId] = if a == b { &[a] } else { &[a, b] };
    for &m in members {
        join(ctx, id, m, Role::Member, Seq(1), now)?;
    }
    insert_entry(ctx, Entry::system(id, a, SystemEntry::ConversationCreated(Created::Direct)))?;
    Ok((id, true))
}

/// Distinct ids other than `except`, in the order given, each an existing user.
fn existing_users(c: &Connection, ids: &[UserId], except: Option<UserId>) -> Result<Vec<UserId>> {
    let wanted = rules::distinct_users(ids, except);
    let mut existing = HashSet::with_capacity(wanted.len());
    for &id in &wanted {
        if user_exists(c, id)? {
            existing.insert(id);
        }
    }
    rules::all_exist(&wanted, &existing)?;
    Ok(wanted)
}

pub(crate) fn create_group(
    ctx: &mut WriteCtx<'_>,
    creator: UserId,
    title: &str,
    member_ids: &[UserId],
    encrypted: bool,
) -> Result<ConversationId> {
    let others = existing_users(ctx.conn, member_ids, Some(creator))?;
    rules::group_fits(1, others.len())?;
    let id = ConversationId(ctx.ids.next());
    let now = now_ms();
    insert_conversation(ctx, id, ConversationKind::Group, Some(title), None, now, encrypted)?;
    join(ctx, id, creator, Role::Admin, Seq(1), now)?;
    for &m in &others {
        join(ctx, id, m, Role::Member, Seq(1), now)?;
    }
    let user_ids: Vec<UserId> = std::iter::once(creator).chain(others).collect();
    let created = SystemEntry::ConversationCreated(Created::Group { title: title.to_owned(), user_ids });
    insert_entry(ctx, Entry::system(id, creator, created))?;
    Ok(id)
}

/// Whether `actor` may do `act` to the group ([`rules::may_change_group`]).
fn group_actor(c: &Connection, actor: UserId, conv: ConversationId, act: GroupAct) -> Result<()> {
    let standing = current(c, actor, conv)?.map(|w| w.standing());
    Ok(rules::may_change_group(actor, standing, act)?)
}

/// How many admins a group has.
fn admins(c: &Connection, conv: ConversationId) -> Result<i64> {
    Ok(c.prepare_cached(
        "SELECT count(*) FROM members WHERE conversation_id = ?1 AND left_seq IS NULL AND role = 'admin'",
    )?
    .query_row([conv.0], |r| r.get(0))?)
}

pub(crate) fn set_title(ctx: &mut WriteCtx<'_>, actor: UserId, conv: ConversationId, title: &str) -> Result<()> {
    group_actor(ctx.conn, actor, conv, GroupAct::Rename)?;
    ctx.conn.prepare_cached("UPDATE conversations SET title = ?2 WHERE id = ?1")?.execute(params![conv.0, title])?;
    let entry = SystemEntry::TitleChanged { title: title.to_owned(), by: actor };
    insert_entry(ctx, Entry::system(conv, actor, entry))?;
    Ok(())
}

pub(crate) fn add_members(
    ctx: &mut WriteCtx<'_>,
    actor: UserId,
    conv: ConversationId,
    user_ids: &[UserId],
) -> Result<()> {
    group_actor(ctx.conn, actor, conv, GroupAct::AddMembers)?;
    let candidates = existing_users(ctx.conn, user_ids, None)?;
    let mut present = HashSet::new();
    for &u in &candidates {
        if current(ctx.conn, u, conv)?.is_some() {
            present.insert(u);
        }
    }
    let count: i64 = ctx
        .conn
        .prepare_cached("SELECT members_count FROM conversations WHERE id = ?1")?
        .query_row([conv.0], |r| r.get(0))?;
    let new = rules::joining(candidates, &present, count)?;
    if new.is_empty() {
        return Ok(());
    }
    let seq = next_seq(ctx.conn, conv)?;
    let now = now_ms();
    for &u in &new {
        join(ctx, conv, u, Role::Member, Seq(seq), now)?;
    }
    insert_entry(ctx, Entry::system(conv, actor, SystemEntry::MembersAdded { user_ids: new, by: actor }))?;
    Ok(())
}

/// Removes `user` (by an admin) or lets them leave (`actor == user`). A group left without an
/// admin promotes its longest-standing member.
pub(crate) fn remove_member(ctx: &mut WriteCtx<'_>, actor: UserId, conv: ConversationId, user: UserId) -> Result<()> {
    group_actor(ctx.conn, actor, conv, GroupAct::Remove(user))?;
    if current(ctx.conn, user, conv)?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let seq = next_seq(ctx.conn, conv)?;
    ctx.conn
        .prepare_cached("UPDATE members SET left_seq = ?3 WHERE conversation_id = ?1 AND user_id = ?2")?
        .execute(params![conv.0, user.0, seq])?;
    ctx.conn
        .prepare_cached(
            "UPDATE conversations SET members_count = members_count - 1, device_epoch = device_epoch + 1 WHERE id = ?1",
        )?
        .execute([conv.0])?;
    insert_entry(ctx, Entry::system(conv, actor, SystemEntry::removal(actor, user)))?;
    let seats: Vec<Seat> = {
        let mut st = ctx.conn.prepare_cached(
            "SELECT user_id, role, joined_seq, joined_at FROM members WHERE conversation_id = ?1 AND left_seq IS NULL",
        )?;
        let rows = st.query_map([conv.0], |r| {
            let role: String = r.get(1)?;
            Ok(Seat {
                user_id: UserId(r.get(0)?),
                role: Role::parse(&role),
                joined_seq: Seq(r.get(2)?),
                joined_at: r.get(3)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if let Some(heir) = rules::heir(&seats) {
        change_role(ctx, conv, heir, Role::Admin, user)?;
    }
    Ok(())
}

pub(crate) fn set_role(
    ctx: &mut WriteCtx<'_>,
    actor: UserId,
    conv: ConversationId,
    user: UserId,
    role: Role,
) -> Result<()> {
    group_actor(ctx.conn, actor, conv, GroupAct::SetRole)?;
    let target = current(ctx.conn, user, conv)?.ok_or(StoreError::NotFound)?;
    match rules::role_change(target.role, role, admins(ctx.conn, conv)?)? {
        RoleChange::Unchanged => Ok(()),
        RoleChange::Apply => change_role(ctx, conv, user, role, actor),
    }
}

fn change_role(ctx: &mut WriteCtx<'_>, conv: ConversationId, user: UserId, role: Role, by: UserId) -> Result<()> {
    ctx.conn
        .prepare_cached("UPDATE members SET role = ?3 WHERE conversation_id = ?1 AND user_id = ?2")?
        .execute(params![conv.0, user.0, role.as_str()])?;
    insert_entry(ctx, Entry::system(conv, by, SystemEntry::RoleChanged { user_id: user, role, by }))?;
    Ok(())
}

/// The member's row and the conversation, for a current member only.
struct Membership {
    kind: ConversationKind,
    title: Option<String>,
    created_at: i64,
    last_seq: Seq,
    members_count: i64,
    joined_seq: Seq,
    read_seq: Seq,
    delivered_seq: Seq,
    settings: MemberSettings,
    encrypted: bool,
    device_epoch: i64,
}

const MEMBERSHIP_COLS: &str = "c.id, c.kind, c.title, c.created_at, c.last_seq, c.members_count, m.joined_seq, \
     m.read_seq, m.delivered_seq, m.muted_until, m.notify, c.encrypted, c.device_epoch";

fn membership_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ConversationId, Membership)> {
    let kind: String = r.get(1)?;
    Ok((
        ConversationId(r.get(0)?),
        Membership {
            kind: ConversationKind::parse(&kind).unwrap_or(ConversationKind::Group),
            title: r.get(2)?,
            created_at: r.get(3)?,
            last_seq: Seq(r.get(4)?),
            members_count: r.get(5)?,
            joined_seq: Seq(r.get(6)?),
            read_seq: Seq(r.get(7)?),
            delivered_seq: Seq(r.get(8)?),
            settings: MemberSettings {
                muted_until: r.get(9)?,
                notify: Notify::parse(&r.get::<_, String>(10)?).unwrap_or_default(),
            },
            encrypted: r.get(11)?,
            device_epoch: r.get(12)?,
        },
    ))
}

/// The latest content message the member can see that is not deleted, with its latest edit
/// applied (`"edited": true` in the body).
fn last_visible(c: &Connection, id: ConversationId, joined: i64) -> Result<Option<Message>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {} FROM messages WHERE conversation_id = ?1 AND seq >= ?2 AND kind IN {} ORDER BY seq DESC LIMIT ?3",
        messages::COLS,
        content_kinds_sql()
    ))?;
    let recent: Vec<Message> = st
        .query_map(params![id.0, joined, rules::LAST_MESSAGE_SCAN], messages::row)?
        .collect::<rusqlite::Result<_>>()?;
    for mut m in recent {
        if messages::is_deleted(c, id, m.seq)? {
            continue;
        }
        let edit: Option<String> = c
            .prepare_cached(
                "SELECT body FROM messages WHERE conversation_id = ?1 AND target_seq = ?2 AND kind = 'edit'
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![id.0, m.seq.0], |r| r.get(0))
            .optional()?;
        if let Some(edit) = edit {
            m.body = rules::fold_edit(&m.body, &edit);
        }
        return Ok(Some(m));
    }
    Ok(None)
}

fn build_view(
    c: &Connection,
    user: UserId,
    id: ConversationId,
    m: Membership,
    with_members: bool,
) -> Result<ConversationView> {
    let unread_count: i64 = c
        .prepare_cached(&format!(
            "SELECT count(*) FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND sender_id != ?3 AND kind IN {}",
            content_kinds_sql()
        ))?
        .query_row(params![id.0, m.read_seq.max(m.joined_seq - 1).0, user.0], |r| r.get(0))?;
    let members = if with_members { Some(member_views(c, id)?) } else { None };
    let last_message = last_visible(c, id, m.joined_seq.0)?;
    Ok(assemble(id, m, unread_count, last_message, members))
}

fn assemble(
    id: ConversationId,
    m: Membership,
    unread_count: i64,
    last_message: Option<Message>,
    members: Option<Vec<MemberView>>,
) -> ConversationView {
    ConversationView {
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
        settings: m.settings,
        encrypted: m.encrypted,
        device_epoch: m.device_epoch,
    }
}

fn member_views(c: &Connection, id: ConversationId) -> Result<Vec<MemberView>> {
    let mut st = c.prepare_cached(
        "SELECT m.user_id, u.username, u.display_name, m.role, m.read_seq, m.delivered_seq
         FROM members m JOIN users u ON u.id = m.user_id
         WHERE m.conversation_id = ?1 AND m.left_seq IS NULL ORDER BY m.joined_seq, m.joined_at, m.user_id",
    )?;
    let rows = st.query_map([id.0], |r| {
        let role: String = r.get(3)?;
        Ok(MemberView {
            user_id: UserId(r.get(0)?),
            username: r.get(1)?,
            display_name: r.get(2)?,
            role: Role::parse(&role),
            read_seq: Seq(r.get(4)?),
            delivered_seq: Seq(r.get(5)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn view(
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
        .query_row(params![id.0, user.0], membership_row)
        .optional()?;
    match row {
        Some((id, m)) => Ok(Some(build_view(c, user, id, m, with_members)?)),
        None => Ok(None),
    }
}

/// [`view`] for each of `users` that is a current member, in one read transaction: one statement
/// reads every member's row and unread count, and the member list and the last message are read
/// once (see [`rules::last_message_for`]).
pub(crate) fn views(
    c: &Connection,
    id: ConversationId,
    users: &[UserId],
    with_members: bool,
) -> Result<Vec<(UserId, ConversationView)>> {
    let tx = c.unchecked_transaction()?;
    let mut rows: HashMap<UserId, (Membership, i64)> = {
        let mut st = tx.prepare_cached(&format!(
            "SELECT {MEMBERSHIP_COLS}, m.user_id,
                    (SELECT count(*) FROM messages x WHERE x.conversation_id = m.conversation_id
                     AND x.seq > max(m.read_seq, m.joined_seq - 1) AND x.sender_id != m.user_id
                     AND x.kind IN {content})
             FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = ?1 AND m.left_seq IS NULL",
            content = content_kinds_sql()
        ))?;
        let wanted: HashSet<UserId> = users.iter().copied().collect();
        let rows =
            st.query_map([id.0], |r| Ok((UserId(r.get::<_, i64>(13)?), membership_row(r)?.1, r.get::<_, i64>(14)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (user, m, unread) = row?;
            if wanted.contains(&user) {
                out.insert(user, (m, unread));
            }
        }
        out
    };
    let Some(earliest) = rows.values().map(|(m, _)| m.joined_seq).min() else {
        return Ok(Vec::new());
    };
    let last = last_visible(&tx, id, earliest.0)?;
    let members = if with_members { Some(member_views(&tx, id)?) } else { None };
    let mut out = Vec::with_capacity(rows.len());
    for &user in users {
        if let Some((m, unread)) = rows.remove(&user) {
            let last_message = rules::last_message_for(last.as_ref(), |l| l.seq.0, m.joined_seq.0).cloned();
            out.push((user, assemble(id, m, unread, last_message, members.clone())));
        }
    }
    Ok(out)
}

pub(crate) fn list(c: &Connection, user: UserId) -> Result<Vec<ConversationView>> {
    let rows: Vec<(ConversationId, Membership)> = {
        let mut st = c.prepare_cached(&format!(
            "SELECT {MEMBERSHIP_COLS} FROM members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.user_id = ?1 AND m.left_seq IS NULL ORDER BY c.last_activity DESC, c.id DESC"
        ))?;
        st.query_map([user.0], membership_row)?.collect::<rusqlite::Result<_>>()?
    };
    rows.into_iter().map(|(id, m)| build_view(c, user, id, m, false)).collect()
}

pub(crate) fn member_windows(c: &Connection, id: ConversationId) -> Result<Vec<MemberWindow>> {
    let mut st = c.prepare_cached("SELECT user_id, joined_seq, left_seq FROM members WHERE conversation_id = ?1")?;
    let rows = st.query_map([id.0], |r| {
        Ok(MemberWindow {
            user_id: UserId(r.get(0)?),
            joined_seq: Seq(r.get(1)?),
            left_seq: r.get::<_, Option<i64>>(2)?.map(Seq),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn contacts_among(c: &Connection, user: UserId, candidates: &[UserId]) -> Result<Vec<UserId>> {
    // Walks the candidate's memberships against the user's: both indexed by user.
    let mut st = c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM members a WHERE a.user_id = ?1 AND a.left_seq IS NULL AND a.conversation_id IN
             (SELECT b.conversation_id FROM members b WHERE b.user_id = ?2 AND b.left_seq IS NULL))",
    )?;
    let mut out = Vec::new();
    for &other in candidates {
        if st.query_row(params![user.0, other.0], |r| r.get::<_, bool>(0))? {
            out.push(other);
        }
    }
    Ok(out)
}

/// The kinds counted as content (unread counts, `last_message`) as an SQL list, from core's rule.
pub(crate) fn content_kinds_sql() -> &'static str {
    static LIST: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("({})", parley_core::MessageKind::visible_content_list()));
    &LIST
}
