//! HTTPS for signalling: the process's rustls crypto provider, and the server's rustls
//! configuration read from the PEM certificate and key, with errors that name the file and
//! what is wrong with it.
//!
//! Why a provider is installed explicitly: rustls picks one from its crate features only when
//! exactly one of `aws-lc-rs` and `ring` is enabled, and our dependencies enable both (str0m
//! wants aws-lc-rs, ureq ring), so rustls panicked at the first HTTPS
//! configuration. We install aws-lc-rs, the one str0m and our STUN code already link.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not PEM, or holds no item of the kind wanted.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wanted and what went wrong.
        what: String,
    },
    /// rustls refused the pair (the key does not belong to the certificate, a key type
    /// it cannot sign with...).
    #[error("{} with {}: {reason}", cert.display(), key.display())]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason, in words.
        reason: String,
    },
}

/// Installs aws-lc-rs as the process's rustls provider unless one is installed already (an
/// embedder's choice is kept), and returns the provider in force. Safe to call any number of
/// times from any thread.
pub fn install_crypto_provider() -> Arc<CryptoProvider> {
    if let Some(p) = CryptoProvider::get_default() {
        return p.clone();
    }
    // Losing a race to another thread's install is fine: theirs is then the default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Reads and checks `tls`'s certificate chain and key and builds the HTTPS server's
/// configuration (HTTP/2 and HTTP/1.1 offered by ALPN). What `--check-config` runs too.
pub fn server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let provider = install_crypto_provider();
    let certs = read_certs(&tls.cert)?;
    let key = read_key(&tls.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| TlsError::Refused {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            reason: match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    "the key is not the certificate's (its public key differs)".into()
                }
                e => e.to_string(),
            },
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not a PEM certificate chain ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file".into()
            }
            e => format!("not a PEM private key ({e})"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installing_twice_keeps_one_provider() {
        let a = install_crypto_provider();
        let b = install_crypto_provider();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(CryptoProvider::get_default().is_some());
    }

    #[test]
    fn missing_and_non_pem_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let e = server_config(&TlsConfig {
            cert: missing.clone(),
            key: garbage.clone(),
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let e = server_config(&TlsConfig {
            cert: garbage.clone(),
            key: garbage.clone(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
