//! The local state file: a SQLite database whose every value (pickled Olm account and sessions,
//! Megolm sessions, cached device lists) is sealed with XChaCha20-Poly1305 under a 32-byte key
//! the application supplies. Row names (conversation ids, session ids, public keys) stay in the
//! clear so rows can be found; each value's row name is its associated data, so a value moved
//! to another row does not open.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Size of the at-rest key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// What the `check` row holds, sealed: opening it proves the key is the one the file was made
/// with before anything else is read.
const CHECK: &[u8] = b"parley-e2ee state v1";

/// The tables: a name and one sealed value per row.
pub(crate) const TABLES: [&str; 6] = ["meta", "olm_sessions", "outbound", "sent_sessions", "inbound", "devices"];

/// The sealed state file (or an in-memory one, for tests and ephemeral bots).
pub struct Store {
    db: Connection,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the state file at `path`, sealed with `key`. A file made with another
    /// key is refused with [`Error::WrongKey`].
    pub fn open(path: &Path, key: &[u8; KEY_LEN]) -> Result<Store> {
        let db = Connection::open(path)?;
        // WAL keeps readers and the writer apart; only sealed values reach it anyway.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        Self::init(db, key)
    }

    /// A store that lives in memory only.
    pub fn in_memory(key: &[u8; KEY_LEN]) -> Result<Store> {
        Self::init(Connection::open_in_memory()?, key)
    }

    fn init(db: Connection, key: &[u8; KEY_LEN]) -> Result<Store> {
        for t in TABLES {
            db.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {t} (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
            ))?;
        }
        let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| Error::WrongKey)?;
        let store = Store { db, cipher };
        match store.get_raw("meta", "check")? {
            Some(v) if v == CHECK => {}
            Some(_) => return Err(Error::WrongKey),
            // A fresh file. (One made with another key fails in `get_raw` with WrongKey.)
            None => store.put_raw("meta", "check", CHECK)?,
        }
        Ok(store)
    }

    fn seal(&self, table: &str, name: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::try_from(&nonce_bytes[..]).map_err(|_| Error::Corrupt("nonce size".into()))?;
        let aad = format!("{table}/{name}");
        let sealed = self
            .cipher
            .encrypt(&nonce, Payload { msg: plain, aad: aad.as_bytes() })
            .map_err(|_| Error::Corrupt("cannot seal a value".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open_value(&self, table: &str, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::Corrupt(format!("{table}/{name}: value too short")));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| Error::Corrupt("nonce size".into()))?;
        let aad = format!("{table}/{name}");
        self.cipher.decrypt(&nonce, Payload { msg: ct, aad: aad.as_bytes() }).map_err(|_| Error::WrongKey)
    }

    pub(crate) fn put_raw(&self, table: &str, name: &str, plain: &[u8]) -> Result<()> {
        let sealed = self.seal(table, name, plain)?;
        self.db.execute(
            &format!("INSERT INTO {table} (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = ?2"),
            params![name, sealed],
        )?;
        Ok(())
    }

    pub(crate) fn get_raw(&self, table: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let sealed: Option<Vec<u8>> = self
            .db
            .query_row(&format!("SELECT value FROM {table} WHERE name = ?1"), params![name], |r| r.get(0))
            .optional()?;
        sealed.map(|s| self.open_value(table, name, &s)).transpose()
    }

    pub(crate) fn put<T: Serialize>(&self, table: &str, name: &str, value: &T) -> Result<()> {
        self.put_raw(table, name, &serde_json::to_vec(value)?)
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, table: &str, name: &str) -> Result<Option<T>> {
        match self.get_raw(table, name)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every row of a table, opened: `(name, value)`.
    pub(crate) fn all<T: DeserializeOwned>(&self, table: &str) -> Result<Vec<(String, T)>> {
        let mut stmt = self.db.prepare(&format!("SELECT name, value FROM {table}"))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, sealed) = row?;
            let plain = self.open_value(table, &name, &sealed)?;
            out.push((name, serde_json::from_slice(&plain)?));
        }
        Ok(out)
    }

    /// Runs `f` in one transaction: either every write in it lands or none does.
    pub(crate) fn transaction<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        self.db.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.db.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.db.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_are_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let key = [7u8; KEY_LEN];
        {
            let s = Store::open(&path, &key).unwrap();
            s.put("meta", "x", &"a secret marker 81723").unwrap();
        }
        let s = Store::open(&path, &key).unwrap();
        assert_eq!(s.get::<String>("meta", "x").unwrap().as_deref(), Some("a secret marker 81723"));
        drop(s);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(10).any(|w| w == b"secret mar"), "plaintext on disk");
        }
    }

    #[test]
    fn a_wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Store::open(&path, &[1u8; KEY_LEN]).unwrap().put("meta", "x", &1).unwrap();
        assert!(matches!(Store::open(&path, &[2u8; KEY_LEN]), Err(Error::WrongKey)));
        assert!(Store::open(&path, &[1u8; KEY_LEN]).is_ok());
    }

    #[test]
    fn a_value_moved_to_another_row_does_not_open() {
        let s = Store::in_memory(&[3u8; KEY_LEN]).unwrap();
        s.put("devices", "a", &1).unwrap();
        let sealed: Vec<u8> = s.db.query_row("SELECT value FROM devices WHERE name = 'a'", [], |r| r.get(0)).unwrap();
        s.db.execute("INSERT INTO devices (name, value) VALUES ('b', ?1)", params![sealed]).unwrap();
        assert!(s.get::<i32>("devices", "b").is_err());
    }
}
