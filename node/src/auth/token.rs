//! The bearer token's text (pure): `ums_{id}_{secret}`, 16 hex digits of public id
//! (the record's key, safe to show and log) and 32 random bytes of secret in unpadded
//! base64url. Only the SHA-256 of the secret is stored: the secret has 256 bits of
//! entropy, so a fast hash suffices (no password stretching), and checking a token
//! costs microseconds per request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::proto::state::ApiToken;

const PREFIX: &str = "ums_";
const ID_HEX_DIGITS: usize = 16;
const SECRET_BYTES: usize = 32;

/// Whether a stored token still opens the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Revoked,
    Expired,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Revoked => "revoked",
            TokenState::Expired => "expired",
        }
    }
}

/// The state of `record` at `now_ms` (a revocation outranks an expiry).
pub fn state(record: &ApiToken, now_ms: u64) -> TokenState {
    if record.revoked_ms != 0 {
        TokenState::Revoked
    } else if record.expires_ms != 0 && now_ms >= record.expires_ms {
        TokenState::Expired
    } else {
        TokenState::Active
    }
}

/// A token as the client presents it, split into its halves.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// A new token: the text shown once to its holder, its id, and what is stored.
pub struct NewToken {
    pub text: String,
    pub id: String,
    pub secret_sha256: [u8; 32],
}

/// A fresh random token.
pub fn generate() -> NewToken {
    let id = format!("{:016x}", rand::random::<u64>());
    let secret = URL_SAFE_NO_PAD.encode(rand::random::<[u8; SECRET_BYTES]>());
    NewToken { text: format!("{PREFIX}{id}_{secret}"), secret_sha256: digest(&secret), id }
}

/// Splits a presented token; `None` when it is not shaped like one of ours.
pub fn parse(text: &str) -> Option<Presented<'_>> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_at_checked(ID_HEX_DIGITS)?;
    let secret = secret.strip_prefix('_')?;
    let id_ok = valid_id(id);
    let secret_ok = secret.len() == 43 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(Presented { id, secret })
}

/// Whether `id` is shaped like a token's public id (16 lower-case hex digits).
pub fn valid_id(id: &str) -> bool {
    id.len() == ID_HEX_DIGITS && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` hashes to `stored`, in time independent of where they differ.
pub fn secret_matches(secret: &str, stored: &[u8]) -> bool {
    stored.len() == 32 && bool::from(digest(secret).ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_and_matches_only_its_own_digest() {
        let token = generate();
        let presented = parse(&token.text).expect("our own format");
        assert_eq!(presented.id, token.id);
        assert!(secret_matches(presented.secret, &token.secret_sha256));
        let other = generate();
        assert!(!secret_matches(presented.secret, &other.secret_sha256));
        assert!(!secret_matches(presented.secret, &token.secret_sha256[..31]));
    }

    #[test]
    fn malformed_tokens_are_not_parsed() {
        let token = generate();
        let good = token.text.as_str();
        for bad in [
            "",
            "ums_",
            &good[..good.len() - 1],
            &format!("{good}x"),
            &good.replacen("ums_", "UMS_", 1),
            &good.replacen(&token.id, &token.id.to_uppercase(), 1),
            &good.replacen('_', "", 1),
            "ums_0123456789abcdef_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            "Bearer ums_0123456789abcdef",
        ] {
            if bad != good {
                assert_eq!(parse(bad), None, "{bad:?}");
            }
        }
    }
}
