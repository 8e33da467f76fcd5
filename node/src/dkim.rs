//! DKIM signing of the mail this node relays: the local domains' keys, copied from this
//! node's replica of the meta group every [`SYNC_EVERY`], and a signature by the domain
//! of the message's one `From:` address (so that receivers' DMARC checks align) put on
//! top of each message as it leaves.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use gateways::smtp::authentication::signing::{DkimKey, DomainSigner};
use gateways::smtp::message::from_addresses;
use tracing::warn;

use crate::cluster::Cluster;

/// How often the node copies the keys from its replica (a new key signs within this).
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The signers of the local domains that have a key, by domain.
#[derive(Default)]
pub struct DkimSigners {
    signers: RwLock<HashMap<String, Arc<Signer>>>,
}

impl std::fmt::Debug for DkimSigners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domains: Vec<String> = self.signers.read().unwrap().keys().cloned().collect();
        f.debug_struct("DkimSigners").field("domains", &domains).finish()
    }
}

struct Signer {
    /// The key text it was made from, to remake it only when the key changes.
    pem: String,
    selector: String,
    signer: DomainSigner,
}

impl DkimSigners {
    /// Starts copying the cluster's keys, on the current tokio runtime.
    pub fn start(cluster: Arc<Cluster>) -> Arc<Self> {
        let signers = Arc::new(Self::default());
        let copy = Arc::clone(&signers);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SYNC_EVERY);
            loop {
                every.tick().await;
                if let Ok(keys) = cluster.dkim_keys(true).await {
                    copy.replace(keys.into_iter().map(|k| (k.domain, k.selector, k.private_key_pem)));
                }
            }
        });
        signers
    }

    /// Makes the signers `(domain, selector, private key PEM)` name, reusing unchanged ones.
    pub fn replace(&self, keys: impl Iterator<Item = (String, String, String)>) {
        let old = self.signers.read().unwrap().clone();
        let mut fresh = HashMap::new();
        for (domain, selector, pem) in keys {
            if let Some(same) = old.get(&domain).filter(|s| s.pem == pem && s.selector == selector) {
                fresh.insert(domain, Arc::clone(same));
                continue;
            }
            match DkimKey::from_pem(&pem) {
                Ok(key) => {
                    let signer = DomainSigner::new(&domain, &selector, key);
                    fresh.insert(domain, Arc::new(Signer { pem, selector, signer }));
                }
                Err(e) => warn!(%domain, error = %e, "unusable DKIM key; its mail leaves unsigned"),
            }
        }
        *self.signers.write().unwrap() = fresh;
    }

    /// `message` with a `DKIM-Signature` of its `From:` domain on top, when that domain
    /// has a key; else as it is.
    pub fn sign<'a>(&self, message: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let Some(domain) = from_domain(message) else {
            return message.into();
        };
        let Some(signer) = self.signers.read().unwrap().get(&domain).cloned() else {
            return message.into();
        };
        match signer.signer.sign(message) {
            Ok(header) => {
                metrics::counter!("ums_dkim_signed_total").increment(1);
                [header.as_bytes(), message].concat().into()
            }
            Err(e) => {
                warn!(%domain, error = %e, "DKIM signing failed; sent unsigned");
                message.into()
            }
        }
    }
}

/// The domain of the one `From:` address, lower case.
fn from_domain(message: &[u8]) -> Option<String> {
    match from_addresses(message)?.as_slice() {
        [address] => address.rsplit_once('@').map(|(_, domain)| domain.to_ascii_lowercase()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateways::smtp::authentication::signing::{DkimAlgorithm, generate_key};

    #[test]
    fn mail_of_a_domain_with_a_key_is_signed_by_that_domain_and_other_mail_is_not() {
        let key = generate_key(DkimAlgorithm::Ed25519).unwrap();
        let signers = DkimSigners::default();
        signers.replace([("health.go.ke".to_string(), "ums1".to_string(), key.private_key_pem)].into_iter());
        let ours = b"From: Ana <ana@Health.go.ke>\r\nTo: x@example.org\r\nSubject: s\r\n\r\nbody\r\n";
        let signed = signers.sign(ours);
        let text = String::from_utf8_lossy(&signed);
        assert!(text.starts_with("DKIM-Signature:"), "{text}");
        assert!(text.contains("d=health.go.ke") && text.contains("s=ums1"), "{text}");
        assert!(signed.ends_with(ours));
        let theirs = b"From: someone@example.org\r\n\r\nbody\r\n";
        assert_eq!(&*signers.sign(theirs), theirs);
        let two_froms = b"From: a@health.go.ke\r\nFrom: b@health.go.ke\r\n\r\nbody\r\n";
        assert_eq!(&*signers.sign(two_froms), two_froms);
    }
}
