//! DTLS for every `Rtc` we build: str0m's own stack (dimpl over aws-lc-rs), with one
//! change: the peer's handshake signature may also come from a P-224 ECDSA key.
//!
//! Why: FFmpeg 8's WHIP muxer makes itself a P-224 certificate, and dimpl 0.9's verifier
//! knows only P-256 and P-384, so every FFmpeg handshake failed with "unsupported EC
//! curve" (found with a real FFmpeg, `tests/ffmpeg_whip.rs`). We wrap dimpl's verifier and
//! verify P-224 signatures with aws-lc (the library already linked for DTLS and SRTP),
//! through its C API because aws-lc-rs does not expose that curve. Everything else,
//! certificate generation, cipher suites and key exchange, is dimpl's, unchanged. The
//! peer's certificate is self-signed either way; what binds it to the session is its SDP
//! fingerprint, which str0m checks.
//!
//! Not fixed here: GStreamer 1.22's webrtcbin has an RSA certificate, and dimpl's DTLS
//! server asks only for ECDSA client certificates, so that needs a change in dimpl itself.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use dimpl::crypto::{HashAlgorithm, SignatureAlgorithm};
use dimpl::CryptoError as DimplCryptoError;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::Decode;

use crate::net::srtp::SrtpSender;

/// id-ecPublicKey (RFC 5480).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp224r1 (RFC 5480).
const OID_P224: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.33");

/// The crypto provider every server-side `Rtc` uses (see the module doc).
///
/// SRTP stays str0m-aws-lc-rs's, by measurement (`cargo bench --bench srtp`, one 550-byte
/// Opus packet): AEAD_AES_128_GCM 0.26 µs, AEAD_AES_256_GCM 0.28 µs, AES128_CM_SHA1_80
/// 1.13 µs as shipped (AES key schedule and HMAC key rebuilt per packet), 0.72 µs with both
/// kept (HMAC-SHA1 itself is most of it). dimpl's DTLS 1.2 server (str0m's default version)
/// already picks AES-256-GCM, then AES-128-GCM, before AES-CM, and browsers and str0m
/// clients offer GCM, so viewers get GCM: 4 times cheaper than AES-CM, under a tenth of a
/// viewer's fan-out cost. A provider keeping the AES-CM keys would only help peers that
/// offer AES-CM alone, and the HMAC key arrives per call through the shared
/// `Sha1HmacProvider` (also used for STUN), so keeping it needs a cache keyed by key
/// bytes: not worth it for 0.4 µs on those peers.
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

static DTLS: Dtls = Dtls;

/// dimpl's crypto with our signature verifier.
fn dimpl_provider() -> dimpl::crypto::CryptoProvider {
    dimpl::crypto::CryptoProvider {
        signature_verification: &VERIFIER,
        ..dimpl::crypto::aws_lc_rs::default_provider()
    }
}

static VERIFIER: Verifier = Verifier;

/// dimpl's verifier, then P-224 for what it refuses as an unknown curve.
#[derive(Debug)]
struct Verifier;

impl dimpl::crypto::SignatureVerifier for Verifier {
    fn verify_signature(
        &self,
        cert_der: &[u8],
        data: &[u8],
        signature: &[u8],
        hash_alg: HashAlgorithm,
        sig_alg: SignatureAlgorithm,
    ) -> Result<(), DimplCryptoError> {
        let default = dimpl::crypto::aws_lc_rs::default_provider();
        match default
            .signature_verification
            .verify_signature(cert_der, data, signature, hash_alg, sig_alg)
        {
            Err(DimplCryptoError::UnsupportedEcCurve) if sig_alg == SignatureAlgorithm::ECDSA => {
                verify_p224(cert_der, data, signature, hash_alg)
            }
            other => other,
        }
    }
}

/// Verifies an ECDSA (DER) `signature` over `data` hashed with `hash_alg`, by the P-224
/// key of the certificate `cert_der`.
fn verify_p224(
    cert_der: &[u8],
    data: &[u8],
    signature: &[u8],
    hash_alg: HashAlgorithm,
) -> Result<(), DimplCryptoError> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|_| DimplCryptoError::CertificateParseFailed)?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(DimplCryptoError::UnsupportedPublicKeyAlgorithm);
    }
    let curve: ObjectIdentifier = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as().ok())
        .ok_or(DimplCryptoError::UnsupportedEcCurve)?;
    if curve != OID_P224 {
        return Err(DimplCryptoError::UnsupportedEcCurve);
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(DimplCryptoError::UnsupportedEcCurve)?;
    let algorithm = match hash_alg {
        HashAlgorithm::SHA256 => &aws_lc_rs::digest::SHA256,
        HashAlgorithm::SHA384 => &aws_lc_rs::digest::SHA384,
        HashAlgorithm::SHA512 => &aws_lc_rs::digest::SHA512,
        _ => return Err(DimplCryptoError::UnsupportedHmacHash(hash_alg)),
    };
    let digest = aws_lc_rs::digest::digest(algorithm, data);
    if ecdsa_p224_verify(point, digest.as_ref(), signature) {
        Ok(())
    } else {
        Err(DimplCryptoError::SignatureVerificationFailed {
            signature: SignatureAlgorithm::ECDSA,
            hash: hash_alg,
            group: dimpl::crypto::NamedGroup::Secp224r1,
        })
    }
}

