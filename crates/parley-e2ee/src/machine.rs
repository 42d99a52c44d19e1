//! The cryptographic state of one device and the envelopes of docs/E2EE.md, without any I/O
//! but the state file: the Olm account and its keys, pairwise Olm sessions, this device's
//! outbound Megolm session per conversation, the inbound Megolm sessions it was given, and the
//! device lists it has seen. [`crate::E2ee`] drives it over the network; tests drive two of
//! them against each other directly.

use std::collections::{BTreeSet, HashMap};

use parley_proto::rest::PublishedKey;
use parley_proto::{Id, Message};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use vodozemac::megolm::{GroupSession, GroupSessionPickle, InboundGroupSession, InboundGroupSessionPickle};
use vodozemac::megolm::{MegolmMessage, SessionKey};
use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionPickle};
use vodozemac::{Curve25519PublicKey, megolm, olm};

use crate::attachment::EncryptedFile;
use crate::b64;
use crate::error::{Error, Result};
use crate::store::Store;

/// The algorithm names of docs/E2EE.md.
pub const OLM_ALGORITHM: &str = "olm.v1";
pub const MEGOLM_ALGORITHM: &str = "megolm.v1";

/// A device with published identity keys (unpadded base64).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceKeys {
    pub device_id: Id,
    pub curve25519: String,
    pub ed25519: String,
}

impl DeviceKeys {
    /// Reads a published `identity` object (`{"algorithm": "olm.v1", "keys": {...}}`).
    pub fn from_identity(device_id: Id, identity: &Value) -> Option<DeviceKeys> {
        if identity.get("algorithm").and_then(Value::as_str) != Some(OLM_ALGORITHM) {
            return None;
        }
        let keys = identity.get("keys")?;
        let curve25519 = keys.get("curve25519")?.as_str()?.to_owned();
        let ed25519 = keys.get("ed25519")?.as_str()?.to_owned();
        Some(DeviceKeys { device_id, curve25519, ed25519 })
    }
}

/// A user's devices as last read from the server (devices without identity left out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    pub user_id: Id,
    pub list_version: i64,
    pub devices: Vec<DeviceKeys>,
}

impl DeviceList {
    pub fn device(&self, device_id: Id) -> Option<&DeviceKeys> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }

    fn key_set(&self) -> BTreeSet<(Id, String)> {
        self.devices.iter().map(|d| (d.device_id, d.ed25519.clone())).collect()
    }
}

/// A decrypted `encrypted` message: the log entry's fields and the plaintext's.
#[derive(Clone, Debug)]
pub struct Decrypted {
    pub conversation_id: Id,
    pub seq: i64,
    pub message_id: Id,
    pub sender_id: Id,
    pub sender_device_id: Option<Id>,
    pub ts: i64,
    /// `text`, `media`, `edit` or `reaction`.
    pub kind: String,
    /// The body of that kind, as PROTOCOL.md defines it.
    pub body: Value,
    /// For `media`: how to decrypt the attachment.
    pub file: Option<EncryptedFile>,
    /// The media the message references (from the clear part of the body).
    pub media_ids: Vec<Id>,
}

/// Why an `encrypted` message could not be read.
#[derive(Debug)]
pub enum GroupDecryptError {
    /// The key of its session has not arrived (or not from early enough): ask for it.
    MissingSession { sender_key: String, session_id: String },
    /// It fails a check or cannot be decrypted at all: drop it.
    Invalid(Error),
}

