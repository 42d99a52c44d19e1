//! The HMAC-SHA256 signatures of the local store's URLs.

use std::io::Write;
use std::path::Path;

use parley_core::ids::MediaId;
use parley_media::Denied;
use ring::hmac;

pub(crate) struct Signer {
    key: hmac::Key,
}

/// Hex, lower-case: URL-safe as it is.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl Signer {
    /// Reads the key, or makes one (32 random bytes, readable by the owner only).
    pub(crate) fn load_or_create(path: &Path) -> std::io::Result<Signer> {
        let bytes = match std::fs::read(path) {
            Ok(b) if b.len() == 32 => b,
            Ok(_) => {
                return Err(std::io::Error::other(format!("{} is not a 32-byte key", path.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Written aside and renamed into place, so a crash never leaves half a key.
                let key: [u8; 32] = rand::random();
                let aside = path.with_extension(format!("new-{:08x}", rand::random::<u32>()));
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&aside)?;
                f.write_all(&key)?;
                f.sync_all()?;
                std::fs::rename(&aside, path)?;
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                key.to_vec()
            }
            Err(e) => return Err(e),
        };
        Ok(Signer::new(&bytes))
    }

    pub(crate) fn new(key: &[u8]) -> Signer {
        Signer { key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    fn put_input(id: MediaId, expires: i64, size: u64, content_type: &str, digest: &str) -> String {
        format!("PUT\n{id}\n{expires}\ncontent-length:{size}\ncontent-type:{content_type}\nsha256:{digest}")
    }

    fn get_input(id: MediaId, expires: i64, content_type: &str) -> String {
        format!("GET\n{id}\n{expires}\ncontent-type:{content_type}")
    }

    pub(crate) fn put(&self, id: MediaId, expires: i64, size: u64, content_type: &str, digest: &str) -> String {
        hex(hmac::sign(&self.key, Self::put_input(id, expires, size, content_type, digest).as_bytes()).as_ref())
    }

    pub(crate) fn get(&self, id: MediaId, expires: i64, content_type: &str) -> String {
        hex(hmac::sign(&self.key, Self::get_input(id, expires, content_type).as_bytes()).as_ref())
    }

    pub(crate) fn verify_put(
        &self,
        id: MediaId,
        expires: i64,
        size: u64,
        content_type: &str,
        digest: &str,
        sig: &str,
    ) -> Result<(), Denied> {
        self.verify(&Self::put_input(id, expires, size, content_type, digest), sig)
    }

    pub(crate) fn verify_get(&self, id: MediaId, expires: i64, content_type: &str, sig: &str) -> Result<(), Denied> {
        self.verify(&Self::get_input(id, expires, content_type), sig)
    }

    fn verify(&self, input: &str, sig: &str) -> Result<(), Denied> {
        let sig = unhex(sig).ok_or(Denied::BadSignature)?;
        // Constant time: ring compares the tags itself.
        hmac::verify(&self.key, input.as_bytes(), &sig).map_err(|_| Denied::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_field() {
        let s = Signer::new(&[7; 32]);
        let sig = s.put(MediaId(1), 100, 10, "image/png", "abc");
        assert!(s.verify_put(MediaId(1), 100, 10, "image/png", "abc", &sig).is_ok());
        for (id, exp, size, ct, digest) in [
            (2, 100, 10, "image/png", "abc"),
            (1, 101, 10, "image/png", "abc"),
            (1, 100, 11, "image/png", "abc"),
            (1, 100, 10, "text/html", "abc"),
            (1, 100, 10, "image/png", "abd"),
        ] {
            assert_eq!(s.verify_put(MediaId(id), exp, size, ct, digest, &sig), Err(Denied::BadSignature));
        }
        let get = s.get(MediaId(1), 100, "image/png");
        assert!(s.verify_get(MediaId(1), 100, "image/png", &get).is_ok());
        assert!(s.verify_get(MediaId(1), 100, "image/png", &sig).is_err());
        assert!(s.verify_get(MediaId(1), 100, "image/png", "zz").is_err());
        assert!(Signer::new(&[8; 32]).verify_get(MediaId(1), 100, "image/png", &get).is_err());
    }

    #[test]
    fn the_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let a = Signer::load_or_create(&path).unwrap().get(MediaId(1), 1, "a/b");
        let b = Signer::load_or_create(&path).unwrap().get(MediaId(1), 1, "a/b");
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
