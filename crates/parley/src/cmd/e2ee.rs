//! End-to-end encryption for the CLI: the device's E2EE state and `parley keys fingerprint`.
//!
//! The state (Olm account, sessions, Megolm keys) is a SQLite file next to the session file,
//! `e2ee-DEVICE_ID.db` (one per signed-in device), whose values are sealed with a 32-byte key
//! kept in `e2ee.key` in the same directory: 64 hex digits, made at random on first use,
//! readable by its owner only (0600). Whoever can read both files can read the device's
//! messages; losing the key file loses them.

use std::path::Path;

use anyhow::Context;
use parley_client::proto::Id;
use parley_client::{Client, ConnectOptions, Connection, Event};
use parley_e2ee::{DeviceKeys, E2ee, KEY_LEN, Store};
use tokio::sync::mpsc::Receiver;

use super::session::{self, Saved};
use crate::cli::KeysCommand;

/// The at-rest key in `dir/e2ee.key`, made (0600) when missing.
fn at_rest_key(dir: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    let path = dir.join("e2ee.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            let bytes: Option<Vec<u8>> = (0..text.len())
                .step_by(2)
                .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            bytes
                .and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok())
                .with_context(|| format!("{} is not 64 hex digits", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let key: [u8; KEY_LEN] = rand::random();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            use std::io::Write;
            let mut f = opts.open(&path).with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(format!("{hex}\n").as_bytes())?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Connects as the saved session and opens its E2EE state (publishing keys as needed).
pub(super) async fn open(s: &Saved, opts: ConnectOptions) -> anyhow::Result<(E2ee, Receiver<Event>)> {
    let dir = session::dir()?;
    let key = at_rest_key(&dir)?;
    let path = dir.join(format!("e2ee-{}.db", s.device_id));
    let store = Store::open(&path, &key).with_context(|| format!("cannot open {}", path.display()))?;
    let client = Client::new(&s.server).with_token(&s.token);
    let (conn, events) = Connection::connect(&s.server, &s.token, opts).await?;
    let e2ee = E2ee::open(client, conn, store).await.context("cannot set up end-to-end encryption")?;
    Ok((e2ee, events))
}

pub(super) async fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Fingerprint { user } => {
            let s = session::load()?;
            let client = Client::new(&s.server).with_token(&s.token);
            let other = client.user_by_name(&user).await?;
            let me = Id::parse(&s.user_id);
            // Both keys of every device (docs/E2EE.md, "Safety numbers").
            let keys = |list: parley_client::proto::rest::UserDevices| -> Vec<String> {
                list.devices
                    .into_iter()
                    .filter_map(|d| d.identity.and_then(|i| DeviceKeys::from_identity(d.device_id, &i)))
                    .flat_map(|d| [d.ed25519, d.curve25519])
                    .collect()
            };
            let mine = keys(client.user_devices(me).await?);
            let theirs = keys(client.user_devices(other.user_id).await?);
            let number = parley_e2ee::safety_number((&me.to_string(), &mine), (&other.user_id.to_string(), &theirs))?;
            println!("{number}");
            eprintln!(
                "safety number of {} ({} device(s) with keys) and {} ({}); compare it with theirs",
                s.username,
                mine.len() / 2,
                other.username,
                theirs.len() / 2
            );
            Ok(())
        }
    }
}
