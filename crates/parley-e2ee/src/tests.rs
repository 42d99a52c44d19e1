//! Two devices' machines talking through the envelopes of docs/E2EE.md with no server between
//! them: Olm both ways, Megolm with its checks, rotation rules, and the sealed state file.

use parley_proto::{Id, Message};
use serde_json::{Map, Value, json};

use crate::machine::{DeviceKeys, GroupDecryptError, Machine};
use crate::store::{KEY_LEN, Store};
use crate::{Error, ROTATE_AFTER_MESSAGES};

const CONV: Id = Id(500);

fn machine(user: i64, device: i64) -> Machine {
    Machine::open(Store::in_memory(&[user as u8; KEY_LEN]).unwrap(), Id(user), Id(device)).unwrap()
}

/// One of `m`'s published one-time keys.
fn one_time_key(m: &mut Machine) -> String {
    let keys = m.keys_for_upload(5, true).unwrap();
    assert!(keys.identity.is_some());
    assert_eq!(keys.one_time_keys.len(), 5);
    assert!(keys.fallback_key.is_some());
    m.mark_published().unwrap();
    keys.one_time_keys[0].key.as_str().unwrap().to_owned()
}

fn message(conv: Id, seq: i64, sender: &Machine, body: Value) -> Message {
    serde_json::from_value(json!({
        "conversation_id": conv, "seq": seq, "message_id": (1000 + seq).to_string(),
        "sender_id": sender.user_id(), "sender_device_id": sender.device_id(), "client_id": "c",
        "ts": 1, "kind": "encrypted", "body": body,
    }))
    .unwrap()
}

fn room_key(m: &Machine) -> Map<String, Value> {
    m.room_key_content(CONV).unwrap()
}

/// Alice opens an Olm session to Bob and gives him her Megolm key for [`CONV`].
fn share(alice: &mut Machine, bob: &mut Machine) {
    let otk = one_time_key(bob);
    let bob_keys = bob.keys();
    alice.create_outbound_olm(&bob_keys.curve25519, &otk).unwrap();
    alice.rotate(CONV, 1, &[alice.user_id(), bob.user_id()], 0).unwrap();
    let payload = alice.olm_encrypt(bob.user_id(), &bob_keys, "room_key", room_key(alice)).unwrap();
    assert_eq!(payload["type"], 0, "the first message is a pre-key message");
    let plain = bob.olm_decrypt(alice.user_id(), &alice.keys(), &payload).unwrap();
    assert_eq!(plain["type"], "room_key");
    let session_id = plain["session_id"].as_str().unwrap();
    assert!(
        bob.add_inbound(CONV, alice.user_id(), &alice.keys(), session_id, plain["session_key"].as_str().unwrap())
            .unwrap()
    );
}

