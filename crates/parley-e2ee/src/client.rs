//! [`E2ee`]: the E2EE layer over the SDK. It keeps the device's keys published, shares Megolm
//! keys with every device of every member over Olm to-device messages, encrypts sends (and
//! retries `stale_devices` refusals with the same `client_id` after re-reading device lists),
//! decrypts what arrives, asks for keys it lacks and answers such requests from members.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parley_client::proto::frames::{Sent, ToDeviceIn, ToDeviceOut};
use parley_client::proto::rest::DeviceRef;
use parley_client::proto::{ErrorCode, Id, Message};
use parley_client::{Client, Connection, Event, new_client_id};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::attachment::{self, EncryptedFile};
use crate::error::{Error, Result};
use crate::machine::{Decrypted, DeviceKeys, DeviceList, GroupDecryptError, Machine, now_ms};
use crate::safety;
use crate::store::Store;

/// One-time keys a device keeps on the server.
pub const ONE_TIME_KEYS: u32 = 50;
/// Below this many the device uploads more (the server's `keys_low` comes earlier still).
pub const KEYS_LOW_WATER: u32 = 25;
/// How often one send is tried when the conversation's devices keep changing under it.
const SEND_ATTEMPTS: u32 = 5;
/// Payloads per `to_device` frame: an Olm payload is well under 1 KiB, a frame at most 64 KiB.
const TO_DEVICE_BATCH: usize = 40;
/// Most devices in one `POST /v1/keys/claim`.
const CLAIM_BATCH: usize = 1024;

/// What [`E2ee::handle`] makes of a connection event.
#[derive(Clone, Debug)]
pub enum E2eeEvent {
    /// An `encrypted` message, decrypted and checked (possibly later than it arrived, once its
    /// key came).
    Message(Box<Decrypted>),
    /// An `encrypted` message that cannot be read (now). When its key is missing, a
    /// `room_key_request` went to the sender and a [`E2eeEvent::Message`] follows if the key
    /// comes.
    Undecryptable { conversation_id: Id, seq: i64, sender_id: Id, waiting_for_key: bool, reason: String },
    /// A user's devices changed (added, removed, new keys): their safety number with everyone
    /// changed. Show a warning in these conversations (those this layer has seen).
    DevicesChanged { user_id: Id, conversation_ids: Vec<Id> },
}

#[derive(Clone, Debug)]
struct ConvInfo {
    encrypted: bool,
    epoch: i64,
    members: Vec<Id>,
}

struct Inner {
    machine: Machine,
    /// Conversations as last read (dropped when they change: membership, device lists).
    convs: HashMap<Id, ConvInfo>,
    /// Users whose device list must be read again before it is used.
    stale_users: HashSet<Id>,
    /// Messages waiting for their session's key: `(sender_key, session_id)` → messages.
    pending: HashMap<(String, String), Vec<Message>>,
    /// Sessions already asked for (once per run).
    requested: HashSet<(String, String)>,
    /// Events found outside `handle` (a device change seen while sending), given out by the
    /// next `handle`.
    queued: Vec<E2eeEvent>,
}

/// The E2EE layer of one signed-in device. Feed it every [`Event`] of the connection through
/// [`E2ee::handle`]; send in encrypted conversations through [`E2ee::send`].
pub struct E2ee {
    client: Client,
    conn: Connection,
    inner: Mutex<Inner>,
    /// Sends refused as `stale_devices` and retried.
    stale_retries: AtomicU64,
}

impl std::fmt::Debug for E2ee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2ee")
            .field("user_id", &self.conn.user_id())
            .field("device_id", &self.conn.device_id())
            .finish()
    }
}

fn is_membership_change(kind: &str) -> bool {
    matches!(kind, "members_added" | "member_removed" | "member_left" | "conversation_created")
}

