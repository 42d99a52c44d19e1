//! The log's rules as pure decisions: who may change a group and how, who inherits it, how big
//! it may grow, what an edit, delete or reaction may target, and where a pointer may move.
//!
//! Every backend reads what a rule needs with its own queries and calls the rule here, so the
//! rule is written once and a backend keeps only its queries. A refusal is a [`Refusal`], which
//! the storage boundary maps to its error (`parley-store` owns that mapping).

use crate::ids::Seq;
use std::collections::HashSet;

use crate::MessageKind;
use crate::ids::UserId;
use crate::limits::MAX_GROUP_MEMBERS;
use crate::model::{ConversationKind, Role};

/// Why a rule said no. The messages are shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The actor is not a current member, or what they name is not there for them: to them it
    /// does not exist.
    #[error("not found")]
    NotFound,
    /// The user never was a member of the conversation.
    #[error("not a member of this conversation")]
    NotMember,
    #[error("there is no user {0}")]
    NoSuchUser(UserId),
    #[error("only group conversations have titles, admins and member changes")]
    NotAGroup,
    #[error("only a group admin may do this")]
    NotAdmin,
    #[error("a group has at most {MAX_GROUP_MEMBERS} members")]
    GroupFull,
    #[error("a group keeps at least one admin")]
    LastAdmin,
    #[error("only the original sender may edit a message")]
    EditByOther,
    #[error("only text messages can be edited")]
    EditOfNonText,
    #[error("only the original sender or a group admin may delete a message")]
    DeleteByOther,
    #[error("seq {seq} is not in this conversation (last seq {upto})")]
    SeqOutOfRange { seq: Seq, upto: Seq },
    #[error(
        "an encrypted conversation takes only `encrypted` and `delete` messages: `{0}` belongs inside the ciphertext"
    )]
    PlaintextInEncrypted(&'static str),
    /// The sender encrypted for another device set than the conversation's current one.
    #[error("the conversation's devices changed (device_epoch {current}): share keys again and retry")]
    StaleDevices { current: i64 },
}

/// What an encrypted conversation lets through: only `encrypted` and `delete` (the rest belongs
/// inside the ciphertext), and an `encrypted` body that names a `device_epoch` must name the
/// current one.
pub fn encrypted_send(
    encrypted: bool,
    current_epoch: i64,
    kind: MessageKind,
    claimed_epoch: Option<i64>,
) -> Result<(), Refusal> {
    if encrypted && !matches!(kind, MessageKind::Encrypted | MessageKind::Delete) {
        return Err(Refusal::PlaintextInEncrypted(kind.as_str()));
    }
    match claimed_epoch {
        Some(e) if kind == MessageKind::Encrypted && e != current_epoch => {
            Err(Refusal::StaleDevices { current: current_epoch })
        }
        _ => Ok(()),
    }
}

/// What a member is in a conversation, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub kind: ConversationKind,
    pub role: Role,
}

impl Standing {
    pub fn is_group_admin(&self) -> bool {
        self.kind == ConversationKind::Group && self.role == Role::Admin
    }
}

/// A change to a group, by its actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupAct {
    Rename,
    AddMembers,
    /// Removing someone else, or leaving when it names the actor.
    Remove(UserId),
    SetRole,
}

/// Whether `actor` (whose standing is `None` unless they are a current member) may do `act`:
/// admins manage a group; any member may leave it; strangers learn nothing.
pub fn may_change_group(actor: UserId, standing: Option<Standing>, act: GroupAct) -> Result<(), Refusal> {
    let s = standing.ok_or(Refusal::NotFound)?;
    if s.kind != ConversationKind::Group {
        return Err(Refusal::NotAGroup);
    }
    let leaving = act == GroupAct::Remove(actor);
    if !leaving && s.role != Role::Admin {
        return Err(Refusal::NotAdmin);
    }
    Ok(())
}

/// The distinct ids of `ids` in the order given, without `except` (the creator, who is always a
/// member): repeats and the creator in a member list are ignored.
pub fn distinct_users(ids: &[UserId], except: Option<UserId>) -> Vec<UserId> {
    let mut seen = HashSet::new();
    ids.iter().copied().filter(|&id| Some(id) != except && seen.insert(id)).collect()
}

