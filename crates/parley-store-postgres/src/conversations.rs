//! Conversations, membership and the per-member view of a conversation.

use parley_core::push::{MemberSettings, Notify};
use std::collections::HashSet;

use deadpool_postgres::ClientWrapper;
use parley_core::ids::*;
use parley_core::model::*;
use parley_core::now_ms;
use parley_core::rules::{self, GroupAct, RoleChange, Seat};
use parley_core::system::{Created, SystemEntry};
use tokio_postgres::Row;

use crate::messages::{self, Entry, current, insert_entry, lock};
use crate::writer::Ctx;
use crate::{PgResult, execute, query, query_one, query_opt};
use parley_store::StoreError;

async fn insert_conversation(
    ctx: &Ctx<'_>,
    id: ConversationId,
    kind: ConversationKind,
    title: Option<&str>,
    key: Option<&str>,
    now: i64,
    encrypted: bool,
) -> PgResult<u64> {
    // A direct conversation that another node created meanwhile is left alone (and not an
    // error): the caller then finds it by its key.
    execute(
        ctx.db,
        "INSERT INTO conversations (id, kind, title, direct_key, created_at, last_seq, last_activity, members_count,
                                    encrypted)
         VALUES ($1, $2, $3, $4, $5, 0, $5, 0, $6)
         ON CONFLICT (direct_key) DO NOTHING",
        &[&id.0, &kind.as_str(), &title, &key, &now, &encrypted],
    )
    .await
}

/// Makes `users` (distinct) members from `seq` on with the given roles (new rows, or former
/// members' rows reopened), with pointers at the seq before they joined, and counts them.
async fn join(
    ctx: &Ctx<'_>,
    conv: ConversationId,
    users: &[UserId],
    roles: &[&str],
    seq: Seq,
    now: i64,
) -> PgResult<()> {
    execute(
        ctx.db,
        "INSERT INTO members (conversation_id, user_id, role, joined_seq, left_seq, joined_at, read_seq, delivered_seq)
         SELECT $1::int8, k.user_id, k.role, $4::int8, NULL, $5::int8, $4::int8 - 1, $4::int8 - 1
         FROM unnest($2::int8[], $3::text[]) AS k(user_id, role)
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET role = excluded.role, joined_seq = excluded.joined_seq,
             left_seq = NULL, joined_at = excluded.joined_at,
             read_seq = greatest(members.read_seq, excluded.read_seq),
             delivered_seq = greatest(members.delivered_seq, excluded.delivered_seq)",
        &[&conv.0, &crate::raw(users), &roles, &seq.0, &now],
    )
    .await?;
    execute(
        ctx.db,
        // More members: the devices messages are encrypted for changed.
        "UPDATE conversations SET members_count = members_count + $2, device_epoch = device_epoch + 1 WHERE id = $1",
        &[&conv.0, &(users.len() as i64)],
    )
    .await?;
    Ok(())
}

/// The seq the next entry of `conv` will get.
async fn next_seq(db: &ClientWrapper, conv: ConversationId) -> PgResult<i64> {
    Ok(query_one(db, "SELECT last_seq + 1 FROM conversations WHERE id = $1", &[&conv.0]).await?.try_get(0)?)
}

async fn direct_by_key(db: &ClientWrapper, key: &str) -> PgResult<Option<ConversationId>> {
    Ok(query_opt(db, "SELECT id FROM conversations WHERE direct_key = $1", &[&key])
        .await?
        .map(|r| ConversationId(r.get(0))))
}