impl From<Error> for GroupDecryptError {
    fn from(e: Error) -> Self {
        GroupDecryptError::Invalid(e)
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    user_id: Id,
    device_id: Id,
    identity_uploaded: bool,
}

#[derive(Serialize, Deserialize)]
struct OlmRecord {
    peer_key: String,
    last_used: u64,
    pickle: SessionPickle,
}

struct OlmEntry {
    session: Session,
    session_id: String,
    last_used: u64,
}

/// This device's current outbound Megolm session of a conversation, and to whom it went.
#[derive(Serialize, Deserialize)]
struct OutboundRecord {
    conversation_id: Id,
    session_id: String,
    /// The conversation's device epoch it was made for.
    epoch: i64,
    created_at_ms: i64,
    /// The members when it was made, sorted.
    members: Vec<Id>,
    /// Devices that got its key: `(user, device)`.
    shared: BTreeSet<(Id, Id)>,
    pickle: GroupSessionPickle,
}

/// A Megolm session this device made, kept to answer `room_key_request`s.
#[derive(Clone, Serialize, Deserialize)]
pub struct SentSession {
    pub conversation_id: Id,
    /// The members when it was made, sorted: only they may have its key.
    pub members: Vec<Id>,
    /// Its `SessionKey` at index 0.
    pub initial_key: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct InboundMeta {
    conversation_id: Id,
    sender_user_id: Id,
    sender_device_id: Id,
    sender_key: String,
}

#[derive(Serialize, Deserialize)]
struct InboundRecord {
    meta: InboundMeta,
    pickle: InboundGroupSessionPickle,
}

/// What [`Machine::outbound`] tells about a conversation's outbound session.
#[derive(Clone, Debug)]
pub struct OutboundInfo {
    pub session_id: String,
    pub epoch: i64,
    pub created_at_ms: i64,
    pub members: Vec<Id>,
    pub shared: BTreeSet<(Id, Id)>,
    pub message_index: u32,
}

/// A sender replaces its outbound session after this many messages …
pub const ROTATE_AFTER_MESSAGES: u32 = 100;
/// … or after this long.
pub const ROTATE_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

/// One device's E2EE state, persisted in a [`Store`] after every change.
pub struct Machine {
    store: Store,
    meta: Meta,
    account: Account,
    olm: HashMap<String, Vec<OlmEntry>>,
    use_counter: u64,
    outbound: HashMap<Id, (OutboundRecord, GroupSession)>,
    inbound: HashMap<(String, String), (InboundMeta, InboundGroupSession)>,
    devices: HashMap<Id, DeviceList>,
    /// Message indexes seen per inbound session, with the message they came in: a second
    /// message with the same index is a replay.
    seen_indexes: HashMap<(String, String, u32), Id>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("user_id", &self.meta.user_id)
            .field("device_id", &self.meta.device_id)
            .finish_non_exhaustive()
    }
}

fn olm_row(peer_key: &str, session_id: &str) -> String {
    format!("{peer_key}|{session_id}")
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn curve(key: &str) -> Result<Curve25519PublicKey> {
    Curve25519PublicKey::from_base64(key).map_err(|e| Error::Olm(format!("bad curve25519 key {key:?}: {e}")))
}

fn str_field<'a>(v: &'a Value, f: &str) -> Result<&'a str> {
    v.get(f).and_then(Value::as_str).ok_or_else(|| Error::Decrypt(format!("missing string field `{f}`")))
}

impl Machine {
    /// Restores the device's state from `store`, or makes a new Olm account in an empty one.
    /// A store of another user or device is refused.
    pub fn open(store: Store, user_id: Id, device_id: Id) -> Result<Machine> {
        let meta: Option<Meta> = store.get("meta", "meta")?;
        let (meta, account) = match meta {
            Some(m) => {
                if m.user_id != user_id || m.device_id != device_id {
                    return Err(Error::OtherDevice {
                        user_id: m.user_id.to_string(),
                        device_id: m.device_id.to_string(),
                    });
                }
                let pickle: AccountPickle =
                    store.get("meta", "account")?.ok_or_else(|| Error::Corrupt("the account is missing".into()))?;
                (m, Account::from_pickle(pickle))
            }
            None => {
                let m = Meta { user_id, device_id, identity_uploaded: false };
                let account = Account::new();
                store.transaction(|s| {
                    s.put("meta", "account", &account.pickle())?;
                    s.put("meta", "meta", &m)
                })?;
                (m, account)
            }
        };
        let mut olm: HashMap<String, Vec<OlmEntry>> = HashMap::new();
        let mut use_counter = 0;
        for (_, r) in store.all::<OlmRecord>("olm_sessions")? {
            let session = Session::from_pickle(r.pickle);
            use_counter = use_counter.max(r.last_used);
            olm.entry(r.peer_key).or_default().push(OlmEntry {
                session_id: session.session_id(),
                session,
                last_used: r.last_used,
            });
        }
        let mut outbound = HashMap::new();
        for (_, r) in store.all::<OutboundRecord>("outbound")? {
            let pickle: GroupSessionPickle = serde_json::from_value(serde_json::to_value(&r.pickle)?)?;
            outbound.insert(r.conversation_id, (r, GroupSession::from_pickle(pickle)));
        }
        let mut inbound = HashMap::new();
        for (_, r) in store.all::<InboundRecord>("inbound")? {
            let session = InboundGroupSession::from_pickle(r.pickle);
            inbound.insert((r.meta.sender_key.clone(), session.session_id()), (r.meta, session));
        }
        let devices = store.all::<DeviceList>("devices")?.into_iter().map(|(_, d)| (d.user_id, d)).collect();
        Ok(Machine { store, meta, account, olm, use_counter, outbound, inbound, devices, seen_indexes: HashMap::new() })
    }