/// The first of `wanted` that is not among the users that exist.
pub fn all_exist(wanted: &[UserId], existing: &HashSet<UserId>) -> Result<(), Refusal> {
    match wanted.iter().find(|id| !existing.contains(id)) {
        Some(&missing) => Err(Refusal::NoSuchUser(missing)),
        None => Ok(()),
    }
}

/// Whether a group of `members` may take `joining` more.
pub fn group_fits(members: usize, joining: usize) -> Result<(), Refusal> {
    if members + joining > MAX_GROUP_MEMBERS { Err(Refusal::GroupFull) } else { Ok(()) }
}

/// Who of `candidates` (existing users, distinct) joins a group of `members_count` members of
/// whom `present` are among the candidates: those not already members. Empty means nothing is
/// written; past the cap nothing is.
pub fn joining(candidates: Vec<UserId>, present: &HashSet<UserId>, members_count: i64) -> Result<Vec<UserId>, Refusal> {
    let new: Vec<UserId> = candidates.into_iter().filter(|u| !present.contains(u)).collect();
    if !new.is_empty() {
        group_fits(usize::try_from(members_count).unwrap_or(0), new.len())?;
    }
    Ok(new)
}

/// What setting a member's role does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleChange {
    /// They already have it: nothing is written.
    Unchanged,
    /// Write the new role and a `role_changed` entry.
    Apply,
}

/// Setting a member whose role is `current` to `wanted`, in a group with `admins` admins: a
/// group keeps at least one admin.
pub fn role_change(current: Role, wanted: Role, admins: i64) -> Result<RoleChange, Refusal> {
    if current == wanted {
        return Ok(RoleChange::Unchanged);
    }
    if wanted == Role::Member && admins <= 1 {
        return Err(Refusal::LastAdmin);
    }
    Ok(RoleChange::Apply)
}

/// A current member's seat in a group, for seniority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seat {
    pub user_id: UserId,
    pub role: Role,
    pub joined_seq: Seq,
    pub joined_at: i64,
}

/// Who is promoted after someone left or was removed: nobody while an admin remains (or nobody
/// does); otherwise the longest-standing member (earliest join, then earliest join time, then
/// lowest id), so the group keeps an admin.
pub fn heir(remaining: &[Seat]) -> Option<UserId> {
    if remaining.iter().any(|s| s.role == Role::Admin) {
        return None;
    }
    remaining.iter().min_by_key(|s| (s.joined_seq, s.joined_at, s.user_id)).map(|s| s.user_id)
}

/// The entry an `edit`, `delete` or `reaction` refers to, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub seq: Seq,
    pub author: UserId,
    pub kind: MessageKind,
    /// A `delete` refers to it.
    pub deleted: bool,
}

/// Whether `sender` (a current member who joined at `joined`, with `standing`) may send `kind`
/// about `target` (`None` if there is no entry at that seq): the target is a content entry the
/// sender can see and that is not deleted; only its author edits it, and only text; its author
/// or a group admin deletes it; anyone who sees it reacts.
pub fn may_target(
    kind: MessageKind,
    sender: UserId,
    joined: i64,
    standing: Standing,
    target: Option<Target>,
) -> Result<(), Refusal> {
    let t = target.filter(|t| t.seq >= Seq(joined) && t.kind.is_visible_content() && !t.deleted);
    let Some(t) = t else { return Err(Refusal::NotFound) };
    match kind {
        MessageKind::Edit if t.author != sender => Err(Refusal::EditByOther),
        MessageKind::Edit if t.kind != MessageKind::Text => Err(Refusal::EditOfNonText),
        MessageKind::Delete if t.author != sender && !standing.is_group_admin() => Err(Refusal::DeleteByOther),
        _ => Ok(()),
    }
}

/// Whether a member may move a delivery or read pointer to `seq`, given the last seq they may
/// see (`None` if they never were a member).
pub fn pointer_move(upto: Option<Seq>, seq: Seq) -> Result<(), Refusal> {
    let upto = upto.ok_or(Refusal::NotMember)?;
    if seq < Seq::ZERO || seq > upto {
        return Err(Refusal::SeqOutOfRange { seq, upto });
    }
    Ok(())
}

