//! Passwords in the directory: argon2id hashes, their checks, and one-time initial
//! passwords for users imported without one.

use gateways::mail_service::ServiceError;

/// Argon2 is deliberately slow (tens of milliseconds): keep it off the async workers.
pub(crate) async fn hash_password_off_thread(password: String) -> Result<String, ServiceError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
}

/// Hashes a password for the directory (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, ServiceError> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    if password.len() < 8 {
        return Err(ServiceError::Invalid("password must be at least 8 characters".into()));
    }
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

/// Checks `password` against an argon2 hash from the directory.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

pub(crate) fn one_time_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..12).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("demo-password-1").unwrap();
        assert!(hash.starts_with("$argon2"));
        assert!(verify_password("demo-password-1", &hash));
        assert!(!verify_password("demo-password-2", &hash));
        assert!(hash_password("short").is_err());
        assert_eq!(one_time_password().len(), 12);
    }
}