#[test]
fn olm_both_ways_and_megolm_messages() {
    let (mut alice, mut bob) = (machine(1, 11), machine(2, 21));
    share(&mut alice, &mut bob);

    // Megolm: a text and a reply.
    for (seq, text) in [(1, "hello bob"), (2, "second")] {
        let plain = json!({"conversation_id": CONV, "kind": "text", "body": {"text": text, "reply_to_seq": 1}});
        let body = alice.group_encrypt(CONV, &plain, &[]).unwrap();
        assert_eq!(body["algorithm"], "megolm.v1");
        assert_eq!(body["device_epoch"], 1);
        assert!(!body.to_string().contains(text), "plaintext in the body");
        let d = bob.group_decrypt(&message(CONV, seq, &alice, body)).unwrap();
        assert_eq!((d.kind.as_str(), d.body["text"].as_str()), ("text", Some(text)));
        assert_eq!(d.body["reply_to_seq"], 1);
    }

    // Olm back from Bob on the session Alice opened: a normal message.
    let mut content = Map::new();
    content.insert("conversation_id".into(), json!(CONV));
    content.insert("session_id".into(), json!("x"));
    let reply = bob.olm_encrypt(alice.user_id(), &alice.keys(), "room_key_request", content.clone()).unwrap();
    assert_eq!(reply["type"], 1);
    let plain = alice.olm_decrypt(bob.user_id(), &bob.keys(), &reply).unwrap();
    assert_eq!(plain["type"], "room_key_request");
    assert_eq!(plain["recipient_device_id"], "11");

    // Bob's own Megolm session reaches Alice the same way.
    bob.rotate(CONV, 1, &[Id(1), Id(2)], 0).unwrap();
    let payload = bob.olm_encrypt(alice.user_id(), &alice.keys(), "room_key", bob.room_key_content(CONV).unwrap());
    let plain = alice.olm_decrypt(bob.user_id(), &bob.keys(), &payload.unwrap()).unwrap();
    alice
        .add_inbound(
            CONV,
            bob.user_id(),
            &bob.keys(),
            plain["session_id"].as_str().unwrap(),
            plain["session_key"].as_str().unwrap(),
        )
        .unwrap();
    let body = bob
        .group_encrypt(
            CONV,
            &json!({"conversation_id": CONV, "kind": "reaction", "body": {"target_seq": 1, "emoji": "👍"}}),
            &[],
        )
        .unwrap();
    let d = alice.group_decrypt(&message(CONV, 3, &bob, body)).unwrap();
    assert_eq!((d.kind.as_str(), d.body["emoji"].as_str()), ("reaction", Some("👍")));
}

#[test]
fn olm_envelopes_are_checked() {
    let (mut alice, mut bob, mut carol) = (machine(1, 11), machine(2, 21), machine(3, 31));
    let otk = one_time_key(&mut bob);
    alice.create_outbound_olm(&bob.keys().curve25519, &otk).unwrap();
    alice.rotate(CONV, 1, &[Id(1), Id(2)], 0).unwrap();
    let mut payload = || alice.olm_encrypt(Id(2), &bob.keys(), "room_key", room_key(&alice)).unwrap();
    let (p1, p2, p3) = (payload(), payload(), payload());
    // Claimed to come from another user, or from another device with the same keys: dropped
    // (and, being decrypted, used up).
    assert!(bob.olm_decrypt(Id(3), &alice.keys(), &p1).is_err());
    let mut other = alice.keys();
    other.device_id = Id(12);
    assert!(bob.olm_decrypt(alice.user_id(), &other, &p2).is_err());
    // The sender key is not the sender's published one: refused before decrypting.
    assert!(bob.olm_decrypt(carol.user_id(), &carol.keys(), &p3).is_err());
    // Not for Carol.
    let _ = one_time_key(&mut carol);
    assert!(carol.olm_decrypt(alice.user_id(), &alice.keys(), &p3).is_err());
    // A payload encrypted for Bob but whose envelope names Carol is refused by Bob.
    let carol_named = DeviceKeys { curve25519: bob.keys().curve25519, ..carol.keys() };
    let wrong = alice.olm_encrypt(carol.user_id(), &carol_named, "room_key", room_key(&alice)).unwrap();
    assert!(matches!(bob.olm_decrypt(alice.user_id(), &alice.keys(), &wrong), Err(Error::Decrypt(_))));
    // The right one still opens.
    assert!(bob.olm_decrypt(alice.user_id(), &alice.keys(), &p3).is_ok());
}