/// The seqs a history page may hold, both bounds exclusive: `above < seq < below`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryBounds {
    pub above: Seq,
    pub below: Seq,
    /// Read forward from `above` (the oldest first); otherwise the page is the newest entries
    /// below `below`, still returned oldest first.
    pub forward: bool,
}

/// The page bounds for a member who joined at `joined` in a log whose last seq is `last`:
/// nothing from before they joined, nothing past the end, forward from `after_seq` when given.
pub fn history_bounds(joined: Seq, last: Seq, after_seq: Option<Seq>, before_seq: Option<Seq>) -> HistoryBounds {
    let above = joined - 1;
    HistoryBounds {
        above: after_seq.map_or(above, |a| a.max(above)),
        below: before_seq.unwrap_or(Seq(i64::MAX)).min(last + 1),
        forward: after_seq.is_some(),
    }
}

/// A content entry's body with its latest edit folded in, as `last_message` shows it: the edit's
/// `text` and `"edited": true`. A body that is not a JSON object is left as it is.
pub fn fold_edit(body: &str, edit: &str) -> String {
    let (Ok(mut folded), Ok(edit)) =
        (serde_json::from_str::<serde_json::Value>(body), serde_json::from_str::<serde_json::Value>(edit))
    else {
        return body.to_owned();
    };
    let Some(fields) = folded.as_object_mut() else { return body.to_owned() };
    fields.insert("text".into(), edit.get("text").cloned().unwrap_or_default());
    fields.insert("edited".into(), true.into());
    folded.to_string()
}

/// The key that makes the direct conversation of two users (in either order) one.
pub fn direct_key(a: UserId, b: UserId) -> String {
    format!("{}:{}", a.min(b), a.max(b))
}

/// How far back `last_message` looks: the latest this many content entries at most, so a run of
/// deleted messages costs a bounded scan (a conversation whose latest ones are all deleted shows
/// none).
pub const LAST_MESSAGE_SCAN: i64 = 16;

/// The last message a member who joined at `joined` sees, given the last message of the member
/// who joined earliest (`earliest`, found scanning the latest [`LAST_MESSAGE_SCAN`] content entries
/// from that member's join): the entries a later member sees are a prefix of the earlier one's,
/// newest first, so theirs is the same entry if they see it, else none.
pub fn last_message_for<M>(earliest: Option<&M>, seq_of: impl Fn(&M) -> i64, joined: i64) -> Option<&M> {
    earliest.filter(|m| seq_of(m) >= joined)
}

#[cfg(test)]
mod encryption_tests {
    use super::*;

