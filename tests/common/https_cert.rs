//! A self-signed HTTPS certificate for a test server on 127.0.0.1 (also named `localhost`),
//! written as PEM files, with what clients need to trust it: the certificate itself for
//! curl's `--cacert`, and the SHA-256 of its public key for Chromium's
//! `--ignore-certificate-errors-spki-list`.
//!
//! Owns a temp dir holding the files; they are gone when the `ServerCert` is dropped.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use rcgen::PublicKeyData;

/// A certificate and key as PEM files, and its public key's pin.
pub struct ServerCert {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// base64(SHA-256(SubjectPublicKeyInfo DER)): Chromium's SPKI pin.
    pub spki_sha256: String,
    /// The temp dir holding the files (tests may write more there).
    pub dir: tempfile::TempDir,
}

/// A new ECDSA P-256 certificate for 127.0.0.1 and localhost.
pub fn loopback() -> ServerCert {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("rcgen makes a certificate");
    let dir = tempfile::tempdir().expect("a temp dir for the certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert.pem");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key.pem");
    let spki = certified.signing_key.subject_public_key_info();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
    ServerCert {
        cert,
        key,
        spki_sha256: base64(digest.as_ref()),
        dir,
    }
}

/// Standard base64 with padding (RFC 4648 §4), what Chromium's SPKI list takes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_rfc_4648() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