pub(crate) async fn create_direct(
    ctx: &mut Ctx<'_>,
    a: UserId,
    b: UserId,
    encrypted: bool,
) -> PgResult<(ConversationId, bool)> {
    let key = rules::direct_key(a, b);
    if let Some(id) = direct_by_key(ctx.db, &key).await? {
        return Ok((id, false));
    }
    if query_opt(ctx.db, "SELECT 1 FROM users WHERE id = $1", &[&b.0]).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let id = ConversationId(ctx.ids.next());
    let now = now_ms();
    if insert_conversation(ctx, id, ConversationKind::Direct, None, Some(&key), now, encrypted).await? == 0 {
        let id = direct_by_key(ctx.db, &key).await?.ok_or(StoreError::NotFound)?;
        return Ok((id, false));
    }
    let (users, roles): (&[UserId], &[&str]) =
        if a == b { (&[a], &["member"]) } else { (&[a, b], &["member", "member"]) };
    join(ctx, id, users, roles, Seq(1), now).await?;
    insert_entry(ctx, Entry::system(id, a, SystemEntry::ConversationCreated(Created::Direct))).await?;
    Ok((id, true))
}

/// Distinct ids other than `except`, in the order given, each an existing user.
async fn existing_users(db: &ClientWrapper, ids: &[UserId], except: Option<UserId>) -> PgResult<Vec<UserId>> {
    let wanted = rules::distinct_users(ids, except);
    let found: HashSet<UserId> = query(db, "SELECT id FROM users WHERE id = ANY($1)", &[&crate::raw(&wanted)])
        .await?
        .iter()
        .map(|r| UserId(r.get(0)))
        .collect();
    rules::all_exist(&wanted, &found)?;
    Ok(wanted)
}

pub(crate) async fn create_group(
    ctx: &mut Ctx<'_>,
    creator: UserId,
    title: &str,
    member_ids: &[UserId],
    encrypted: bool,
) -> PgResult<ConversationId> {
    let others = existing_users(ctx.db, member_ids, Some(creator)).await?;
    rules::group_fits(1, others.len())?;
    let id = ConversationId(ctx.ids.next());
    let now = now_ms();
    insert_conversation(ctx, id, ConversationKind::Group, Some(title), None, now, encrypted).await?;
    let users: Vec<UserId> = std::iter::once(creator).chain(others.iter().copied()).collect();
    let roles: Vec<&str> =
        std::iter::once(Role::Admin.as_str()).chain(std::iter::repeat_n(Role::Member.as_str(), others.len())).collect();
    join(ctx, id, &users, &roles, Seq(1), now).await?;
    let created = SystemEntry::ConversationCreated(Created::Group { title: title.to_owned(), user_ids: users });
    insert_entry(ctx, Entry::system(id, creator, created)).await?;
    Ok(id)
}

/// Whether `actor` may do `act` to the group ([`rules::may_change_group`]). Takes the
/// conversation's lock first: every caller changes it.
async fn group_actor(db: &ClientWrapper, actor: UserId, conv: ConversationId, act: GroupAct) -> PgResult<()> {
    lock(db, conv).await?;
    let standing = current(db, actor, conv).await?.map(|w| w.standing());
    Ok(rules::may_change_group(actor, standing, act)?)
}

pub(crate) async fn set_title(ctx: &mut Ctx<'_>, actor: UserId, conv: ConversationId, title: &str) -> PgResult<()> {
    group_actor(ctx.db, actor, conv, GroupAct::Rename).await?;
    execute(ctx.db, "UPDATE conversations SET title = $2 WHERE id = $1", &[&conv.0, &title]).await?;
    let entry = SystemEntry::TitleChanged { title: title.to_owned(), by: actor };
    insert_entry(ctx, Entry::system(conv, actor, entry)).await?;
    Ok(())
}

