//! Pure: DKIM for mail we send (RFC 6376, and RFC 8463 for Ed25519). A local domain's
//! key pair is made here — the private key as PKCS#8 PEM for the cluster to keep, the
//! public half as the `v=DKIM1; k=...; p=...` TXT record the domain's owner publishes at
//! `SELECTOR._domainkey.DOMAIN` — and an outgoing message is signed with it, so that
//! receivers' DMARC checks pass for our domains. Signing and verification are
//! mail-auth's (on ring); RSA keys are made with the `rsa` crate, since ring cannot.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{DkimSigner, Done};
use rustls::pki_types::{PrivateKeyDer, pem::PemObject as _};

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("DKIM key generation failed: {0}")]
    Generate(String),
    #[error("not a usable DKIM private key (PEM, PKCS#8 or PKCS#1 RSA, or PKCS#8 Ed25519): {0}")]
    Key(String),
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// The key types DKIM receivers verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// RSA-SHA256 with a 2048-bit key: what every receiver verifies.
    Rsa2048,
    /// Ed25519-SHA256 (RFC 8463): short keys and signatures, not yet verified everywhere,
    /// so domains usually publish it beside an RSA selector.
    Ed25519,
}

impl DkimAlgorithm {
    /// The `k=` tag of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa2048 => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// A freshly made key pair.
pub struct GeneratedKey {
    /// The private key, PKCS#8 PEM: keep it secret, give it to [`DkimKey::from_pem`].
    pub private_key_pem: String,
    /// The TXT record to publish at [`record_name`].
    pub dns_record: String,
}

/// Makes a key pair for `algorithm`.
pub fn generate_key(algorithm: DkimAlgorithm) -> Result<GeneratedKey, SigningError> {
    let pkcs8 = match algorithm {
        DkimAlgorithm::Ed25519 => Ed25519Key::generate_pkcs8().map_err(|e| SigningError::Generate(e.to_string()))?,
        DkimAlgorithm::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey as _;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .map_err(|e| SigningError::Generate(e.to_string()))?;
            key.to_pkcs8_der().map_err(|e| SigningError::Generate(e.to_string()))?.as_bytes().to_vec()
        }
    };
    let private_key_pem = pem("PRIVATE KEY", &pkcs8);
    let dns_record = DkimKey::from_pem(&private_key_pem)?.dns_record();
    Ok(GeneratedKey { private_key_pem, dns_record })
}

/// Where a domain publishes the key of `selector`: `SELECTOR._domainkey.DOMAIN`.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{}", domain.trim_end_matches('.'))
}

/// A private key to sign with.
pub struct DkimKey {
    private_key: PrivateKey,
    /// The public key as the DNS record carries it (RSA: DER RSAPublicKey; Ed25519: the
    /// 32 raw bytes).
    public_key: Vec<u8>,
}

enum PrivateKey {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

impl DkimKey {
    /// Reads a PEM private key: PKCS#8 (RSA or Ed25519, as [`generate_key`] writes and
    /// `openssl genpkey` does) or PKCS#1 RSA (`BEGIN RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, SigningError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| SigningError::Key(e.to_string()))?;
        if let PrivateKeyDer::Pkcs8(pkcs8) = &der
            && let Ok(key) = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
        {
            let public_key = key.public_key();
            return Ok(Self { private_key: PrivateKey::Ed25519(key), public_key });
        }
        let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| SigningError::Key(e.to_string()))?;
        let public_key = key.public_key();
        Ok(Self { private_key: PrivateKey::Rsa(key), public_key })
    }

    pub fn algorithm(&self) -> DkimAlgorithm {
        match self.private_key {
            PrivateKey::Rsa(_) => DkimAlgorithm::Rsa2048,
            PrivateKey::Ed25519(_) => DkimAlgorithm::Ed25519,
        }
    }

    /// The TXT record that lets receivers verify this key's signatures.
    pub fn dns_record(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.algorithm().key_type(), BASE64.encode(&self.public_key))
    }
}

