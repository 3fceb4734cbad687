//! The one OpenSSL context every DTLS session is made from: protocol, cipher suites, SRTP
//! profiles and the client-certificate policy. The certificate is set per session (str0m
//! gives each `Rtc` its own), so a single context serves them all: building an OpenSSL 3
//! context costs far more than a session.

use std::sync::OnceLock;

use openssl::ssl::{SslContext, SslMethod, SslOptions, SslVerifyMode, SslVersion};

/// ECDHE only (forward secrecy), with ECDSA and RSA authentication both ways: RSA is the
/// point (GStreamer's webrtcbin and other OpenSSL/GnuTLS peers make RSA certificates).
/// AES-GCM first, as browsers, FFmpeg and GStreamer offer it; ChaCha20 and the CBC suites
/// only for peers that offer nothing else.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";

/// SRTP profiles in our order of preference (as DTLS server OpenSSL picks the first of
/// ours the peer offers): the GCM profiles first, because their per-packet cost is a
/// quarter of AES-CM's (`cargo bench --bench srtp`) and the direct fan-out supports only
/// them; AES-CM for peers that offer nothing else.
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";

/// Key-exchange groups, which OpenSSL also checks a peer's ECDSA certificate against:
/// its defaults leave out P-224, and FFmpeg 8's WHIP muxer signs with a P-224 key
/// (refused with illegal_parameter without it; `tests::a_p224_client_connects`).
const GROUPS: &str = "X25519:P-256:P-384:P-521:P-224";

/// The shared context, built on first use.
pub fn shared() -> Result<&'static SslContext, String> {
    static CONTEXT: OnceLock<Result<SslContext, String>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| build().map_err(|e| format!("OpenSSL DTLS context: {e}")))
        .as_ref()
        .map_err(Clone::clone)
}

fn build() -> Result<SslContext, openssl::error::ErrorStack> {
    let mut ctx = SslContext::builder(SslMethod::dtls())?;
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    ctx.set_cipher_list(CIPHERS)?;
    ctx.set_tlsext_use_srtp(SRTP_PROFILES)?;
    ctx.set_groups_list(GROUPS)?;
    // WebRTC peers authenticate each other by certificate: a peer without one is refused.
    // The certificate is self-signed, so no chain is checked here: what binds it to the
    // session is the SDP fingerprint, which str0m compares with the certificate we hand
    // it (`DtlsOutput::PeerCert`).
    ctx.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_preverified, _chain| true,
    );
    ctx.set_options(
        SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::SINGLE_ECDH_USE
            // The MTU is str0m's (set per session), not asked of a socket we do not have.
            | SslOptions::NO_QUERY_MTU
            | SslOptions::NO_TICKET
            | SslOptions::NO_RENEGOTIATION,
    );
    // ICE has proven the peer's address before DTLS starts, so no cookie exchange (an
    // OpenSSL server sends HelloVerifyRequest only when a cookie callback is set).
    Ok(ctx.build())
}
