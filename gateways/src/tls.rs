//! TLS for the gateways (STARTTLS, implicit TLS) and the API's HTTPS: loading a PEM certificate and key into rustls, and a
//! self-signed certificate for development clusters.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

/// The certificate chain and private key in these PEM files.
pub fn load_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let key_pem = read(key_path)?;
    let certs = load_certs(cert_path)?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
        .map_err(|e| invalid(key_path, e.to_string()))?
        .ok_or_else(|| invalid(key_path, "no private key in the file".into()))?;
    Ok((certs, key))
}

/// The certificates in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = parse_certs(&read(path)?).map_err(|e| invalid(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid(path, "no certificate in the file".into()));
    }
    Ok(certs)
}

/// The certificates in PEM text.
pub fn parse_certs(pem: &[u8]) -> std::io::Result<Vec<CertificateDer<'static>>> {
    rustls_pemfile::certs(&mut BufReader::new(pem)).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

pub fn invalid(path: &Path, message: String) -> TlsError {
    TlsError::Invalid { path: path.display().to_string(), message }
}

/// A TLS acceptor for the certificate chain and private key in these PEM files.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(cert_path, key_path)?)))
}

/// The rustls server side (TLS 1.2 and 1.3, ring) for the certificate chain and private
/// key in these PEM files; the API's HTTPS uses it too.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let (certs, key) = load_identity(cert_path, key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(cert_path, e.to_string()))
}

/// The server side of a STARTTLS handshake, bounded in time; `None` (logged) if the
/// client fails it.
pub async fn upgrade(
    acceptor: &TlsAcceptor,
    plain: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(std::time::Duration::from_secs(30), acceptor.accept(plain)).await {
        Ok(Ok(encrypted)) => Some(encrypted),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Writes a self-signed certificate for `names` to the two paths unless both exist
/// (development clusters: clients must be told to accept it).
pub fn ensure_self_signed(cert_path: &Path, key_path: &Path, names: &[String]) -> Result<(), TlsError> {
    if cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    let generated =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |path: &Path, text: String| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| TlsError::Read { path: dir.display().to_string(), source })?;
        }
        std::fs::write(path, text).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
    };
    write(key_path, generated.key_pair.serialize_pem())?;
    write(cert_path, generated.cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_loads_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls/cert.pem"), dir.path().join("tls/key.pem"));
        ensure_self_signed(&cert, &key, &["localhost".into()]).unwrap();
        let first = std::fs::read(&cert).unwrap();
        ensure_self_signed(&cert, &key, &["localhost".into()]).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first, "an existing certificate is kept");
        acceptor(&cert, &key).unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let error = acceptor(&cert, &key).err().expect("a broken key is refused");
        assert!(error.to_string().contains("no private key"), "{error}");
    }
}
