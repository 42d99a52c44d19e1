//! Domain records to wire types, at the edge.

use parley_core::model;
use parley_proto as wire;
use parley_proto::Id;
use serde_json::value::RawValue;

pub(crate) fn message(m: &model::Message) -> wire::Message {
    wire::Message {
        conversation_id: Id(m.conversation_id.0),
        seq: m.seq.0,
        message_id: Id(m.message_id.0),
        sender_id: Id(m.sender_id.0),
        sender_device_id: m.sender_device_id.map(|d| Id(d.0)),
        client_id: m.client_id.clone(),
        ts: m.ts,
        kind: m.kind.as_str().to_owned(),
        // The store only holds bodies the server wrote as JSON; a corrupt one is shown as {}.
        body: RawValue::from_string(m.body.clone())
            .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("{} is JSON")),
    }
}

pub(crate) fn conversation(c: &model::ConversationView) -> wire::Conversation {
    wire::Conversation {
        conversation_id: Id(c.id.0),
        kind: c.kind.as_str().to_owned(),
        title: c.title.clone(),
        created_at: c.created_at,
        last_seq: c.last_seq.0,
        last_message: c.last_message.as_ref().map(message),
        unread_count: c.unread_count,
        read_seq: c.read_seq.0,
        delivered_seq: c.delivered_seq.0,
        members_count: c.members_count,
        members: c.members.as_ref().map(|ms| {
            ms.iter()
                .map(|m| wire::Member {
                    user_id: Id(m.user_id.0),
                    username: m.username.clone(),
                    display_name: m.display_name.clone(),
                    role: m.role.as_str().to_owned(),
                    read_seq: m.read_seq.0,
                    delivered_seq: m.delivered_seq.0,
                })
                .collect()
        }),
        settings: settings(c.settings),
        encrypted: c.encrypted,
        device_epoch: c.device_epoch,
    }
}

pub(crate) fn user(u: &model::User) -> wire::rest::User {
    wire::rest::User {
        user_id: Id(u.id.0),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        last_seen_visible: None,
        dnd_until: None,
    }
}

pub(crate) fn device(d: &model::Device) -> wire::rest::Device {
    wire::rest::Device {
        device_id: Id(d.id.0),
        name: d.name.clone(),
        created_at: d.created_at,
        last_active_at: d.last_active_at,
    }
}

pub(crate) fn settings(s: parley_core::push::MemberSettings) -> wire::ConversationSettings {
    wire::ConversationSettings { muted_until: s.muted_until, notify: s.notify.as_str().to_owned() }
}
