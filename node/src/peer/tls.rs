//! Mutual TLS between nodes. Both ends show a certificate of the cluster's CA (see
//! [`crate::pki`]); the dialer checks that the node it dials holds that node's name,
//! and the listener, once the dialer has said which node it is, checks the same of the
//! dialer's certificate. A process without a certificate of this cluster's CA gets no
//! further than the TLS handshake: it learns nothing (not even the cluster id) and can
//! send nothing.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use consensus::NodeId;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use crate::pki::{check_cluster_id, node_name};

/// `[peer_tls]` in `node.toml`: the cluster CA and this node's certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsSettings {
    /// The cluster CA's certificate (PEM): the only issuer peers are trusted from.
    pub ca: PathBuf,
    /// This node's certificate and key (`umsctl ca issue`), naming `node-{id}.{cluster}.ums`.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS ends of one node's peer connections.
pub struct PeerTls {
    cluster_id: String,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl PeerTls {
    pub fn load(settings: &PeerTlsSettings, cluster_id: &str) -> anyhow::Result<Arc<Self>> {
        check_cluster_id(cluster_id)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in gateways::tls::load_certs(&settings.ca)? {
            roots.add(ca).with_context(|| format!("{} is not a CA certificate", settings.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let (certs, key) = gateways::tls::load_identity(&settings.cert, &settings.key)?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider.clone())
                .build()
                .context("the peer CA")?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .with_context(|| format!("the node certificate {}", settings.cert.display()))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .with_context(|| format!("the node certificate {}", settings.cert.display()))?;
        Ok(Arc::new(Self {
            cluster_id: cluster_id.to_string(),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        }))
    }

    /// The client side: the handshake fails unless `peer` holds its certificate.
    pub async fn connect(&self, stream: TcpStream, peer: NodeId) -> std::io::Result<client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(node_name(&self.cluster_id, peer))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, stream).await
    }

    /// The server side: the handshake fails unless the client shows a certificate of
    /// the cluster CA; which node it may speak for is [`PeerTls::holds`]'s question.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<server::TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }

    /// The certificate the client of `stream` showed (its chain was checked in the
    /// handshake).
    pub fn client_certificate(stream: &server::TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
        stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|leaf| leaf.clone().into_owned())
    }

    /// Whether `leaf` is node `node_id`'s certificate (of this cluster).
    pub fn holds(&self, leaf: &CertificateDer<'_>, node_id: NodeId) -> bool {
        certificate_names(leaf, &node_name(&self.cluster_id, node_id))
    }
}

/// Whether `leaf` is valid for the DNS name `name`.
fn certificate_names(leaf: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else { return false };
    let Ok(name) = ServerName::try_from(name) else { return false };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    fn der(pem: &str) -> CertificateDer<'static> {
        gateways::tls::parse_certs(pem.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn a_node_certificate_is_valid_for_its_own_name_only() {
        let ca = pki::create_ca("test-names").unwrap();
        let node2 = der(&pki::issue_node(&ca, "test-names", 2).unwrap().cert);
        assert!(certificate_names(&node2, "node-2.test-names.ums"));
        assert!(!certificate_names(&node2, "node-3.test-names.ums"), "another node's seat");
        assert!(!certificate_names(&node2, "node-2.other-cluster.ums"), "another cluster");
    }
}