/// The headers signed when the message has them. A listed header that is absent is
/// signed as absent, so it cannot be added on the way without breaking the signature;
/// `From` twice, so a second `From:` cannot be slipped in either (RFC 6376 8.15).
const SIGNED_HEADERS: [&str; 13] = [
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Signs mail of one domain with the key of one of its selectors (one per local domain,
/// made once: the key is parsed and checked when it is made, not per message).
pub struct DomainSigner {
    signer: Signer,
}

enum Signer {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

impl DomainSigner {
    /// Signs as `domain` (`d=`) with `key`, published under `selector` (`s=`).
    pub fn new(domain: &str, selector: &str, key: DkimKey) -> Self {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let signer = match key.private_key {
            PrivateKey::Rsa(key) => {
                Signer::Rsa(DkimSigner::from_key(key).domain(domain).selector(selector).headers(SIGNED_HEADERS))
            }
            PrivateKey::Ed25519(key) => {
                Signer::Ed25519(DkimSigner::from_key(key).domain(domain).selector(selector).headers(SIGNED_HEADERS))
            }
        };
        Self { signer }
    }

    /// The `DKIM-Signature:` header field (CRLF included) to put on top of `message`
    /// (CRLF line endings, as the gateways store it); relaxed/relaxed canonicalisation,
    /// which survives the usual re-folding on the way.
    pub fn sign(&self, message: &[u8]) -> Result<String, SigningError> {
        let signature = match &self.signer {
            Signer::Rsa(signer) => signer.sign(message),
            Signer::Ed25519(signer) => signer.sign(message),
        };
        signature.map(|s| s.to_header()).map_err(|e| SigningError::Sign(e.to_string()))
    }
}

/// PEM text: base64 in lines of 64 between the label's BEGIN and END lines.
fn pem(label: &str, der: &[u8]) -> String {
    let encoded = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::authentication::test_records::{StaticTxt, verify_dkim};
    use crate::smtp::authentication::verdict::Outcome;

    const MESSAGE: &[u8] = b"From: Achieng <achieng@health.go.ke>\r\nTo: citizen@example.org\r\nSubject: Your permit\r\nDate: Mon, 1 Jun 2026 10:00:00 +0300\r\nMessage-ID: <1@health.go.ke>\r\n\r\nThe permit is ready.\r\n";

    /// Signs with a new key of `algorithm`, publishes its record in an in-memory zone and
    /// verifies with mail-auth as a receiver would; then a changed body must fail.
    async fn sign_then_verify(algorithm: DkimAlgorithm) {
        let generated = generate_key(algorithm).unwrap();
        assert!(generated.private_key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let prefix = format!("v=DKIM1; k={}; p=", algorithm.key_type());
        assert!(generated.dns_record.starts_with(&prefix), "{}", generated.dns_record);
        let key = DkimKey::from_pem(&generated.private_key_pem).unwrap();
        assert_eq!(key.algorithm(), algorithm);
        assert_eq!(key.dns_record(), generated.dns_record, "the record follows from the private key");

        let header = DomainSigner::new("Health.go.ke", "ums1", key).sign(MESSAGE).unwrap();
        assert!(header.starts_with("DKIM-Signature: ") && header.ends_with("\r\n"), "{header}");
        assert!(header.contains("d=health.go.ke") && header.contains("s=ums1"), "{header}");
        let zone = StaticTxt::new([(record_name("ums1", "health.go.ke"), generated.dns_record.clone())]);
        let signed = [header.as_bytes(), MESSAGE].concat();
        assert_eq!(verify_dkim(&zone, &signed).await, [(Outcome::Pass, "health.go.ke".to_string())]);

        let altered = [header.as_bytes(), &MESSAGE[..MESSAGE.len() - 8], b"denied.\r\n"].concat();
        assert_eq!(verify_dkim(&zone, &altered).await, [(Outcome::Fail, "health.go.ke".to_string())]);
        let other_key = generate_key(algorithm).unwrap().dns_record;
        let wrong_zone = StaticTxt::new([(record_name("ums1", "health.go.ke"), other_key)]);
        assert_eq!(verify_dkim(&wrong_zone, &signed).await[0].0, Outcome::Fail, "another key in DNS");
    }

    #[tokio::test]
    async fn rsa_signatures_verify_against_the_published_record() {
        sign_then_verify(DkimAlgorithm::Rsa2048).await;
    }

    #[tokio::test]
    async fn ed25519_signatures_verify_against_the_published_record() {
        sign_then_verify(DkimAlgorithm::Ed25519).await;
    }

    #[test]
    fn keys_are_read_from_pkcs1_too_and_garbage_is_refused() {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pkcs1 = rsa.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert_eq!(DkimKey::from_pem(&pkcs1).unwrap().algorithm(), DkimAlgorithm::Rsa2048);
        assert!(matches!(DkimKey::from_pem("not a key"), Err(SigningError::Key(_))));
        let truncated = pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00");
        assert!(matches!(DkimKey::from_pem(&truncated), Err(SigningError::Key(_))));
        assert_eq!(record_name("s1", "ministry.go.ke."), "s1._domainkey.ministry.go.ke");
    }
}
