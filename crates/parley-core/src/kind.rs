//! Message kinds of protocol version 1.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Text,
    Edit,
    Delete,
    Reaction,
    Media,
    Encrypted,
    ConversationCreated,
    MembersAdded,
    MemberRemoved,
    MemberLeft,
    TitleChanged,
    /// An addition to version 1: a member was made admin or member (by an admin, or by the
    /// server when the last admin left).
    RoleChanged,
}

impl MessageKind {
    pub const ALL: [MessageKind; 12] = [
        MessageKind::Text,
        MessageKind::Edit,
        MessageKind::Delete,
        MessageKind::Reaction,
        MessageKind::Media,
        MessageKind::Encrypted,
        MessageKind::ConversationCreated,
        MessageKind::MembersAdded,
        MessageKind::MemberRemoved,
        MessageKind::MemberLeft,
        MessageKind::TitleChanged,
        MessageKind::RoleChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Edit => "edit",
            MessageKind::Delete => "delete",
            MessageKind::Reaction => "reaction",
            MessageKind::Media => "media",
            MessageKind::Encrypted => "encrypted",
            MessageKind::ConversationCreated => "conversation_created",
            MessageKind::MembersAdded => "members_added",
            MessageKind::MemberRemoved => "member_removed",
            MessageKind::MemberLeft => "member_left",
            MessageKind::TitleChanged => "title_changed",
            MessageKind::RoleChanged => "role_changed",
        }
    }

    pub fn parse(s: &str) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Written by the server only; a client sending one is refused.
    pub fn is_system(self) -> bool {
        matches!(
            self,
            MessageKind::ConversationCreated
                | MessageKind::MembersAdded
                | MessageKind::MemberRemoved
                | MessageKind::MemberLeft
                | MessageKind::TitleChanged
                | MessageKind::RoleChanged
        )
    }

    /// Counted by `unread_count` and shown as a conversation's `last_message`.
    pub fn is_visible_content(self) -> bool {
        matches!(self, MessageKind::Text | MessageKind::Media | MessageKind::Encrypted)
    }

    /// The kinds for which [`MessageKind::is_visible_content`] holds, for backends that filter
    /// by kind in their queries.
    pub fn visible_content() -> impl Iterator<Item = MessageKind> {
        MessageKind::ALL.into_iter().filter(|k| k.is_visible_content())
    }

    /// [`MessageKind::visible_content`] as a quoted, comma-separated list of names
    /// (`'text','media','encrypted'`), the form a query's `IN (...)` takes. Names are plain ASCII
    /// words, so there is nothing to escape.
    pub fn visible_content_list() -> String {
        MessageKind::visible_content().map(|k| format!("'{}'", k.as_str())).collect::<Vec<_>>().join(",")
    }

    /// After an entry of this kind a conversation's members or their roles differ, so what is
    /// kept about them (who receives what, each member's view) must be read again.
    /// Every system kind but `title_changed` does.
    pub fn changes_members(self) -> bool {
        self.is_system() && self != MessageKind::TitleChanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips() {
        for k in MessageKind::ALL {
            assert_eq!(MessageKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(MessageKind::parse("nope"), None);
    }

    #[test]
    fn visible_content_is_text_media_encrypted() {
        let kinds: Vec<&str> = MessageKind::visible_content().map(MessageKind::as_str).collect();
        assert_eq!(kinds, ["text", "media", "encrypted"]);
        assert_eq!(MessageKind::visible_content_list(), "'text','media','encrypted'");
    }

    #[test]
    fn membership_kinds() {
        let kinds: Vec<&str> =
            MessageKind::ALL.into_iter().filter(|k| k.changes_members()).map(MessageKind::as_str).collect();
        assert_eq!(kinds, ["conversation_created", "members_added", "member_removed", "member_left", "role_changed"]);
    }
}