    pub fn user_id(&self) -> Id {
        self.meta.user_id
    }

    pub fn device_id(&self) -> Id {
        self.meta.device_id
    }

    /// This device's identity keys.
    pub fn keys(&self) -> DeviceKeys {
        let k = self.account.identity_keys();
        DeviceKeys {
            device_id: self.meta.device_id,
            curve25519: k.curve25519.to_base64(),
            ed25519: k.ed25519.to_base64(),
        }
    }

    /// The `identity` object of `PUT /v1/keys`.
    pub fn identity_json(&self) -> Value {
        let k = self.keys();
        json!({"algorithm": OLM_ALGORITHM, "keys": {"curve25519": k.curve25519, "ed25519": k.ed25519}})
    }

    pub fn identity_uploaded(&self) -> bool {
        self.meta.identity_uploaded
    }

    fn save_account(&self, s: &Store) -> Result<()> {
        s.put("meta", "account", &self.account.pickle())
    }

    /// What to upload: `one_time` new one-time keys (plus any made earlier and not yet
    /// published), a new fallback key when `fallback`, and the identity until it is uploaded.
    /// The private halves are saved before this returns, so an upload that fails or crashes
    /// can be repeated as is.
    pub fn keys_for_upload(&mut self, one_time: usize, fallback: bool) -> Result<parley_proto::rest::PutKeys> {
        if one_time > 0 {
            self.account.generate_one_time_keys(one_time);
        }
        if fallback {
            self.account.generate_fallback_key();
        }
        self.save_account(&self.store)?;
        let one_time_keys = self
            .account
            .one_time_keys()
            .into_iter()
            .map(|(id, key)| PublishedKey { key_id: id.to_base64(), key: Value::String(key.to_base64()) })
            .collect();
        let fallback_key = self
            .account
            .fallback_key()
            .into_iter()
            .next()
            .map(|(id, key)| PublishedKey { key_id: id.to_base64(), key: Value::String(key.to_base64()) });
        let identity = (!self.meta.identity_uploaded).then(|| self.identity_json());
        Ok(parley_proto::rest::PutKeys { identity, one_time_keys, fallback_key })
    }

    /// The keys of [`Machine::keys_for_upload`] reached the server.
    pub fn mark_published(&mut self) -> Result<()> {
        self.account.mark_keys_as_published();
        self.meta.identity_uploaded = true;
        self.store.transaction(|s| {
            self.save_account(s)?;
            s.put("meta", "meta", &self.meta)
        })
    }

    // ------------------------------------------------------------------------------------
    // Device lists
    // ------------------------------------------------------------------------------------

    pub fn device_list(&self, user_id: Id) -> Option<&DeviceList> {
        self.devices.get(&user_id)
    }

    /// The users whose device lists are known.
    pub fn known_users(&self) -> Vec<Id> {
        self.devices.keys().copied().collect()
    }

    /// Records a user's device list; `true` when an earlier one was known and the devices or
    /// their keys differ (a new device, a removed one): the conversation shows a warning.
    pub fn set_device_list(&mut self, list: DeviceList) -> Result<bool> {
        let changed = self.devices.get(&list.user_id).is_some_and(|old| old.key_set() != list.key_set());
        if self.devices.get(&list.user_id) != Some(&list) {
            self.store.put("devices", &list.user_id.to_string(), &list)?;
            self.devices.insert(list.user_id, list);
        }
        Ok(changed)
    }

    // ------------------------------------------------------------------------------------
    // Olm
    // ------------------------------------------------------------------------------------