#[test]
fn megolm_messages_are_checked() {
    let (mut alice, mut bob) = (machine(1, 11), machine(2, 21));
    share(&mut alice, &mut bob);
    let plain = json!({"conversation_id": CONV, "kind": "text", "body": {"text": "x"}});
    let body = alice.group_encrypt(CONV, &plain, &[]).unwrap();
    // Replayed into another conversation: the session is bound to CONV.
    assert!(matches!(
        bob.group_decrypt(&message(Id(501), 1, &alice, body.clone())),
        Err(GroupDecryptError::Invalid(_))
    ));
    // Said to come from someone else.
    let carol = machine(3, 31);
    assert!(matches!(bob.group_decrypt(&message(CONV, 1, &carol, body.clone())), Err(GroupDecryptError::Invalid(_))));
    // The real one; then the same ciphertext as another message is a replay.
    assert!(bob.group_decrypt(&message(CONV, 1, &alice, body.clone())).is_ok());
    assert!(bob.group_decrypt(&message(CONV, 1, &alice, body.clone())).is_ok(), "the same message again is fine");
    assert!(matches!(bob.group_decrypt(&message(CONV, 2, &alice, body)), Err(GroupDecryptError::Invalid(_))));
    // A plaintext naming another conversation, in a session of this one.
    let body = alice.group_encrypt(CONV, &json!({"conversation_id": Id(9), "kind": "text", "body": {}}), &[]).unwrap();
    assert!(matches!(bob.group_decrypt(&message(CONV, 3, &alice, body)), Err(GroupDecryptError::Invalid(_))));
    // After a rotation Bob lacks the key until it is shared.
    alice.rotate(CONV, 2, &[Id(1), Id(2)], 0).unwrap();
    let body = alice.group_encrypt(CONV, &plain, &[Id(77)]).unwrap();
    assert_eq!(body["media_ids"], json!(["77"]));
    assert!(matches!(
        bob.group_decrypt(&message(CONV, 4, &alice, body)),
        Err(GroupDecryptError::MissingSession { .. })
    ));
}

#[test]
fn a_later_key_does_not_open_earlier_messages() {
    let (mut alice, mut bob) = (machine(1, 11), machine(2, 21));
    let otk = one_time_key(&mut bob);
    alice.create_outbound_olm(&bob.keys().curve25519, &otk).unwrap();
    alice.rotate(CONV, 1, &[Id(1), Id(2)], 0).unwrap();
    let plain = json!({"conversation_id": CONV, "kind": "text", "body": {"text": "before"}});
    let early = alice.group_encrypt(CONV, &plain, &[]).unwrap();
    // Bob gets the key only now (at index 1): the first message stays closed to him.
    let payload = alice.olm_encrypt(bob.user_id(), &bob.keys(), "room_key", room_key(&alice)).unwrap();
    let p = bob.olm_decrypt(alice.user_id(), &alice.keys(), &payload).unwrap();
    bob.add_inbound(CONV, Id(1), &alice.keys(), p["session_id"].as_str().unwrap(), p["session_key"].as_str().unwrap())
        .unwrap();
    assert!(matches!(
        bob.group_decrypt(&message(CONV, 1, &alice, early)),
        Err(GroupDecryptError::MissingSession { .. })
    ));
    let late = alice.group_encrypt(CONV, &plain, &[]).unwrap();
    assert!(bob.group_decrypt(&message(CONV, 2, &alice, late)).is_ok());
}

#[test]
fn rotation_rules() {
    let mut alice = machine(1, 11);
    let members = [Id(1), Id(2)];
    assert!(alice.needs_rotation(CONV, 1, &members, 0));
    alice.rotate(CONV, 1, &members, 0).unwrap();
    assert!(!alice.needs_rotation(CONV, 1, &[Id(2), Id(1)], 1));
    assert!(alice.needs_rotation(CONV, 2, &members, 1), "another epoch");
    assert!(alice.needs_rotation(CONV, 1, &[Id(1)], 1), "a member left");
    assert!(alice.needs_rotation(CONV, 1, &members, crate::ROTATE_AFTER_MS), "a week old");
    let plain = json!({"conversation_id": CONV, "kind": "text", "body": {"text": "x"}});
    for _ in 0..ROTATE_AFTER_MESSAGES {
        assert!(!alice.needs_rotation(CONV, 1, &members, 1));
        alice.group_encrypt(CONV, &plain, &[]).unwrap();
    }
    assert!(alice.needs_rotation(CONV, 1, &members, 1), "100 messages");
}

