//! Encrypted attachments (docs/E2EE.md, Matrix's scheme): AES-256-CTR under a random key and
//! an IV whose last 8 bytes are zero (the counter), with the SHA-256 of the ciphertext that is
//! uploaded. The ciphers are RustCrypto's.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::b64;
use crate::error::{Error, Result};

type Aes256Ctr = ctr::Ctr64BE<Aes256>;

/// What a `media` plaintext carries in `file`: unpadded base64 of the key (32 bytes), the IV
/// (16 bytes) and the SHA-256 of the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedFile {
    pub key: String,
    pub iv: String,
    pub sha256: String,
}

/// Encrypts `data` in place with a fresh key and IV; returns what the recipient needs.
pub fn encrypt(data: &mut [u8]) -> EncryptedFile {
    let key: [u8; 32] = rand::random();
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&rand::random::<[u8; 8]>());
    let mut cipher = Aes256Ctr::new(&key.into(), &iv.into());
    cipher.apply_keystream(data);
    EncryptedFile { key: b64::encode(key), iv: b64::encode(iv), sha256: b64::encode(Sha256::digest(&*data)) }
}

/// Checks the ciphertext's digest, then decrypts it in place.
pub fn decrypt(file: &EncryptedFile, data: &mut [u8]) -> Result<()> {
    let digest = b64::decode(&file.sha256).map_err(|_| Error::Decrypt("file.sha256 is not base64".into()))?;
    if digest.as_slice() != Sha256::digest(&*data).as_slice() {
        return Err(Error::Digest);
    }
    let key: [u8; 32] = b64::decode(&file.key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::Decrypt("file.key is not 32 bytes of base64".into()))?;
    let iv: [u8; 16] = b64::decode(&file.iv)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| Error::Decrypt("file.iv is not 16 bytes of base64".into()))?;
    let mut cipher = Aes256Ctr::new(&key.into(), &iv.into());
    cipher.apply_keystream(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_the_digest() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut data = plain.clone();
        let file = encrypt(&mut data);
        assert_ne!(data, plain);
        assert_eq!(b64::decode(&file.iv).unwrap()[8..], [0u8; 8]);
        let mut bad = data.clone();
        bad[10] ^= 1;
        assert!(matches!(decrypt(&file, &mut bad), Err(Error::Digest)));
        decrypt(&file, &mut data).unwrap();
        assert_eq!(data, plain);
    }

    #[test]
    fn is_aes_256_ctr() {
        // NIST SP 800-38A F.5.5 (CTR-AES256.Encrypt), first block; the IV's counter half is
        // not zero there, which a 64-bit counter handles the same for one block.
        let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        let iv = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let mut block = hex("6bc1bee22e409f96e93d7e117393172a");
        let mut c = Aes256Ctr::new_from_slices(&key, &iv).unwrap();
        c.apply_keystream(&mut block);
        assert_eq!(block, hex("601ec313775789a5b7a7f504bbf3d228"));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