    pub fn has_olm_session(&self, peer_key: &str) -> bool {
        self.olm.get(peer_key).is_some_and(|v| !v.is_empty())
    }

    fn next_use(&mut self) -> u64 {
        self.use_counter += 1;
        self.use_counter
    }

    fn save_olm(&self, s: &Store, peer_key: &str, e: &OlmEntry) -> Result<()> {
        let r = OlmRecord { peer_key: peer_key.to_owned(), last_used: e.last_used, pickle: e.session.pickle() };
        s.put("olm_sessions", &olm_row(peer_key, &e.session_id), &r)
    }

    /// Opens an Olm session to a device from one of its claimed one-time (or fallback) keys.
    pub fn create_outbound_olm(&mut self, peer_key: &str, one_time_key: &str) -> Result<()> {
        let session = self
            .account
            .create_outbound_session(olm::SessionConfig::version_1(), curve(peer_key)?, curve(one_time_key)?)
            .map_err(|e| Error::Olm(e.to_string()))?;
        let last_used = self.next_use();
        let entry = OlmEntry { session_id: session.session_id(), session, last_used };
        self.save_olm(&self.store, peer_key, &entry)?;
        self.olm.entry(peer_key.to_owned()).or_default().push(entry);
        Ok(())
    }

    /// An Olm payload (`{"algorithm", "sender_key", "type", "body"}`) for one device, with
    /// `content` and the envelope fields that bind it to both devices. Needs a session with
    /// the device ([`Machine::create_outbound_olm`]).
    pub fn olm_encrypt(
        &mut self,
        recipient_user_id: Id,
        recipient: &DeviceKeys,
        kind: &str,
        content: Map<String, Value>,
    ) -> Result<Value> {
        let me = self.keys();
        let mut plain = content;
        plain.insert("type".into(), json!(kind));
        plain.insert("sender_user_id".into(), json!(self.meta.user_id));
        plain.insert("sender_device_id".into(), json!(self.meta.device_id));
        plain.insert("sender_ed25519".into(), json!(me.ed25519));
        plain.insert("recipient_user_id".into(), json!(recipient_user_id));
        plain.insert("recipient_device_id".into(), json!(recipient.device_id));
        plain.insert("recipient_ed25519".into(), json!(recipient.ed25519));
        let text = serde_json::to_string(&plain)?;
        let last_used = self.next_use();
        let entries = self
            .olm
            .get_mut(&recipient.curve25519)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Olm(format!("no Olm session with device {}", recipient.device_id)))?;
        // The session used most recently either way: the one both sides are on.
        let entry = entries.iter_mut().max_by_key(|e| e.last_used).expect("not empty");
        let message = entry.session.encrypt(text.as_bytes()).map_err(|e| Error::Olm(e.to_string()))?;
        entry.last_used = last_used;
        let (ty, body) = message.to_parts();
        let r = OlmRecord { peer_key: recipient.curve25519.clone(), last_used, pickle: entry.session.pickle() };
        self.store.put("olm_sessions", &olm_row(&recipient.curve25519, &entry.session_id), &r)?;
        Ok(json!({"algorithm": OLM_ALGORITHM, "sender_key": me.curve25519, "type": ty, "body": b64::encode(body)}))
    }

    /// Decrypts an Olm payload from `sender` (whose published keys the caller looked up) and
    /// checks its envelope; returns the plaintext object (with its `type`).
    pub fn olm_decrypt(&mut self, sender_user_id: Id, sender: &DeviceKeys, payload: &Value) -> Result<Value> {
        if payload.get("algorithm").and_then(Value::as_str) != Some(OLM_ALGORITHM) {
            return Err(Error::Decrypt("not an olm.v1 payload".into()));
        }
        if str_field(payload, "sender_key")? != sender.curve25519 {
            return Err(Error::Decrypt("sender_key is not the sender's published identity key".into()));
        }
        let ty = payload.get("type").and_then(Value::as_u64).ok_or_else(|| Error::Decrypt("bad `type`".into()))?;
        let body = b64::decode(str_field(payload, "body")?).map_err(|_| Error::Decrypt("body is not base64".into()))?;
        let message = OlmMessage::from_parts(ty as usize, &body).map_err(|e| Error::Decrypt(e.to_string()))?;
        let peer = sender.curve25519.clone();
        let last_used = self.next_use();
        let plaintext = self.olm_decrypt_message(&peer, &message, last_used)?;
        let plain: Value = serde_json::from_slice(&plaintext).map_err(|e| Error::Decrypt(e.to_string()))?;
        let me = self.keys();
        let want = [
            ("sender_user_id", sender_user_id.to_string()),
            ("sender_device_id", sender.device_id.to_string()),
            ("sender_ed25519", sender.ed25519.clone()),
            ("recipient_user_id", self.meta.user_id.to_string()),
            ("recipient_device_id", self.meta.device_id.to_string()),
            ("recipient_ed25519", me.ed25519),
        ];
        for (field, value) in want {
            if plain.get(field).and_then(Value::as_str) != Some(value.as_str()) {
                return Err(Error::Decrypt(format!("envelope field `{field}` does not match")));
            }
        }
        if !plain.get("type").is_some_and(Value::is_string) {
            return Err(Error::Decrypt("plaintext without a type".into()));
        }
        Ok(plain)
    }

    fn olm_decrypt_message(&mut self, peer: &str, message: &OlmMessage, last_used: u64) -> Result<Vec<u8>> {
        let entries = self.olm.entry(peer.to_owned()).or_default();
        entries.sort_by_key(|e| std::cmp::Reverse(e.last_used));
        let pre_key_id = match message {
            OlmMessage::PreKey(m) => Some(m.session_id()),
            OlmMessage::Normal(_) => None,
        };
        for entry in entries.iter_mut() {
            if pre_key_id.as_ref().is_some_and(|id| *id != entry.session_id) {
                continue;
            }
            if let Ok(plain) = entry.session.decrypt(message) {
                entry.last_used = last_used;
                let r = OlmRecord { peer_key: peer.to_owned(), last_used, pickle: entry.session.pickle() };
                self.store.put("olm_sessions", &olm_row(peer, &entry.session_id), &r)?;
                return Ok(plain);
            }
        }
        let OlmMessage::PreKey(pre_key) = message else {
            return Err(Error::Decrypt("no Olm session with the sender decrypts it".into()));
        };
        let created = self
            .account
            .create_inbound_session(olm::SessionConfig::version_1(), curve(peer)?, pre_key)
            .map_err(|e| Error::Decrypt(format!("cannot open an inbound Olm session: {e}")))?;
        let entry = OlmEntry { session_id: created.session.session_id(), session: created.session, last_used };
        // The account lost the one-time key; both land together.
        self.store.transaction(|s| {
            self.save_account(s)?;
            self.save_olm(s, peer, &entry)
        })?;
        self.olm.entry(peer.to_owned()).or_default().push(entry);
        Ok(created.plaintext)
    }

    // ------------------------------------------------------------------------------------
    // Megolm, sending
    // ------------------------------------------------------------------------------------

    pub fn outbound(&self, conv: Id) -> Option<OutboundInfo> {
        self.outbound.get(&conv).map(|(r, s)| OutboundInfo {
            session_id: r.session_id.clone(),
            epoch: r.epoch,
            created_at_ms: r.created_at_ms,
            members: r.members.clone(),
            shared: r.shared.clone(),
            message_index: s.message_index(),
        })
    }

    /// Whether the conversation needs a new outbound session before the next message: none
    /// yet, another epoch or member set, 100 messages, or 7 days.
    pub fn needs_rotation(&self, conv: Id, epoch: i64, members: &[Id], now: i64) -> bool {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        match self.outbound.get(&conv) {
            None => true,
            Some((r, s)) => {
                r.epoch != epoch
                    || r.members != members
                    || s.message_index() >= ROTATE_AFTER_MESSAGES
                    || now - r.created_at_ms >= ROTATE_AFTER_MS
            }
        }
    }

    /// Replaces the conversation's outbound session with a new one; returns its id. This
    /// device also keeps the inbound half (to read its own messages from history).
    pub fn rotate(&mut self, conv: Id, epoch: i64, members: &[Id], now: i64) -> Result<String> {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        let session = GroupSession::new(megolm::SessionConfig::version_1());
        let session_id = session.session_id();
        let key = session.session_key();
        let record = OutboundRecord {
            conversation_id: conv,
            session_id: session_id.clone(),
            epoch,
            created_at_ms: now,
            members: members.clone(),
            shared: BTreeSet::new(),
            pickle: session.pickle(),
        };
        let sent = SentSession { conversation_id: conv, members, initial_key: key.to_base64() };
        let me = self.keys();
        let meta = InboundMeta {
            conversation_id: conv,
            sender_user_id: self.meta.user_id,
            sender_device_id: self.meta.device_id,
            sender_key: me.curve25519.clone(),
        };
        let inbound = InboundGroupSession::new(&key, megolm::SessionConfig::version_1());
        self.store.transaction(|s| {
            s.put("outbound", &conv.to_string(), &record)?;
            s.put("sent_sessions", &session_id, &sent)?;
            s.put(
                "inbound",
                &olm_row(&me.curve25519, &session_id),
                &InboundRecord { meta: meta.clone(), pickle: inbound.pickle() },
            )
        })?;
        self.inbound.insert((me.curve25519, session_id.clone()), (meta, inbound));
        self.outbound.insert(conv, (record, session));
        Ok(session_id)
    }

    /// The `room_key` content for the conversation's current outbound session, at its current
    /// index (a device given it cannot read what was sent before).
    pub fn room_key_content(&self, conv: Id) -> Option<Map<String, Value>> {
        let (r, s) = self.outbound.get(&conv)?;
        let mut m = Map::new();
        m.insert("conversation_id".into(), json!(conv));
        m.insert("session_id".into(), json!(r.session_id));
        m.insert("session_key".into(), json!(s.session_key().to_base64()));
        Some(m)
    }

    /// Records that these devices got the current session's key.
    pub fn mark_shared(&mut self, conv: Id, devices: &[(Id, Id)]) -> Result<()> {
        let Some((r, s)) = self.outbound.get_mut(&conv) else {
            return Ok(());
        };
        r.shared.extend(devices.iter().copied());
        r.pickle = s.pickle();
        let key = conv.to_string();
        self.store.put("outbound", &key, &*r)
    }

    /// Encrypts a plaintext (`{"conversation_id", "kind", "body", "file"?}`) with the
    /// conversation's outbound session: the `encrypted` body. The ratchet's advance is saved
    /// first, so no index is ever used twice.
    pub fn group_encrypt(&mut self, conv: Id, plaintext: &Value, media_ids: &[Id]) -> Result<Value> {
        let me = self.keys();
        let (r, s) =
            self.outbound.get_mut(&conv).ok_or_else(|| Error::Olm(format!("no outbound session for {conv}")))?;
        let message = s.encrypt(serde_json::to_vec(plaintext)?);
        r.pickle = s.pickle();
        self.store.put("outbound", &conv.to_string(), &*r)?;
        let mut body = json!({
            "algorithm": MEGOLM_ALGORITHM,
            "session_id": r.session_id,
            "ciphertext": message.to_base64(),
            "sender_key": me.curve25519,
            "device_epoch": r.epoch,
        });
        if !media_ids.is_empty() {
            body["media_ids"] = json!(media_ids);
        }
        Ok(body)
    }

    pub fn sent_session(&self, session_id: &str) -> Result<Option<SentSession>> {
        self.store.get("sent_sessions", session_id)
    }

    // ------------------------------------------------------------------------------------
    // Megolm, receiving
    // ------------------------------------------------------------------------------------

    /// Stores the key of a sender's session (from a `room_key` that came over Olm from that
    /// sender's device). A key from earlier in the session replaces a later one; a session id
    /// already known from another sender is refused. `true` when something was learned.
    pub fn add_inbound(
        &mut self,
        conversation_id: Id,
        sender_user_id: Id,
        sender: &DeviceKeys,
        session_id: &str,
        session_key: &str,
    ) -> Result<bool> {
        let key = SessionKey::from_base64(session_key).map_err(|e| Error::Decrypt(format!("bad session key: {e}")))?;
        let mut session = InboundGroupSession::new(&key, megolm::SessionConfig::version_1());
        if session.session_id() != session_id {
            return Err(Error::Decrypt("the session key is not of the named session".into()));
        }
        let map_key = (sender.curve25519.clone(), session_id.to_owned());
        let meta = InboundMeta {
            conversation_id,
            sender_user_id,
            sender_device_id: sender.device_id,
            sender_key: sender.curve25519.clone(),
        };
        if let Some((old_meta, old)) = self.inbound.get_mut(&map_key) {
            if old_meta.conversation_id != conversation_id
                || old_meta.sender_user_id != sender_user_id
                || old_meta.sender_device_id != sender.device_id
            {
                return Err(Error::Decrypt("a known session id with another sender or conversation".into()));
            }
            if old.first_known_index() <= session.first_known_index() {
                return Ok(false);
            }
            if !old.connected(&mut session) {
                return Err(Error::Decrypt("the key does not continue the known session".into()));
            }
        }
        self.store.put(
            "inbound",
            &olm_row(&sender.curve25519, session_id),
            &InboundRecord { meta: meta.clone(), pickle: session.pickle() },
        )?;
        self.inbound.insert(map_key, (meta, session));
        Ok(true)
    }

    /// Decrypts an `encrypted` message and checks it: the session came from the message's
    /// sender (user and device) for this conversation, the plaintext names this conversation,
    /// and no other message used the same index of the session.
    pub fn group_decrypt(&mut self, m: &Message) -> std::result::Result<Decrypted, GroupDecryptError> {
        let body: Value = serde_json::from_str(m.body.get()).map_err(|e| Error::Decrypt(e.to_string()))?;
        if body.get("algorithm").and_then(Value::as_str) != Some(MEGOLM_ALGORITHM) {
            return Err(Error::Decrypt("not a megolm.v1 message".into()).into());
        }
        let session_id = str_field(&body, "session_id")?.to_owned();
        let sender_key = str_field(&body, "sender_key")?.to_owned();
        let ciphertext = MegolmMessage::from_base64(str_field(&body, "ciphertext")?)
            .map_err(|e| Error::Decrypt(format!("bad ciphertext: {e}")))?;
        let map_key = (sender_key.clone(), session_id.clone());
        let missing =
            || GroupDecryptError::MissingSession { sender_key: sender_key.clone(), session_id: session_id.clone() };
        let Some((meta, session)) = self.inbound.get_mut(&map_key) else {
            return Err(missing());
        };
        if meta.sender_user_id != m.sender_id || Some(meta.sender_device_id) != m.sender_device_id {
            return Err(Error::Decrypt("the session belongs to another sender".into()).into());
        }
        if meta.conversation_id != m.conversation_id {
            return Err(Error::Decrypt("the session belongs to another conversation".into()).into());
        }
        let decrypted = match session.decrypt(&ciphertext) {
            Ok(d) => d,
            Err(megolm::DecryptionError::UnknownMessageIndex(..)) => return Err(missing()),
            Err(e) => return Err(Error::Decrypt(e.to_string()).into()),
        };
        let seen = (sender_key, session_id, decrypted.message_index);
        match self.seen_indexes.get(&seen) {
            Some(id) if *id != m.message_id => {
                return Err(Error::Decrypt("a replayed message index".into()).into());
            }
            _ => {
                self.seen_indexes.insert(seen, m.message_id);
            }
        }
        let plain: Value = serde_json::from_slice(&decrypted.plaintext).map_err(|e| Error::Decrypt(e.to_string()))?;
        if plain.get("conversation_id").and_then(Value::as_str) != Some(m.conversation_id.to_string().as_str()) {
            return Err(Error::Decrypt("the plaintext names another conversation".into()).into());
        }
        let kind = str_field(&plain, "kind")?.to_owned();
        let file = match plain.get("file") {
            None | Some(Value::Null) => None,
            Some(f) => Some(serde_json::from_value(f.clone()).map_err(|e| Error::Decrypt(format!("bad file: {e}")))?),
        };
        let media_ids = body
            .get("media_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(Id::parse).collect())
            .unwrap_or_default();
        Ok(Decrypted {
            conversation_id: m.conversation_id,
            seq: m.seq,
            message_id: m.message_id,
            sender_id: m.sender_id,
            sender_device_id: m.sender_device_id,
            ts: m.ts,
            kind,
            body: plain.get("body").cloned().unwrap_or(Value::Null),
            file,
            media_ids,
        })
    }
}
