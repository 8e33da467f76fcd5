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

/// The costliest argon2 parameters a stored hash may name. A hash is the recipe for its
/// own check, so an imported `m=4194304` would make every login with it allocate 4 GiB;
/// OWASP's strongest recommendation is m=47104 (46 MiB), t=1.
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
pub const MAX_ITERATIONS: u32 = 16;
pub const MAX_PARALLELISM: u32 = 8;

/// Whether `hash` is an argon2 PHC string whose check costs at most the limits above.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = argon2::password_hash::PasswordHash::new(hash)
        .map_err(|_| "password_hash is not a PHC string (argon2)".to_string())?;
    if !matches!(parsed.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") {
        return Err(format!("password_hash uses {}, not argon2", parsed.algorithm));
    }
    let params = argon2::Params::try_from(&parsed).map_err(|e| format!("password_hash parameters: {e}"))?;
    if params.m_cost() > MAX_MEMORY_KIB || params.t_cost() > MAX_ITERATIONS || params.p_cost() > MAX_PARALLELISM {
        return Err(format!(
            "password_hash costs m={},t={},p={}; at most m={MAX_MEMORY_KIB},t={MAX_ITERATIONS},p={MAX_PARALLELISM} are accepted",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(())
}

/// Checks `password` against an argon2 hash from the directory. A hash over the cost
/// limits (stored before they existed) never matches rather than exhausting memory.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    if let Err(why) = check_hash(hash) {
        tracing::warn!("a stored password hash is refused: {why}");
        return false;
    }
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

    #[test]
    fn imported_hashes_are_argon2_within_the_cost_limits() {
        assert_eq!(check_hash(&hash_password("demo-password-1").unwrap()), Ok(()));
        let salt = "c29tZXNhbHRzb21lc2FsdA";
        let digest = "YQ4VqN3bP5oQ5J8v3wS0GJqGdX6Lh9m0cVq3n0qv8yA";
        let with = |params: &str| format!("$argon2id$v=19${params}${salt}${digest}");
        assert_eq!(check_hash(&with("m=19456,t=2,p=1")), Ok(()));
        for costly in ["m=4194304,t=1,p=1", "m=19456,t=1000,p=1", "m=19456,t=2,p=64"] {
            let refused = check_hash(&with(costly)).unwrap_err();
            assert!(refused.contains("at most"), "{costly}: {refused}");
            assert!(!verify_password("anything", &with(costly)));
        }
        assert!(check_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
        assert!(check_hash("not a hash").is_err());
    }
}