impl E2ee {
    /// Opens the device's state in `store` (a new Olm account the first time), publishes its
    /// identity and keys as needed, and tops up one-time keys.
    pub async fn open(client: Client, conn: Connection, store: Store) -> Result<E2ee> {
        let machine = Machine::open(store, conn.user_id(), conn.device_id())?;
        let e2ee = E2ee {
            client,
            conn,
            inner: Mutex::new(Inner {
                machine,
                convs: HashMap::new(),
                stale_users: HashSet::new(),
                pending: HashMap::new(),
                requested: HashSet::new(),
                queued: Vec::new(),
            }),
            stale_retries: AtomicU64::new(0),
        };
        e2ee.ensure_keys().await?;
        Ok(e2ee)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How many sends were refused as `stale_devices` (and retried after sharing keys anew).
    pub fn stale_retries(&self) -> u64 {
        self.stale_retries.load(Ordering::Relaxed)
    }

    /// This device's identity keys.
    pub async fn keys(&self) -> DeviceKeys {
        self.inner.lock().await.machine.keys()
    }

    /// Publishes the identity (once) and keeps [`ONE_TIME_KEYS`] one-time keys and a fallback
    /// key on the server, uploading when fewer than [`KEYS_LOW_WATER`] are left. Returns the
    /// server's count.
    pub async fn ensure_keys(&self) -> Result<u32> {
        let mut inner = self.inner.lock().await;
        self.ensure_keys_locked(&mut inner).await
    }

    async fn ensure_keys_locked(&self, inner: &mut Inner) -> Result<u32> {
        let (one_time, fallback, count) = if inner.machine.identity_uploaded() {
            let c = self.client.keys_count().await?;
            let low = c.one_time_key_count < KEYS_LOW_WATER;
            let more = if low { ONE_TIME_KEYS.saturating_sub(c.one_time_key_count) } else { 0 };
            (more, !c.fallback_key, c.one_time_key_count)
        } else {
            (ONE_TIME_KEYS, true, 0)
        };
        if one_time == 0 && !fallback {
            return Ok(count);
        }
        let keys = inner.machine.keys_for_upload(one_time as usize, fallback)?;
        let uploaded = match self.client.put_keys(&keys).await {
            Err(e) if e.code() == Some(ErrorCode::Conflict) && keys.identity.is_some() => {
                return Err(Error::Olm(
                    "this device published other keys before (its E2EE state was lost?): sign in again, as a new \
                     device"
                        .into(),
                ));
            }
            other => other?,
        };
        inner.machine.mark_published()?;
        debug!(count = uploaded.one_time_key_count, "published keys");
        Ok(uploaded.one_time_key_count)
    }

    /// Handles one event of the connection: decrypts `encrypted` messages, takes in to-device
    /// payloads (and acknowledges them), follows device lists and membership, tops up keys on
    /// `keys_low`. Everything else gives nothing.
    pub async fn handle(&self, event: &Event) -> Result<Vec<E2eeEvent>> {
        let mut inner = self.inner.lock().await;
        let mut out = Vec::new();
        match event {
            Event::Message(m) if m.kind == "encrypted" => self.on_encrypted(&mut inner, m, &mut out).await,
            Event::Message(m) if is_membership_change(&m.kind) => {
                inner.convs.remove(&m.conversation_id);
            }
            Event::ToDevice(t) => {
                if let Err(e) = self.on_to_device(&mut inner, t, &mut out).await {
                    warn!(error = %e, id = %t.id, "dropping a to-device payload");
                }
                // Handled or dropped: either way it must not come again.
                self.conn.to_device_ack(t.id.clone()).await?;
            }
            Event::DeviceListChanged(d) => {
                if inner.machine.device_list(d.user_id).map(|l| l.list_version) != Some(d.list_version) {
                    inner.stale_users.insert(d.user_id);
                    if let Err(e) = self.refresh_devices(&mut inner, d.user_id).await {
                        debug!(error = %e, user = %d.user_id, "cannot read the device list now");
                    }
                }
                inner.convs.retain(|_, c| !c.members.contains(&d.user_id));
            }
            Event::KeysLow(_) => {
                self.ensure_keys_locked(&mut inner).await?;
            }
            Event::Conversation(c) => match &c.members {
                Some(members) => {
                    let info = ConvInfo {
                        encrypted: c.encrypted,
                        epoch: c.device_epoch,
                        members: members.iter().map(|m| m.user_id).collect(),
                    };
                    inner.convs.insert(c.conversation_id, info);
                }
                None => {
                    inner.convs.remove(&c.conversation_id);
                }
            },
            Event::Reconnected => {
                // Changes announced while away were missed: read everything again when used.
                inner.convs.clear();
                let users = inner.machine.known_users();
                inner.stale_users.extend(users);
            }
            _ => {}
        }
        let mut events = std::mem::take(&mut inner.queued);
        events.append(&mut out);
        Ok(events)
    }

    /// Decrypts one `encrypted` message (from history, say); a missing key is asked for.
    pub async fn decrypt(&self, m: &Message) -> Result<Decrypted> {
        let mut inner = self.inner.lock().await;
        let mut out = Vec::new();
        self.on_encrypted(&mut inner, m, &mut out).await;
        match out.pop() {
            Some(E2eeEvent::Message(d)) => Ok(*d),
            Some(E2eeEvent::Undecryptable { reason, .. }) => Err(Error::Decrypt(reason)),
            _ => Err(Error::Decrypt("not an encrypted message".into())),
        }
    }

    async fn on_encrypted(&self, inner: &mut Inner, m: &Message, out: &mut Vec<E2eeEvent>) {
        let undecryptable = |waiting_for_key, reason: String| E2eeEvent::Undecryptable {
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_id: m.sender_id,
            waiting_for_key,
            reason,
        };
        match inner.machine.group_decrypt(m) {
            Ok(d) => out.push(E2eeEvent::Message(Box::new(d))),
            Err(GroupDecryptError::MissingSession { sender_key, session_id }) => {
                let key = (sender_key, session_id.clone());
                inner.pending.entry(key.clone()).or_default().push(m.clone());
                if inner.requested.insert(key)
                    && let Err(e) = self.request_key(inner, m, &session_id).await
                {
                    debug!(error = %e, "cannot ask for a room key");
                }
                out.push(undecryptable(true, "waiting for the message's key".into()));
            }
            Err(GroupDecryptError::Invalid(e)) => {
                warn!(conv = %m.conversation_id, seq = m.seq, error = %e, "undecryptable message");
                out.push(undecryptable(false, e.to_string()));
            }
        }
    }

    /// Sends `room_key_request` to the device that sent `m`.
    async fn request_key(&self, inner: &mut Inner, m: &Message, session_id: &str) -> Result<()> {
        let Some(device_id) = m.sender_device_id else {
            return Ok(());
        };
        let Some(device) = self.device(inner, m.sender_id, device_id).await? else {
            return Ok(());
        };
        let mut content = Map::new();
        content.insert("conversation_id".into(), json!(m.conversation_id));
        content.insert("session_id".into(), json!(session_id));
        self.send_olm(inner, &[(m.sender_id, device)], "room_key_request", &content).await?;
        Ok(())
    }

    async fn on_to_device(&self, inner: &mut Inner, t: &ToDeviceIn, out: &mut Vec<E2eeEvent>) -> Result<()> {
        let payload: Value = serde_json::from_str(t.payload.get())?;
        let Some(sender) = self.device(inner, t.sender_user_id, t.sender_device_id).await? else {
            return Err(Error::Decrypt(format!("unknown device {} of {}", t.sender_device_id, t.sender_user_id)));
        };
        let plain = inner.machine.olm_decrypt(t.sender_user_id, &sender, &payload)?;
        let field = |f: &str| plain.get(f).and_then(Value::as_str).map(str::to_owned);
        let conv = field("conversation_id").map(|c| Id::parse(&c));
        match (plain["type"].as_str(), conv, field("session_id")) {
            (Some("room_key"), Some(conv), Some(session_id)) => {
                let key = field("session_key").ok_or_else(|| Error::Decrypt("room_key without session_key".into()))?;
                if inner.machine.add_inbound(conv, t.sender_user_id, &sender, &session_id, &key)? {
                    self.retry_pending(inner, &sender.curve25519, &session_id, out);
                }
            }
            (Some("room_key_request"), Some(conv), Some(session_id)) => {
                self.answer_request(inner, t.sender_user_id, sender, conv, &session_id).await?;
            }
            (ty, ..) => debug!(?ty, "ignoring a to-device payload"),
        }
        Ok(())
    }

    fn retry_pending(&self, inner: &mut Inner, sender_key: &str, session_id: &str, out: &mut Vec<E2eeEvent>) {
        let key = (sender_key.to_owned(), session_id.to_owned());
        let Some(waiting) = inner.pending.remove(&key) else {
            return;
        };
        let mut still = Vec::new();
        for m in waiting {
            match inner.machine.group_decrypt(&m) {
                Ok(d) => out.push(E2eeEvent::Message(Box::new(d))),
                Err(GroupDecryptError::MissingSession { .. }) => still.push(m),
                Err(GroupDecryptError::Invalid(e)) => {
                    warn!(conv = %m.conversation_id, seq = m.seq, error = %e, "undecryptable message");
                }
            }
        }
        if !still.is_empty() {
            inner.pending.insert(key, still);
        }
    }

    /// Shares a session this device made with a device that asked for it: only while its user
    /// is a member, and only if that user was a member when the session was made.
    async fn answer_request(
        &self,
        inner: &mut Inner,
        user_id: Id,
        device: DeviceKeys,
        conv: Id,
        session_id: &str,
    ) -> Result<()> {
        let Some(sent) = inner.machine.sent_session(session_id)? else {
            return Ok(());
        };
        if sent.conversation_id != conv || !sent.members.contains(&user_id) {
            debug!(%user_id, "refusing a room key request: not a member when the session was made");
            return Ok(());
        }
        let info = self.conv_info(inner, conv, true).await?;
        if !info.members.contains(&user_id) {
            debug!(%user_id, "refusing a room key request: not a member");
            return Ok(());
        }
        let mut content = Map::new();
        content.insert("conversation_id".into(), json!(conv));
        content.insert("session_id".into(), json!(session_id));
        content.insert("session_key".into(), json!(sent.initial_key));
        self.send_olm(inner, &[(user_id, device)], "room_key", &content).await?;
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Sending
    // ------------------------------------------------------------------------------------

    /// Sends a message of `kind` (`text`, `media`, `edit`, `reaction`) with `body` inside the
    /// ciphertext, with a fresh client id.
    pub async fn send(&self, conv: Id, kind: &str, body: Value) -> Result<Sent> {
        self.send_with_client_id(conv, new_client_id(), kind, body).await
    }

    pub async fn send_text(&self, conv: Id, text: &str) -> Result<Sent> {
        self.send(conv, "text", json!({ "text": text })).await
    }

    /// Like [`E2ee::send`] with the caller's client id (idempotent across retries and crashes).
    pub async fn send_with_client_id(&self, conv: Id, client_id: String, kind: &str, body: Value) -> Result<Sent> {
        let plaintext = json!({"conversation_id": conv, "kind": kind, "body": body});
        self.send_plaintext(conv, client_id, plaintext, &[]).await
    }

    /// Encrypts `data` (AES-256-CTR, fresh key), uploads the ciphertext as
    /// `application/octet-stream` and sends a `media` message carrying the key; `content_type`
    /// is the plaintext's type.
    pub async fn send_media(
        &self,
        conv: Id,
        mut data: Vec<u8>,
        content_type: &str,
        caption: Option<&str>,
        name: Option<&str>,
    ) -> Result<Sent> {
        let size = data.len();
        let file = attachment::encrypt(&mut data);
        let media = self.client.upload_bytes(data, "application/octet-stream").await?;
        let mut body = json!({"media_id": media.media_id, "content_type": content_type, "size": size});
        if let Some(c) = caption.filter(|c| !c.is_empty()) {
            body["caption"] = json!(c);
        }
        if let Some(n) = name {
            body["name"] = json!(n);
        }
        let plaintext = json!({"conversation_id": conv, "kind": "media", "body": body, "file": file});
        self.send_plaintext(conv, new_client_id(), plaintext, &[media.media_id]).await
    }

    /// Downloads an encrypted attachment, checks its digest and writes the plaintext to `dest`.
    pub async fn download_media(&self, media_id: Id, file: &EncryptedFile, dest: &Path) -> Result<()> {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "download".into());
        let cipher_path = dest.with_file_name(format!("{name}.encrypted"));
        let progress = |_: u64, _: u64| {};
        self.client.download_file(media_id, &cipher_path, &progress).await?;
        let mut data = tokio::fs::read(&cipher_path).await?;
        let _ = tokio::fs::remove_file(&cipher_path).await;
        attachment::decrypt(file, &mut data)?;
        tokio::fs::write(dest, data).await?;
        Ok(())
    }

    async fn send_plaintext(&self, conv: Id, client_id: String, plaintext: Value, media_ids: &[Id]) -> Result<Sent> {
        let mut inner = self.inner.lock().await;
        let mut refresh = false;
        for _ in 0..SEND_ATTEMPTS {
            let info = self.conv_info(&mut inner, conv, refresh).await?;
            if !info.encrypted {
                return Err(Error::NotEncrypted(conv.to_string()));
            }
            self.prepare(&mut inner, conv, &info, refresh).await?;
            let body = inner.machine.group_encrypt(conv, &plaintext, media_ids)?;
            match self.conn.send_with_client_id(conv, client_id.clone(), "encrypted", body).await {
                Ok(sent) => return Ok(sent),
                Err(e) if e.code() == Some(ErrorCode::StaleDevices) => {
                    debug!(%conv, epoch = ?e.device_epoch(), "stale devices: re-reading and sharing again");
                    self.stale_retries.fetch_add(1, Ordering::Relaxed);
                    inner.convs.remove(&conv);
                    refresh = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::KeptStale(SEND_ATTEMPTS))
    }

    /// Makes sure the conversation's outbound session is current (a new one for another
    /// epoch or member set, after 100 messages or 7 days) and that every device of every member
    /// (this user's other devices included) has its key.
    async fn prepare(&self, inner: &mut Inner, conv: Id, info: &ConvInfo, refresh: bool) -> Result<()> {
        let (me, my_device) = (self.conn.user_id(), self.conn.device_id());
        let mut targets: Vec<(Id, DeviceKeys)> = Vec::new();
        for &user in &info.members {
            let list = self.devices_of(inner, user, refresh).await?;
            for d in list.devices {
                if !(user == me && d.device_id == my_device) {
                    targets.push((user, d));
                }
            }
        }
        let now = now_ms();
        if inner.machine.needs_rotation(conv, info.epoch, &info.members, now) {
            let id = inner.machine.rotate(conv, info.epoch, &info.members, now)?;
            debug!(%conv, session = %id, epoch = info.epoch, "new outbound session");
        }
        let shared = inner.machine.outbound(conv).map(|o| o.shared).unwrap_or_default();
        let missing: Vec<(Id, DeviceKeys)> =
            targets.into_iter().filter(|(u, d)| !shared.contains(&(*u, d.device_id))).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let content = inner.machine.room_key_content(conv).ok_or_else(|| Error::Olm("no outbound session".into()))?;
        let reached = self.send_olm(inner, &missing, "room_key", &content).await?;
        inner.machine.mark_shared(conv, &reached)
    }

    /// Encrypts `content` as a `kind` payload for each device (claiming keys and opening Olm
    /// sessions where needed) and queues them; returns the devices reached. A device whose
    /// key cannot be claimed (it has none left, or shares no conversation) is skipped.
    async fn send_olm(
        &self,
        inner: &mut Inner,
        devices: &[(Id, DeviceKeys)],
        kind: &str,
        content: &Map<String, Value>,
    ) -> Result<Vec<(Id, Id)>> {
        let need: Vec<DeviceRef> = devices
            .iter()
            .filter(|(_, d)| !inner.machine.has_olm_session(&d.curve25519))
            .map(|(u, d)| DeviceRef { user_id: *u, device_id: d.device_id })
            .collect();
        for chunk in need.chunks(CLAIM_BATCH) {
            let claimed = self.client.claim_keys(chunk).await?;
            for c in claimed.devices {
                let Some((_, known)) = devices.iter().find(|(u, d)| *u == c.user_id && d.device_id == c.device_id)
                else {
                    continue;
                };
                if DeviceKeys::from_identity(c.device_id, &c.identity).as_ref() != Some(known) {
                    warn!(user = %c.user_id, device = %c.device_id, "claimed identity differs from the device list");
                    continue;
                }
                let Some(key) = c.one_time_key.as_ref().and_then(|k| k.key.as_str()) else {
                    continue;
                };
                if let Err(e) = inner.machine.create_outbound_olm(&known.curve25519, key) {
                    warn!(user = %c.user_id, device = %c.device_id, error = %e, "cannot open an Olm session");
                }
            }
        }
        let mut messages = Vec::new();
        let mut reached = Vec::new();
        for (user, device) in devices {
            if !inner.machine.has_olm_session(&device.curve25519) {
                debug!(%user, device = %device.device_id, "no Olm session; skipping the device");
                continue;
            }
            let payload = inner.machine.olm_encrypt(*user, device, kind, content.clone())?;
            messages.push(ToDeviceOut { user_id: *user, device_id: device.device_id, payload });
            reached.push((*user, device.device_id));
        }
        for chunk in messages.chunks(TO_DEVICE_BATCH) {
            self.conn.send_to_device(new_client_id(), chunk.to_vec()).await?;
        }
        Ok(reached)
    }

    // ------------------------------------------------------------------------------------
    // Conversations and device lists
    // ------------------------------------------------------------------------------------

    async fn conv_info(&self, inner: &mut Inner, conv: Id, refresh: bool) -> Result<ConvInfo> {
        if !refresh && let Some(c) = inner.convs.get(&conv) {
            return Ok(c.clone());
        }
        let c = self.client.conversation(conv).await?;
        let info = ConvInfo {
            encrypted: c.encrypted,
            epoch: c.device_epoch,
            members: c.members.unwrap_or_default().iter().map(|m| m.user_id).collect(),
        };
        inner.convs.insert(conv, info.clone());
        Ok(info)
    }

    /// Reads a user's device list from the server and records it; a change from the one known
    /// before queues [`E2eeEvent::DevicesChanged`].
    async fn refresh_devices(&self, inner: &mut Inner, user_id: Id) -> Result<DeviceList> {
        let d = self.client.user_devices(user_id).await?;
        let devices = d
            .devices
            .iter()
            .filter_map(|x| x.identity.as_ref().and_then(|i| DeviceKeys::from_identity(x.device_id, i)))
            .collect();
        let list = DeviceList { user_id, list_version: d.list_version, devices };
        let changed = inner.machine.set_device_list(list.clone())?;
        inner.stale_users.remove(&user_id);
        if changed {
            let conversation_ids =
                inner.convs.iter().filter(|(_, c)| c.members.contains(&user_id)).map(|(id, _)| *id).collect();
            inner.queued.push(E2eeEvent::DevicesChanged { user_id, conversation_ids });
        }
        Ok(list)
    }

    async fn devices_of(&self, inner: &mut Inner, user_id: Id, refresh: bool) -> Result<DeviceList> {
        match inner.machine.device_list(user_id) {
            Some(l) if !refresh && !inner.stale_users.contains(&user_id) => Ok(l.clone()),
            _ => self.refresh_devices(inner, user_id).await,
        }
    }

    /// A device's published keys, reading the list again when the device is not in it.
    async fn device(&self, inner: &mut Inner, user_id: Id, device_id: Id) -> Result<Option<DeviceKeys>> {
        let known = self.devices_of(inner, user_id, false).await?;
        if let Some(d) = known.device(device_id) {
            return Ok(Some(d.clone()));
        }
        Ok(self.refresh_devices(inner, user_id).await?.device(device_id).cloned())
    }

    /// The safety number of two users (docs/E2EE.md), from their current device lists.
    pub async fn safety_number(&self, user_a: Id, user_b: Id) -> Result<String> {
        let mut inner = self.inner.lock().await;
        let a = self.refresh_devices(&mut inner, user_a).await?;
        let b = self.refresh_devices(&mut inner, user_b).await?;
        // Both keys of every device: a swapped curve25519 key changes the number too.
        let keys = |l: &DeviceList| {
            l.devices.iter().flat_map(|d| [d.ed25519.clone(), d.curve25519.clone()]).collect::<Vec<_>>()
        };
        safety::safety_number((&user_a.to_string(), &keys(&a)), (&user_b.to_string(), &keys(&b)))
    }
}