pub(crate) async fn add_members(
    ctx: &mut Ctx<'_>,
    actor: UserId,
    conv: ConversationId,
    user_ids: &[UserId],
) -> PgResult<()> {
    group_actor(ctx.db, actor, conv, GroupAct::AddMembers).await?;
    let candidates = existing_users(ctx.db, user_ids, None).await?;
    let present: HashSet<UserId> = query(
        ctx.db,
        "SELECT user_id FROM members WHERE conversation_id = $1 AND user_id = ANY($2) AND left_seq IS NULL",
        &[&conv.0, &crate::raw(&candidates)],
    )
    .await?
    .iter()
    .map(|r| UserId(r.get(0)))
    .collect();
    let count: i64 =
        query_one(ctx.db, "SELECT members_count FROM conversations WHERE id = $1", &[&conv.0]).await?.try_get(0)?;
    let new = rules::joining(candidates, &present, count)?;
    if new.is_empty() {
        return Ok(());
    }
    let seq = next_seq(ctx.db, conv).await?;
    let roles = vec![Role::Member.as_str(); new.len()];
    join(ctx, conv, &new, &roles, Seq(seq), now_ms()).await?;
    insert_entry(ctx, Entry::system(conv, actor, SystemEntry::MembersAdded { user_ids: new, by: actor })).await?;
    Ok(())
}

async fn admins(db: &ClientWrapper, conv: ConversationId) -> PgResult<i64> {
    Ok(query_one(
        db,
        "SELECT count(*) FROM members WHERE conversation_id = $1 AND left_seq IS NULL AND role = 'admin'",
        &[&conv.0],
    )
    .await?
    .try_get(0)?)
}

/// Removes `user` (by an admin) or lets them leave (`actor == user`). A group left without an
/// admin promotes its longest-standing member.
pub(crate) async fn remove_member(
    ctx: &mut Ctx<'_>,
    actor: UserId,
    conv: ConversationId,
    user: UserId,
) -> PgResult<()> {
    group_actor(ctx.db, actor, conv, GroupAct::Remove(user)).await?;
    if current(ctx.db, user, conv).await?.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let seq = next_seq(ctx.db, conv).await?;
    execute(
        ctx.db,
        "UPDATE members SET left_seq = $3 WHERE conversation_id = $1 AND user_id = $2",
        &[&conv.0, &user.0, &seq],
    )
    .await?;
    execute(
        ctx.db,
        "UPDATE conversations SET members_count = members_count - 1, device_epoch = device_epoch + 1 WHERE id = $1",
        &[&conv.0],
    )
    .await?;
    insert_entry(ctx, Entry::system(conv, actor, SystemEntry::removal(actor, user))).await?;
    let rows = query(
        ctx.db,
        "SELECT user_id, role, joined_seq, joined_at FROM members WHERE conversation_id = $1 AND left_seq IS NULL",
        &[&conv.0],
    )
    .await?;
    let mut seats = Vec::with_capacity(rows.len());
    for r in &rows {
        let role: String = r.try_get(1)?;
        seats.push(Seat {
            user_id: UserId(r.try_get(0)?),
            role: Role::parse(&role),
            joined_seq: Seq(r.try_get(2)?),
            joined_at: r.try_get(3)?,
        });
    }
    if let Some(heir) = rules::heir(&seats) {
        change_role(ctx, conv, heir, Role::Admin, user).await?;
    }
    Ok(())
}

pub(crate) async fn set_role(
    ctx: &mut Ctx<'_>,
    actor: UserId,
    conv: ConversationId,
    user: UserId,
    role: Role,
) -> PgResult<()> {
    group_actor(ctx.db, actor, conv, GroupAct::SetRole).await?;
    let target = current(ctx.db, user, conv).await?.ok_or(StoreError::NotFound)?;
    match rules::role_change(target.role, role, admins(ctx.db, conv).await?)? {
        RoleChange::Unchanged => Ok(()),
        RoleChange::Apply => change_role(ctx, conv, user, role, actor).await,
    }
}

async fn change_role(ctx: &mut Ctx<'_>, conv: ConversationId, user: UserId, role: Role, by: UserId) -> PgResult<()> {
    execute(
        ctx.db,
        "UPDATE members SET role = $3 WHERE conversation_id = $1 AND user_id = $2",
        &[&conv.0, &user.0, &role.as_str()],
    )
    .await?;
    insert_entry(ctx, Entry::system(conv, by, SystemEntry::RoleChanged { user_id: user, role, by })).await?;
    Ok(())
}

