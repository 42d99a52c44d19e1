//! The password hasher: argon2id off the async threads, a few at a time, because each hash
//! costs ~50 ms of CPU; and a dummy hash so a login for a missing account costs the same.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

pub(crate) struct Passwords {
    permits: Arc<Semaphore>,
    /// Verified against when a username does not exist, so a wrong username costs as much time
    /// as a wrong password and logins do not reveal which accounts exist.
    dummy_hash: String,
}

impl Passwords {
    pub(crate) async fn new(concurrency: usize) -> Passwords {
        let dummy_hash = tokio::task::spawn_blocking(|| hash_blocking("parley-dummy-password"))
            .await
            .expect("hashing task")
            .expect("hashing a constant cannot fail");
        Passwords { permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy_hash }
    }

    pub(crate) async fn hash(&self, password: &str) -> ApiResult<String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::new(parley_proto::ErrorCode::Unavailable, "shutting down"))?;
        let pw = password.to_owned();
        tokio::task::spawn_blocking(move || hash_blocking(&pw)).await.map_err(|_| internal())?.map_err(|_| internal())
    }

    /// Checks `password` against `hash`, or against the dummy hash when there is no account.
    pub(crate) async fn verify(&self, password: &str, hash: Option<&str>) -> ApiResult<bool> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::new(parley_proto::ErrorCode::Unavailable, "shutting down"))?;
        let exists = hash.is_some();
        let (pw, h) = (password.to_owned(), hash.unwrap_or(&self.dummy_hash).to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&h).is_ok_and(|parsed| Argon2::default().verify_password(pw.as_bytes(), &parsed).is_ok())
        })
        .await
        .map_err(|_| internal())?;
        Ok(ok && exists)
    }
}

fn internal() -> ApiError {
    ApiError::new(parley_proto::ErrorCode::Internal, "internal error")
}

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}
