//! Password hashing (argon2id with the crate's default cost, PHC strings) off the async
//! threads: one hash takes tens of milliseconds by design.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use starling_api::ApiError;

/// Shortest password accepted, as Mastodon's.
pub const MIN_LEN: usize = 8;
/// Longest: argon2 takes any length, but a megabyte "password" is an attack.
pub const MAX_LEN: usize = 256;

pub async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(ApiError::unavailable)?
    .map_err(ApiError::unavailable)
}

/// Whether `password` matches `phc`. With `phc` `None` (no such account) a hash is
/// still computed, so the answer takes as long either way and does not tell which.
pub async fn verify(password: String, phc: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let Some(phc) = phc else {
            let salt = SaltString::generate(&mut OsRng);
            let _ = Argon2::default().hash_password(password.as_bytes(), &salt);
            return false;
        };
        PasswordHash::new(&phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .map_err(ApiError::unavailable)
}