/// ECDSA verification on P-224 with aws-lc: `point` is the SEC1 public key, `sig` DER.
fn ecdsa_p224_verify(point: &[u8], digest: &[u8], sig: &[u8]) -> bool {
    use aws_lc_sys::{
        ECDSA_verify, EC_KEY_free, EC_KEY_get0_group, EC_KEY_new_by_curve_name,
        EC_KEY_set_public_key, EC_POINT_free, EC_POINT_new, EC_POINT_oct2point, NID_secp224r1,
    };
    // SAFETY: every pointer is checked for null before use and freed exactly once; the
    // slices outlive the calls, which only read `len` bytes from them.
    unsafe {
        let key = EC_KEY_new_by_curve_name(NID_secp224r1);
        if key.is_null() {
            return false;
        }
        let group = EC_KEY_get0_group(key);
        let pubkey = EC_POINT_new(group);
        let ok = !pubkey.is_null()
            && EC_POINT_oct2point(
                group,
                pubkey,
                point.as_ptr(),
                point.len(),
                std::ptr::null_mut(),
            ) == 1
            && EC_KEY_set_public_key(key, pubkey) == 1
            && ECDSA_verify(
                0,
                digest.as_ptr(),
                digest.len(),
                sig.as_ptr(),
                sig.len(),
                key,
            ) == 1;
        if !pubkey.is_null() {
            EC_POINT_free(pubkey);
        }
        EC_KEY_free(key);
        ok
    }
}

/// str0m's DTLS provider interface over dimpl with [`dimpl_provider`].
#[derive(Debug)]
struct Dtls;

impl DtlsProvider for Dtls {
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
        // ICE has checked the peer's address before DTLS starts: no cookie exchange.
        let mut builder = dimpl::Config::builder()
            .use_server_cookie(false)
            .with_crypto_provider(dimpl_provider());
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("DTLS config: {e}")))?,
        );
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert.clone(), now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert.clone(), now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert.clone(), now),
            other => {
                return Err(CryptoError::Other(format!(
                    "DTLS version {other} not supported"
                )))
            }
        };
        let keys = SrtpKeys::default();
        LAST_KEYS.with(|k| *k.borrow_mut() = Some(keys.clone()));
        Ok(Box::new(Session(dtls, keys)))
    }
}

/// Our sending half of a session's SRTP (GCM profiles only), filled in when its DTLS
/// handshake exports the keying material; read by the `direct` fan-out
/// ([`crate::config::Fanout::Direct`]). Stays empty for AES-CM sessions.
pub type SrtpKeys = Arc<OnceLock<SrtpSender>>;

thread_local! {
    /// The keys of the DTLS session this thread created last: str0m creates an `Rtc`'s
    /// DTLS session inside `RtcConfig::build`, so right after a build this is that `Rtc`'s.
    static LAST_KEYS: RefCell<Option<SrtpKeys>> = const { RefCell::new(None) };
}

/// The keys of the `Rtc` this thread built last (see [`SrtpKeys`]); call right after
/// building it.
pub fn take_last_srtp_keys() -> Option<SrtpKeys> {
    LAST_KEYS.with(|k| k.borrow_mut().take())
}

/// One DTLS session: dimpl's, as str0m's trait asks, keeping our SRTP sending keys.
struct Session(dimpl::Dtls, SrtpKeys);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(dimpl)")
    }
}

impl DtlsInstance for Session {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.0.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(km, profile) = &out {
            // str0m takes the client half when active (RFC 5764 §4.2); so do we.
            if let Some(sender) = SrtpSender::from_keying_material(km, *profile, self.0.is_active())
            {
                let _ = self.1.set(sender);
            }
        }
        out
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dimpl::crypto::SignatureVerifier;

    // A P-224 self-signed certificate and a SHA-256 ECDSA signature of MESSAGE, made for
    // this test with `openssl ecparam -name secp224r1`, `openssl req -x509` and
    // `openssl dgst -sha256 -sign`.
    const CERT: &[u8] = include_bytes!("testdata/p224_cert.der");
    const SIG: &[u8] = include_bytes!("testdata/p224_sha256_sig.der");
    const MESSAGE: &[u8] = b"mixcast p224 test message";

    #[test]
    fn p224_signatures_verify_and_forgeries_do_not() {
        let v = &VERIFIER;
        let ecdsa = SignatureAlgorithm::ECDSA;
        assert_eq!(
            v.verify_signature(CERT, MESSAGE, SIG, HashAlgorithm::SHA256, ecdsa),
            Ok(())
        );
        assert!(v
            .verify_signature(CERT, b"another message", SIG, HashAlgorithm::SHA256, ecdsa)
            .is_err());
        assert!(v
            .verify_signature(CERT, MESSAGE, SIG, HashAlgorithm::SHA384, ecdsa)
            .is_err());
        let mut bad = SIG.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(v
            .verify_signature(CERT, MESSAGE, &bad, HashAlgorithm::SHA256, ecdsa)
            .is_err());
        assert!(v
            .verify_signature(&CERT[..100], MESSAGE, SIG, HashAlgorithm::SHA256, ecdsa)
            .is_err());
    }

    #[test]
    fn the_provider_builds_a_dtls_session() {
        let p = crypto_provider();
        let cert = p
            .dtls_provider
            .generate_certificate()
            .expect("a certificate");
        assert!(p
            .dtls_provider
            .new_dtls(&cert, Instant::now(), DtlsVersion::Dtls12, None)
            .is_ok());
    }
}