    #[test]
    fn encrypted_conversations_take_ciphertext_at_the_current_epoch() {
        assert!(encrypted_send(true, 3, MessageKind::Encrypted, Some(3)).is_ok());
        assert!(encrypted_send(true, 3, MessageKind::Encrypted, None).is_ok());
        assert!(encrypted_send(true, 3, MessageKind::Delete, None).is_ok());
        for k in [MessageKind::Text, MessageKind::Media, MessageKind::Edit, MessageKind::Reaction] {
            assert!(matches!(encrypted_send(true, 3, k, None), Err(Refusal::PlaintextInEncrypted(_))));
        }
        assert_eq!(encrypted_send(true, 3, MessageKind::Encrypted, Some(2)), Err(Refusal::StaleDevices { current: 3 }));
        assert_eq!(
            encrypted_send(false, 1, MessageKind::Encrypted, Some(0)),
            Err(Refusal::StaleDevices { current: 1 })
        );
        assert!(encrypted_send(false, 1, MessageKind::Text, None).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(ids: &[i64]) -> Vec<UserId> {
        ids.iter().map(|&i| UserId(i)).collect()
    }

    const GROUP_ADMIN: Standing = Standing { kind: ConversationKind::Group, role: Role::Admin };
    const GROUP_MEMBER: Standing = Standing { kind: ConversationKind::Group, role: Role::Member };
    const DIRECT: Standing = Standing { kind: ConversationKind::Direct, role: Role::Member };

    #[test]
    fn admins_manage_members_leave_strangers_see_nothing() {
        for act in [GroupAct::Rename, GroupAct::AddMembers, GroupAct::Remove(UserId(2)), GroupAct::SetRole] {
            assert_eq!(may_change_group(UserId(1), Some(GROUP_ADMIN), act), Ok(()));
            assert_eq!(may_change_group(UserId(1), Some(GROUP_MEMBER), act), Err(Refusal::NotAdmin));
            assert_eq!(may_change_group(UserId(1), None, act), Err(Refusal::NotFound));
            assert_eq!(may_change_group(UserId(1), Some(DIRECT), act), Err(Refusal::NotAGroup));
        }
        assert_eq!(may_change_group(UserId(1), Some(GROUP_MEMBER), GroupAct::Remove(UserId(1))), Ok(()), "leaving");
        assert_eq!(may_change_group(UserId(1), Some(DIRECT), GroupAct::Remove(UserId(1))), Err(Refusal::NotAGroup));
    }

    #[test]
    fn member_lists_ignore_repeats_and_the_creator_and_are_capped() {
        assert_eq!(distinct_users(&u(&[3, 1, 3, 2, 1]), Some(UserId(1))), u(&[3, 2]));
        assert_eq!(distinct_users(&u(&[3, 3]), None), u(&[3]));
        let existing: HashSet<UserId> = [UserId(2), UserId(3)].into();
        assert_eq!(all_exist(&u(&[3, 9, 2, 8]), &existing), Err(Refusal::NoSuchUser(UserId(9))));
        assert_eq!(group_fits(1, MAX_GROUP_MEMBERS - 1), Ok(()));
        assert_eq!(group_fits(1, MAX_GROUP_MEMBERS), Err(Refusal::GroupFull));
        let present: HashSet<UserId> = [UserId(2)].into();
        assert_eq!(joining(vec![UserId(3), UserId(2)], &present, 5), Ok(vec![UserId(3)]));
        assert_eq!(
            joining(vec![UserId(2)], &present, MAX_GROUP_MEMBERS as i64),
            Ok(vec![]),
            "nothing new, nothing checked"
        );
        assert_eq!(joining(vec![UserId(3)], &present, MAX_GROUP_MEMBERS as i64), Err(Refusal::GroupFull));
    }

    #[test]
    fn a_group_keeps_an_admin() {
        assert_eq!(role_change(Role::Admin, Role::Admin, 1), Ok(RoleChange::Unchanged));
        assert_eq!(role_change(Role::Admin, Role::Member, 1), Err(Refusal::LastAdmin));
        assert_eq!(role_change(Role::Admin, Role::Member, 2), Ok(RoleChange::Apply));
        assert_eq!(role_change(Role::Member, Role::Admin, 1), Ok(RoleChange::Apply));
        let seat = |user_id, role, joined_seq, joined_at| Seat { user_id, role, joined_seq, joined_at };
        let members = [
            seat(UserId(9), Role::Member, Seq(3), 10),
            seat(UserId(8), Role::Member, Seq(1), 20),
            seat(UserId(7), Role::Member, Seq(1), 20),
            seat(UserId(6), Role::Member, Seq(1), 30),
        ];
        assert_eq!(heir(&members), Some(UserId(7)), "earliest join, then join time, then id");
        assert_eq!(
            heir(&[seat(UserId(9), Role::Member, Seq(1), 1), seat(UserId(5), Role::Admin, Seq(4), 4)]),
            None,
            "an admin remains"
        );
        assert_eq!(heir(&[]), None);
    }

    #[test]
    fn edits_deletes_and_reactions_target_visible_content() {
        let text = |author| Some(Target { seq: Seq(5), author, kind: MessageKind::Text, deleted: false });
        let media = Some(Target { seq: Seq(5), author: UserId(2), kind: MessageKind::Media, deleted: false });
        assert_eq!(may_target(MessageKind::Edit, UserId(2), 1, GROUP_MEMBER, text(UserId(2))), Ok(()));
        assert_eq!(
            may_target(MessageKind::Edit, UserId(3), 1, GROUP_ADMIN, text(UserId(2))),
            Err(Refusal::EditByOther)
        );
        assert_eq!(may_target(MessageKind::Edit, UserId(2), 1, GROUP_MEMBER, media), Err(Refusal::EditOfNonText));
        assert_eq!(
            may_target(MessageKind::Delete, UserId(3), 1, GROUP_MEMBER, text(UserId(2))),
            Err(Refusal::DeleteByOther)
        );
        assert_eq!(may_target(MessageKind::Delete, UserId(3), 1, DIRECT, text(UserId(2))), Err(Refusal::DeleteByOther));
        assert_eq!(may_target(MessageKind::Delete, UserId(3), 1, GROUP_ADMIN, text(UserId(2))), Ok(()));
        assert_eq!(may_target(MessageKind::Reaction, UserId(3), 1, GROUP_MEMBER, text(UserId(2))), Ok(()));
        assert_eq!(
            may_target(MessageKind::Reaction, UserId(3), 6, GROUP_MEMBER, text(UserId(2))),
            Err(Refusal::NotFound),
            "before join"
        );
        assert_eq!(may_target(MessageKind::Reaction, UserId(3), 1, GROUP_MEMBER, None), Err(Refusal::NotFound));
        let system =
            Some(Target { seq: Seq(1), author: UserId(2), kind: MessageKind::ConversationCreated, deleted: false });
        assert_eq!(may_target(MessageKind::Edit, UserId(2), 1, GROUP_MEMBER, system), Err(Refusal::NotFound));
        let deleted = Some(Target { seq: Seq(5), author: UserId(2), kind: MessageKind::Text, deleted: true });
        assert_eq!(may_target(MessageKind::Edit, UserId(2), 1, GROUP_MEMBER, deleted), Err(Refusal::NotFound));
    }

    #[test]
    fn history_stays_in_the_window() {
        let b = |above, below, forward| HistoryBounds { above, below, forward };
        assert_eq!(history_bounds(Seq(3), Seq(20), None, None), b(Seq(2), Seq(21), false));
        assert_eq!(history_bounds(Seq(3), Seq(20), Some(Seq(0)), Some(Seq(10))), b(Seq(2), Seq(10), true));
        assert_eq!(history_bounds(Seq(3), Seq(20), Some(Seq(10)), Some(Seq(99))), b(Seq(10), Seq(21), true));
    }

    #[test]
    fn pointers_stay_in_the_window() {
        assert_eq!(pointer_move(None, Seq(1)), Err(Refusal::NotMember));
        assert_eq!(pointer_move(Some(Seq(5)), Seq(5)), Ok(()));
        assert_eq!(pointer_move(Some(Seq(5)), Seq(0)), Ok(()));
        assert_eq!(pointer_move(Some(Seq(5)), Seq(6)), Err(Refusal::SeqOutOfRange { seq: Seq(6), upto: Seq(5) }));
        assert_eq!(pointer_move(Some(Seq(5)), Seq(-1)), Err(Refusal::SeqOutOfRange { seq: Seq(-1), upto: Seq(5) }));
        assert_eq!(
            Refusal::SeqOutOfRange { seq: Seq(6), upto: Seq(5) }.to_string(),
            "seq 6 is not in this conversation (last seq 5)"
        );
    }

    #[test]
    fn edits_fold_into_the_shown_body() {
        assert_eq!(
            fold_edit(r#"{"text":"helo","reply_to_seq":2}"#, r#"{"target_seq":3,"text":"hello"}"#),
            r#"{"edited":true,"reply_to_seq":2,"text":"hello"}"#
        );
        assert_eq!(fold_edit("not json", r#"{"text":"x"}"#), "not json");
        assert_eq!(direct_key(UserId(9), UserId(3)), "3:9");
        assert_eq!(direct_key(UserId(3), UserId(9)), direct_key(UserId(9), UserId(3)));
    }

    #[test]
    fn later_members_see_the_same_last_message_or_none() {
        let last = (7_i64, "m");
        assert_eq!(last_message_for(Some(&last), |m| m.0, 3), Some(&last));
        assert_eq!(last_message_for(Some(&last), |m| m.0, 7), Some(&last));
        assert_eq!(last_message_for(Some(&last), |m| m.0, 8), None);
    }
}
