//! The certificate a session's peer must show: the fingerprints its SDP offer named
//! (RFC 8122), checked inside the DTLS handshake.
//!
//! Why here and not only in str0m: str0m compares the fingerprint once the handshake is
//! over (`DtlsOutput::PeerCert`) and then drops the session silently, so a peer whose
//! certificate does not match sees a completed handshake and waits (FFmpeg sent media
//! into the void until its own timeout). Refused in OpenSSL's verify callback, the peer
//! gets a fatal `bad_certificate` alert and gives up at once. str0m's check still runs
//! after ours.

use std::sync::{Arc, OnceLock};

use openssl::hash::{hash, MessageDigest};
use openssl::x509::{X509StoreContextRef, X509VerifyResult};

/// One `a=fingerprint` of an offer: the hash function's name and the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The hash function, lower case (`sha-256`).
    pub hash: String,
    /// The certificate's digest by it.
    pub digest: Vec<u8>,
}

/// The fingerprints a session's peer was announced with, set once its offer is read
/// (the DTLS session exists before: str0m makes it inside `RtcConfig::build`). Until it is
/// set, the handshake is left to str0m's own check.
pub type ExpectedPeer = Arc<OnceLock<Vec<Fingerprint>>>;

/// Every `a=fingerprint` line of `sdp`, session- and media-level. Lines that do not parse
/// are left out (the offer check refuses them).
pub fn fingerprints_in(sdp: &str) -> Vec<Fingerprint> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
        .filter_map(|rest| {
            let (hash, hex) = rest.trim().split_once(' ')?;
            let digest = hex
                .trim()
                .split(':')
                .map(|b| u8::from_str_radix(b, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some(Fingerprint {
                hash: hash.to_ascii_lowercase(),
                digest,
            })
        })
        .collect()
}

/// OpenSSL's verify callback for one session: the leaf certificate must match one of
/// the expected fingerprints (any chain above it is the peer's business: WebRTC
/// certificates are self-signed, bound to the session by the SDP alone).
pub fn verify(expected: &ExpectedPeer, ctx: &mut X509StoreContextRef) -> bool {
    let Some(wanted) = expected.get() else {
        return true;
    };
    if ctx.error_depth() != 0 {
        return true;
    }
    let Some(der) = ctx.current_cert().and_then(|c| c.to_der().ok()) else {
        return false;
    };
    let ok = matches(wanted, &der);
    if !ok {
        // X509_V_ERR_CERT_REJECTED, which OpenSSL answers with a bad_certificate alert
        // (its default for a refusing callback is unknown_ca, which misleads).
        // SAFETY: 28 is X509_V_ERR_CERT_REJECTED in OpenSSL's x509_vfy.h, a valid code.
        ctx.set_error(unsafe { X509VerifyResult::from_raw(28) });
        tracing::info!(
            announced = %wanted.iter().map(|f| f.hash.as_str()).collect::<Vec<_>>().join(","),
            "DTLS: the peer's certificate is not the one its offer's fingerprint names"
        );
    }
    ok
}

/// Whether `der` has one of the `wanted` fingerprints. A hash function we do not know
/// matches nothing (RFC 8122 §5: the endpoint must refuse what it cannot check).
pub fn matches(wanted: &[Fingerprint], der: &[u8]) -> bool {
    wanted
        .iter()
        .any(|f| digest_of(&f.hash).is_some_and(|md| hash(md, der).is_ok_and(|d| *d == *f.digest)))
}

fn digest_of(name: &str) -> Option<MessageDigest> {
    match name {
        "sha-1" => Some(MessageDigest::sha1()),
        "sha-224" => Some(MessageDigest::sha224()),
        "sha-256" => Some(MessageDigest::sha256()),
        "sha-384" => Some(MessageDigest::sha384()),
        "sha-512" => Some(MessageDigest::sha512()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_fingerprints_are_read_and_compared() {
        let der = b"not really a certificate, but bytes to hash";
        let d = hash(MessageDigest::sha256(), der).unwrap();
        let hex: Vec<String> = d.iter().map(|b| format!("{b:02X}")).collect();
        let sdp = format!(
            "v=0\r\na=fingerprint:SHA-256 {}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
             a=fingerprint:md7 00:11\r\na=fingerprint:sha-256 zz\r\n",
            hex.join(":")
        );
        let fps = fingerprints_in(&sdp);
        assert_eq!(fps.len(), 2, "{fps:?}");
        assert!(matches(&fps, der));
        assert!(!matches(&fps, b"another certificate"));
        assert!(!matches(&fps[1..], der), "an unknown hash matches nothing");
    }
}
