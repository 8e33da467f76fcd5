//! The cluster's own certificate authority, for mutual TLS between nodes: one CA per
//! cluster, and for each node a certificate whose one DNS name,
//! `node-{id}.{cluster_id}.ums`, says which node of which cluster holds it. A peer's
//! claimed node id is checked against that name, so a certificate opens one node's
//! seat in one cluster and nothing else.
//!
//! `umsctl ca init` and `umsctl ca issue` call this; `umsd dev` and the tests do it for
//! their clusters. Private keys are written readable by their owner only.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::Datelike as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";

/// The file names of node `node_id`'s certificate and key.
pub fn node_files(node_id: u64) -> (String, String) {
    (format!("node-{node_id}.pem"), format!("node-{node_id}.key"))
}

/// How long a CA and a node certificate are valid, in years.
const CA_YEARS: i32 = 10;
const NODE_YEARS: i32 = 2;

/// A certificate and its private key, PEM-encoded.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// The DNS name in node `node_id`'s certificate.
pub fn node_name(cluster_id: &str, node_id: u64) -> String {
    format!("node-{node_id}.{cluster_id}.ums")
}

/// Whether a cluster id can stand in a certificate's DNS name (one DNS label).
pub fn check_cluster_id(cluster_id: &str) -> anyhow::Result<()> {
    let label_ok = (1..=63).contains(&cluster_id.len())
        && cluster_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !cluster_id.starts_with('-')
        && !cluster_id.ends_with('-');
    if !label_ok {
        bail!("cluster id '{cluster_id}' must be 1-63 lower-case letters, digits and inner '-' for peer TLS");
    }
    Ok(())
}

/// Valid from yesterday (clocks differ a little) for `years`.
fn validity(params: &mut CertificateParams, years: i32) {
    let today = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let (month, day) = (today.month() as u8, today.day().min(28) as u8);
    params.not_before = rcgen::date_time_ymd(today.year(), month, day);
    params.not_after = rcgen::date_time_ymd(today.year() + years, month, day);
}

/// The CA's parameters: the same for every call, so a CA can sign again with only its
/// key and cluster id (the issuer rcgen needs is rebuilt from them).
fn ca_params(cluster_id: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "UMS");
    name.push(DnType::CommonName, format!("UMS cluster CA {cluster_id}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A new CA for `cluster_id`.
pub fn create_ca(cluster_id: &str) -> anyhow::Result<Pem> {
    check_cluster_id(cluster_id)?;
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = ca_params(cluster_id);
    validity(&mut params, CA_YEARS);
    let cert = params.self_signed(&key).context("signing the CA certificate")?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// A certificate for node `node_id` of `cluster_id`, signed by `ca`.
pub fn issue_node(ca: &Pem, cluster_id: &str, node_id: u64) -> anyhow::Result<Pem> {
    check_cluster_id(cluster_id)?;
    let ca_key = KeyPair::from_pem(&ca.key).context("reading the CA key")?;
    let issuer = ca_params(cluster_id).self_signed(&ca_key).context("rebuilding the CA")?;
    let name = node_name(cluster_id, node_id);
    let mut params = CertificateParams::new(vec![name.clone()]).context("the node's name")?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "UMS");
    subject.push(DnType::CommonName, name);
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, NODE_YEARS);
    let key = KeyPair::generate().context("generating the node key")?;
    let cert = params.signed_by(&key, &issuer, &ca_key).context("signing the node certificate")?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// Writes `pem` as `cert_path` (0644) and `key_path` (0600).
pub fn write(pem: &Pem, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    devkit::tokens::write_secret_file(key_path, pem.key.trim_end())
        .with_context(|| format!("writing {}", key_path.display()))?;
    std::fs::write(cert_path, &pem.cert).with_context(|| format!("writing {}", cert_path.display()))
}

/// Reads the CA in `dir`.
pub fn read_ca(dir: &Path) -> anyhow::Result<Pem> {
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run `umsctl ca init` first)", path.display()))
    };
    Ok(Pem { cert: read(CA_CERT_FILE)?, key: read(CA_KEY_FILE)? })
}

/// Creates the CA in `dir` unless it is there already.
pub fn ensure_ca(dir: &Path, cluster_id: &str) -> anyhow::Result<()> {
    if dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists() {
        return Ok(());
    }
    write(&create_ca(cluster_id)?, &dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))
}

/// Issues node `node_id` its certificate into `out` (as [`node_files`]) unless it is
/// there already; returns the certificate's and key's paths.
pub fn ensure_node(ca_dir: &Path, out: &Path, cluster_id: &str, node_id: u64) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert_file, key_file) = node_files(node_id);
    let (cert, key) = (out.join(cert_file), out.join(key_file));
    if !(cert.exists() && key.exists()) {
        write(&issue_node(&read_ca(ca_dir)?, cluster_id, node_id)?, &cert, &key)?;
    }
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_must_be_one_dns_label() {
        for good in ["dev-0123abcd", "test-ff", "ums"] {
            assert!(check_cluster_id(good).is_ok(), "{good}");
        }
        for bad in ["", "Dev", "a_b", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(check_cluster_id(bad).is_err(), "{bad}");
        }
        assert!(create_ca("Not A Label").is_err());
    }

    #[test]
    fn a_node_certificate_names_its_node_and_cluster() {
        let ca = create_ca("test-1").unwrap();
        let node = issue_node(&ca, "test-1", 2).unwrap();
        assert!(node.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(node.key.contains("PRIVATE KEY"));
        assert_eq!(node_name("test-1", 2), "node-2.test-1.ums");
    }
}