/// The view of conversations as their members see them, in one statement: the membership, the
/// unread count, and the latest content message the member can see that is not deleted (among
/// the 16 latest, as the SQLite backend looks), with the body of its latest edit.
fn view_sql(filter: &str) -> String {
    let content = content_kinds_sql();
    format!(
        "SELECT c.id, c.kind, c.title, c.created_at, c.last_seq, c.members_count, m.joined_seq, m.read_seq,
                m.delivered_seq,
                (SELECT count(*) FROM messages x
                 WHERE x.conversation_id = c.id AND x.seq > greatest(m.read_seq, m.joined_seq - 1)
                   AND x.sender_id <> m.user_id AND x.kind IN {content}) AS unread,
                {last}, lv.edit, m.user_id, m.muted_until, m.notify, c.encrypted, c.device_epoch
         FROM members m JOIN conversations c ON c.id = m.conversation_id
         LEFT JOIN LATERAL (
             SELECT r.*, (SELECT e.body FROM messages e
                          WHERE e.conversation_id = r.conversation_id AND e.target_seq = r.seq AND e.kind = 'edit'
                          ORDER BY e.seq DESC LIMIT 1) AS edit
             FROM (SELECT {cols} FROM messages y
                   WHERE y.conversation_id = c.id AND y.seq >= m.joined_seq AND y.kind IN {content}
                   ORDER BY y.seq DESC LIMIT {scan}) r
             WHERE NOT EXISTS (SELECT 1 FROM messages d
                               WHERE d.conversation_id = r.conversation_id AND d.target_seq = r.seq
                                 AND d.kind = 'delete')
             ORDER BY r.seq DESC LIMIT 1
         ) lv ON true
         WHERE {filter}",
        last = messages::cols("lv"),
        cols = messages::cols("y"),
        scan = rules::LAST_MESSAGE_SCAN,
    )
}

/// Column of the last message in [`view_sql`]'s rows, of its latest edit's body, and of the
/// member's id.
const LAST_AT: usize = 10;
const EDIT_AT: usize = 19;
const USER_AT: usize = 20;
/// Columns of the member's notification settings.
const SETTINGS_AT: usize = 21;

fn view_row(r: &Row, members: Option<Vec<MemberView>>) -> PgResult<ConversationView> {
    let kind: String = r.try_get(1)?;
    let last_message = match r.try_get::<_, Option<i64>>(LAST_AT)? {
        None => None,
        Some(_) => {
            let mut m = messages::message(r, LAST_AT)?;
            let edit: Option<String> = r.try_get(EDIT_AT)?;
            if let Some(edit) = edit {
                m.body = rules::fold_edit(&m.body, &edit);
            }
            Some(m)
        }
    };
    Ok(ConversationView {
        id: ConversationId(r.try_get(0)?),
        kind: ConversationKind::parse(&kind).unwrap_or(ConversationKind::Group),
        title: r.try_get(2)?,
        created_at: r.try_get(3)?,
        last_seq: Seq(r.try_get(4)?),
        last_message,
        unread_count: r.try_get(9)?,
        read_seq: Seq(r.try_get(7)?),
        delivered_seq: Seq(r.try_get(8)?),
        members_count: r.try_get(5)?,
        members,
        settings: MemberSettings {
            muted_until: r.try_get(SETTINGS_AT)?,
            notify: Notify::parse(r.try_get::<_, &str>(SETTINGS_AT + 1)?).unwrap_or_default(),
        },
        encrypted: r.try_get(SETTINGS_AT + 2)?,
        device_epoch: r.try_get(SETTINGS_AT + 3)?,
    })
}

