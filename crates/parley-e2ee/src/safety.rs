//! Safety numbers (docs/E2EE.md): 30 digits that two users compare out of band; they are the
//! same on both sides and change when either user adds or removes a device.

use sha2::{Digest, Sha256};

use crate::b64;
use crate::error::{Error, Result};

/// `F(U) = SHA-256(user_id ‖ 0x00 ‖ the ed25519 and curve25519 keys of U's devices, each
/// decoded, sorted bytewise, concatenated)`.
fn fingerprint(user_id: &str, device_keys: &[String]) -> Result<[u8; 32]> {
    let mut keys = device_keys
        .iter()
        .map(|k| b64::decode(k).map_err(|_| Error::Decrypt(format!("device key {k:?} is not base64"))))
        .collect::<Result<Vec<Vec<u8>>>>()?;
    keys.sort();
    let mut h = Sha256::new();
    h.update(user_id.as_bytes());
    h.update([0u8]);
    for k in &keys {
        h.update(k);
    }
    Ok(h.finalize().into())
}

/// The safety number of users `a` and `b`, each given with the ed25519 and curve25519 keys of
/// all their devices: six groups of five digits separated by spaces.
pub fn safety_number(a: (&str, &[String]), b: (&str, &[String])) -> Result<String> {
    let (fa, fb) = (fingerprint(a.0, a.1)?, fingerprint(b.0, b.1)?);
    let (lo, hi) = if fa <= fb { (fa, fb) } else { (fb, fa) };
    let mut h = Sha256::new();
    h.update(lo);
    h.update(hi);
    let digest: [u8; 32] = h.finalize().into();
    let groups: Vec<String> = digest[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect();
    Ok(groups.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        b64::encode([n; 32])
    }

    #[test]
    fn symmetric_and_changes_with_a_device() {
        let a = vec![key(1), key(2)];
        let b = vec![key(3)];
        let ab = safety_number(("11", &a), ("22", &b)).unwrap();
        let ba = safety_number(("22", &b), ("11", &a)).unwrap();
        assert_eq!(ab, ba);
        assert_eq!(ab.len(), 6 * 5 + 5);
        assert!(ab.split(' ').all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit())));
        // Device order does not matter; a new device does.
        let a_rev = vec![key(2), key(1)];
        assert_eq!(safety_number(("11", &a_rev), ("22", &b)).unwrap(), ab);
        let b2 = vec![key(3), key(4)];
        assert_ne!(safety_number(("11", &a), ("22", &b2)).unwrap(), ab);
        // The user ids are part of it.
        assert_ne!(safety_number(("12", &a), ("22", &b)).unwrap(), ab);
    }

    #[test]
    fn matches_the_definition() {
        // Recomputed step by step from docs/E2EE.md, independently of the code above.
        let ka = [9u8; 32];
        let kb = [1u8; 32];
        let f = |uid: &str, k: &[u8; 32]| -> [u8; 32] {
            let mut v = uid.as_bytes().to_vec();
            v.push(0);
            v.extend_from_slice(k);
            Sha256::digest(&v).into()
        };
        let (fa, fb) = (f("5", &ka), f("6", &kb));
        let mut cat = Vec::new();
        let (x, y) = if fa < fb { (fa, fb) } else { (fb, fa) };
        cat.extend_from_slice(&x);
        cat.extend_from_slice(&y);
        let d = Sha256::digest(&cat);
        let mut want = Vec::new();
        for i in 0..6 {
            let mut n = 0u64;
            for b in &d[i * 5..i * 5 + 5] {
                n = n * 256 + u64::from(*b);
            }
            want.push(format!("{:05}", n % 100_000));
        }
        let got = safety_number(("5", &[b64::encode(ka)]), ("6", &[b64::encode(kb)])).unwrap();
        assert_eq!(got, want.join(" "));
    }
}
