//! DTLS for every `Rtc` we build: a DTLS 1.2 session over OpenSSL ([`session`]) in
//! place of str0m's default stack (dimpl).
//!
//! Why: real peers' certificates. GStreamer's webrtcbin (and the devices and tools built
//! on it) makes an RSA-2048 certificate; dimpl 0.9 as DTLS server asks only for ECDSA
//! client certificates, and as DTLS client offers only ECDHE-ECDSA suites, so those peers
//! could neither publish nor play. FFmpeg 8's WHIP muxer makes a P-224 ECDSA certificate,
//! whose signatures dimpl's verifier cannot check (we used to patch that in). OpenSSL
//! accepts RSA and every NIST curve in both roles, and sends the fatal alert a peer needs
//! to stop waiting when a handshake fails (dimpl sends none).
//!
//! Why OpenSSL for every peer and not only for RSA ones: as DTLS server we learn the
//! peer's certificate type only from its Certificate message, after our CertificateRequest
//! has already said what we accept, so the stack must be chosen before. The cost was
//! measured side by side (`cargo bench --bench dtls_handshake`, the server's side of one
//! handshake with a browser-like ECDSA P-256 client, certificate generation included, see
//! the README): OpenSSL is within the 25% the interop issue allowed.
//!
//! The certificate stays one P-256 ECDSA key per `Rtc` made by dimpl's generator (one
//! sha-256 fingerprint line in every answer); OpenSSL is vendored (built from source by
//! the `openssl` crate), so `cargo build` alone builds it on a fresh machine. SRTP stays
//! str0m-aws-lc-rs's, by measurement (`cargo bench --bench srtp`, one 550-byte Opus
//! packet): AEAD_AES_128_GCM 0.26 µs, AEAD_AES_256_GCM 0.28 µs, AES128_CM_SHA1_80 1.13 µs,
//! so the GCM profiles are preferred ([`context`]).

mod context;
mod peer;
mod session;
mod wire;

pub use peer::{fingerprints_in, ExpectedPeer, Fingerprint};

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{DtlsCert, DtlsInstance, DtlsProvider, DtlsVersion};
use str0m::crypto::{CryptoError, CryptoProvider};

use crate::net::srtp::SrtpSender;

/// The MTU DTLS records are sized for when str0m names none (str0m's own target).
const DEFAULT_MTU: usize = 1150;

/// The crypto provider every server-side `Rtc` uses (see the module doc).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut p = str0m::crypto::from_feature_flags();
            p.dtls_provider = &DTLS;
            Arc::new(p)
        })
        .clone()
}

static DTLS: OpensslDtls = OpensslDtls;

/// str0m's DTLS provider interface over [`session::Session`].
#[derive(Debug)]
struct OpensslDtls;

impl DtlsProvider for OpensslDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        dimpl::certificate::generate_self_signed_certificate().ok()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        match version {
            // Auto: DTLS 1.2 is what OpenSSL speaks, and every WebRTC stack offers it.
            DtlsVersion::Dtls12 | DtlsVersion::Auto => {}
            other => {
                return Err(CryptoError::Other(format!(
                    "DTLS version {other} not supported (OpenSSL speaks DTLS 1.2)"
                )))
            }
        }
        let handles = SessionHandles::default();
        let session = session::Session::new(
            cert,
            now,
            mtu.unwrap_or(DEFAULT_MTU),
            handles.srtp_keys.clone(),
            handles.expected_peer.clone(),
        )?;
        LAST_SESSION.with(|k| *k.borrow_mut() = Some(handles));
        Ok(Box::new(session))
    }
}

/// Our sending half of a session's SRTP (GCM profiles only), filled in when its DTLS
/// handshake exports the keying material; read by the `direct` fan-out
/// ([`crate::config::Fanout::Direct`]). Stays empty for AES-CM sessions.
pub type SrtpKeys = Arc<OnceLock<SrtpSender>>;

/// What the engine shares with one DTLS session it did not create itself.
#[derive(Debug, Clone, Default)]
pub struct SessionHandles {
    /// Filled in by the session when its handshake is done.
    pub srtp_keys: SrtpKeys,
    /// Filled in by the engine from the offer (see [`ExpectedPeer`]).
    pub expected_peer: ExpectedPeer,
}

thread_local! {
    /// The handles of the DTLS session this thread created last: str0m creates an `Rtc`'s
    /// DTLS session inside `RtcConfig::build`, so right after a build this is that `Rtc`'s.
    static LAST_SESSION: RefCell<Option<SessionHandles>> = const { RefCell::new(None) };
}

/// The handles of the `Rtc` this thread built last (see [`SessionHandles`]); call right
/// after building it.
pub fn take_last_session() -> Option<SessionHandles> {
    LAST_SESSION.with(|k| k.borrow_mut().take())
}

#[cfg(test)]
mod tests;
