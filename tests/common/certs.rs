//! DTLS certificates for third-party publishers: a fresh self-signed ECDSA P-256 one, the
//! only kind of peer certificate str0m 0.25's DTLS (dimpl 0.9) accepts besides P-384.
//!
//! Owns a temp dir holding the PEM files; they are gone when the `Pem` is dropped.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// A certificate and its key as PEM files.
pub struct Pem {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
    /// Certificate then key in one file (what GStreamer's DTLS elements take).
    pub both: PathBuf,
    _dir: tempfile::TempDir,
}

/// A new self-signed ECDSA P-256 certificate for `name`, written as PEM.
pub fn ecdsa_p256(name: &str) -> Pem {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_string()])
        .expect("rcgen makes a P-256 certificate");
    let cert = certified.cert.pem();
    let key = certified.signing_key.serialize_pem();
    let dir = tempfile::tempdir().expect("a temp dir for the certificate");
    let pem = Pem {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        both: dir.path().join("cert_and_key.pem"),
        _dir: dir,
    };
    std::fs::write(&pem.cert, &cert).expect("write cert.pem");
    std::fs::write(&pem.key, &key).expect("write key.pem");
    std::fs::write(&pem.both, format!("{cert}{key}")).expect("write cert_and_key.pem");
    pem
}