#[test]
fn state_survives_a_restart_and_refuses_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (ka, kb) = ([1u8; KEY_LEN], [2u8; KEY_LEN]);
    let open =
        |p: &std::path::Path, k: &[u8; KEY_LEN], u: i64| Machine::open(Store::open(p, k).unwrap(), Id(u), Id(u * 10));
    let (alice_keys, bob_keys);
    {
        let (mut alice, mut bob) = (open(&pa, &ka, 1).unwrap(), open(&pb, &kb, 2).unwrap());
        alice_keys = alice.keys();
        bob_keys = bob.keys();
        let otk = one_time_key(&mut bob);
        alice.create_outbound_olm(&bob_keys.curve25519, &otk).unwrap();
        alice.rotate(CONV, 1, &[Id(1), Id(2)], 0).unwrap();
        let payload = alice.olm_encrypt(Id(2), &bob_keys, "room_key", room_key(&alice)).unwrap();
        let p = bob.olm_decrypt(Id(1), &alice_keys, &payload).unwrap();
        bob.add_inbound(
            CONV,
            Id(1),
            &alice_keys,
            p["session_id"].as_str().unwrap(),
            p["session_key"].as_str().unwrap(),
        )
        .unwrap();
    }
    // Both come back with the same keys, sessions and Megolm state.
    let (mut alice, mut bob) = (open(&pa, &ka, 1).unwrap(), open(&pb, &kb, 2).unwrap());
    assert_eq!(alice.keys(), alice_keys);
    assert!(bob.identity_uploaded());
    let plain = json!({"conversation_id": CONV, "kind": "text", "body": {"text": "after the restart"}});
    let body = alice.group_encrypt(CONV, &plain, &[]).unwrap();
    assert_eq!(bob.group_decrypt(&message(CONV, 1, &alice, body)).unwrap().body["text"], "after the restart");
    let reply = bob.olm_encrypt(Id(1), &alice_keys, "room_key_request", Map::new()).unwrap();
    assert_eq!(alice.olm_decrypt(Id(2), &bob_keys, &reply).unwrap()["type"], "room_key_request");
    drop((alice, bob));
    // Another key, or another device's session, is refused clearly.
    assert!(matches!(Store::open(&pa, &kb), Err(Error::WrongKey)));
    assert!(matches!(open(&pa, &ka, 3), Err(Error::OtherDevice { .. })));
    // Nothing secret is in the file in the clear.
    let secret = serde_json::to_string(&alice_keys).unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(19).any(|w| w == b"after the restart\"}"), "a plaintext on disk");
        assert!(!bytes.windows(12).any(|w| w == &secret.as_bytes()[..12]), "unsealed JSON on disk");
    }
}

#[test]
fn one_time_keys_are_used_once() {
    let (mut alice, mut bob, mut carol) = (machine(1, 11), machine(2, 21), machine(3, 31));
    let otk = one_time_key(&mut bob);
    // Two senders given the same key (a server bug): the second pre-key message fails.
    alice.create_outbound_olm(&bob.keys().curve25519, &otk).unwrap();
    carol.create_outbound_olm(&bob.keys().curve25519, &otk).unwrap();
    alice.rotate(CONV, 1, &[Id(1), Id(2)], 0).unwrap();
    carol.rotate(CONV, 1, &[Id(3), Id(2)], 0).unwrap();
    let a = alice.olm_encrypt(Id(2), &bob.keys(), "room_key", room_key(&alice)).unwrap();
    let c = carol.olm_encrypt(Id(2), &bob.keys(), "room_key", carol.room_key_content(CONV).unwrap()).unwrap();
    assert!(bob.olm_decrypt(Id(1), &alice.keys(), &a).is_ok());
    assert!(bob.olm_decrypt(Id(3), &carol.keys(), &c).is_err());
}
