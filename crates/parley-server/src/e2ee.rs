//! End-to-end encryption's live side: telling users about device list changes, waking a
//! device's connections when to-device payloads are queued for it (they read them from the
//! store, in order), and telling a device its one-time keys run low.

use bytes::Bytes;
use parley_core::ids::{DeviceId, UserId};
use parley_proto::Id;
use parley_proto::frames::{DeviceListChanged, KeysLow, ServerFrame};
use parley_router::Outbound;

use crate::state::App;

/// `device_list_changed` to `user` and everyone who shares a conversation with them. The
/// lookup runs beside fanout, never in its way.
pub(crate) fn device_list_changed(app: &std::sync::Arc<App>, user: UserId, list_version: i64) {
    let app2 = app.clone();
    app.tasks.spawn(async move {
        let users = match app2.store.co_members(user).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell who shares a conversation with a user");
                return;
            }
        };
        let json = ServerFrame::DeviceListChanged(DeviceListChanged { user_id: Id(user.0), list_version }).to_json();
        app2.router.deliver(&users, &Outbound { json: Bytes::from(json), position: None, device: None });
    });
}

/// An empty frame for a device: "read your to-device queue". The payloads themselves are read
/// from the store by the connection, so they arrive in order and once, whatever routing does.
pub(crate) fn poke(app: &App, devices: &[(UserId, DeviceId)]) {
    for &(user, device) in devices {
        app.router.deliver(&[user], &Outbound { json: Bytes::new(), position: None, device: Some(device) });
    }
}

pub(crate) fn keys_low(app: &App, user: UserId, device: DeviceId, count: u32) {
    let json = ServerFrame::KeysLow(KeysLow { one_time_key_count: count }).to_json();
    app.router.deliver(&[user], &Outbound { json: Bytes::from(json), position: None, device: Some(device) });
}