async fn member_views(db: &ClientWrapper, id: ConversationId) -> PgResult<Vec<MemberView>> {
    let rows = query(
        db,
        "SELECT m.user_id, u.username, u.display_name, m.role, m.read_seq, m.delivered_seq
         FROM members m JOIN users u ON u.id = m.user_id
         WHERE m.conversation_id = $1 AND m.left_seq IS NULL ORDER BY m.joined_seq, m.joined_at, m.user_id",
        &[&id.0],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get(3)?;
            Ok(MemberView {
                user_id: UserId(r.try_get(0)?),
                username: r.try_get(1)?,
                display_name: r.try_get(2)?,
                role: Role::parse(&role),
                read_seq: Seq(r.try_get(4)?),
                delivered_seq: Seq(r.try_get(5)?),
            })
        })
        .collect()
}

pub(crate) async fn view(
    db: &ClientWrapper,
    user: UserId,
    id: ConversationId,
    with_members: bool,
) -> PgResult<Option<ConversationView>> {
    let sql = view_sql("m.conversation_id = $1 AND m.user_id = $2 AND m.left_seq IS NULL");
    let Some(row) = query_opt(db, &sql, &[&id.0, &user.0]).await? else {
        return Ok(None);
    };
    let members = if with_members { Some(member_views(db, id).await?) } else { None };
    Ok(Some(view_row(&row, members)?))
}

/// [`view`] for each of `users` that is a current member: one statement for every member's
/// view, and the member list once.
pub(crate) async fn views(
    db: &ClientWrapper,
    id: ConversationId,
    users: &[UserId],
    with_members: bool,
) -> PgResult<Vec<(UserId, ConversationView)>> {
    let sql = view_sql("m.conversation_id = $1 AND m.user_id = ANY($2) AND m.left_seq IS NULL");
    let rows = query(db, &sql, &[&id.0, &crate::raw(users)]).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let members = if with_members { Some(member_views(db, id).await?) } else { None };
    let mut by_user = std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        by_user.insert(UserId(r.try_get::<_, i64>(USER_AT)?), view_row(r, members.clone())?);
    }
    Ok(users.iter().filter_map(|&u| by_user.remove(&u).map(|v| (u, v))).collect())
}

pub(crate) async fn list(db: &ClientWrapper, user: UserId) -> PgResult<Vec<ConversationView>> {
    let sql = view_sql("m.user_id = $1 AND m.left_seq IS NULL ORDER BY c.last_activity DESC, c.id DESC");
    query(db, &sql, &[&user.0]).await?.iter().map(|r| view_row(r, None)).collect()
}

pub(crate) async fn member_windows(db: &ClientWrapper, id: ConversationId) -> PgResult<Vec<MemberWindow>> {
    let rows =
        query(db, "SELECT user_id, joined_seq, left_seq FROM members WHERE conversation_id = $1", &[&id.0]).await?;
    rows.iter()
        .map(|r| {
            Ok(MemberWindow {
                user_id: UserId(r.try_get(0)?),
                joined_seq: Seq(r.try_get(1)?),
                left_seq: r.try_get::<_, Option<i64>>(2)?.map(Seq),
            })
        })
        .collect()
}

pub(crate) async fn contacts_among(db: &ClientWrapper, user: UserId, candidates: &[UserId]) -> PgResult<Vec<UserId>> {
    // In the order asked (repeats included), as the SQLite backend answers.
    let rows = query(
        db,
        "SELECT k.id FROM unnest($2::int8[]) WITH ORDINALITY AS k(id, ord)
         WHERE EXISTS (SELECT 1 FROM members a WHERE a.user_id = $1 AND a.left_seq IS NULL AND a.conversation_id IN
                 (SELECT b.conversation_id FROM members b WHERE b.user_id = k.id AND b.left_seq IS NULL))
         ORDER BY k.ord",
        &[&user.0, &crate::raw(candidates)],
    )
    .await?;
    rows.iter().map(|r| Ok(UserId(r.try_get(0)?))).collect()
}

/// The kinds counted as content (unread counts, `last_message`) as an SQL list, from core's rule.
pub(crate) fn content_kinds_sql() -> &'static str {
    static LIST: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("({})", parley_core::MessageKind::visible_content_list()));
    &LIST
}
