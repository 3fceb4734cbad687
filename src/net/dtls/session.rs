//! One DTLS 1.2 session over OpenSSL, in the shape str0m drives (sans-IO: datagrams in,
//! datagrams and events out, timers as instants).
//!
//! OpenSSL runs its own retransmission timer on the wall clock; we read how long it has
//! left after each step and report that as the next timeout, and hand it the timeout when
//! str0m says it is due (OpenSSL acts only if its own clock agrees).

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::pkey::PKey;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{ErrorCode, ShutdownState, Ssl, SslStream, SslVerifyMode};
use openssl::x509::X509;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, KeyingMaterial, ProtocolVersion, SrtpProfile,
};
use str0m::crypto::CryptoError;

use super::wire::Wire;
use super::SrtpKeys;
use crate::net::srtp::SrtpSender;

/// RFC 5764 §4.2's exporter label for DTLS-SRTP keys.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// OpenSSL's `DTLSv1_get_timeout` and `DTLSv1_handle_timeout` are macros over `SSL_ctrl`
/// with these commands (ssl.h), which openssl-sys does not bind.
const DTLS_CTRL_GET_TIMEOUT: i32 = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: i32 = 74;
/// The timeout reported when nothing is pending: far enough to never fire.
const IDLE: Duration = Duration::from_secs(3600);

/// What the session owes str0m, in the order it is handed out.
#[derive(Debug)]
enum Event {
    PeerCert(Vec<u8>),
    Keys(Vec<u8>, SrtpProfile),
    Connected,
    Data(Vec<u8>),
    CloseNotify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Made, role not set yet.
    Idle,
    Handshaking,
    Connected,
    /// The handshake failed; the alert OpenSSL wrote is still to be sent, then the next
    /// timeout reports the failure (so str0m sends the alert before it drops us).
    Failed,
    /// close_notify sent or received.
    Closed,
}

pub struct Session {
    stream: SslStream<Wire>,
    phase: Phase,
    active: bool,
    events: VecDeque<Event>,
    /// The `now` str0m last gave us: timeouts are reported relative to its clock.
    now: Instant,
    /// Why the handshake failed, reported by the next `handle_timeout`.
    failure: Option<DtlsImplError>,
    close_notify_sent: bool,
    keys: SrtpKeys,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session(openssl)")
            .field("phase", &self.phase)
            .field("active", &self.active)
            .finish()
    }
}

impl Session {
    /// A session presenting `cert` (DER certificate and PKCS#8 or SEC1 DER key), records
    /// sized for `mtu`.
    pub fn new(
        cert: &DtlsCert,
        now: Instant,
        mtu: usize,
        keys: SrtpKeys,
        expected: super::ExpectedPeer,
    ) -> Result<Self, CryptoError> {
        let ctx = super::context::shared().map_err(CryptoError::Other)?;
        let err = |what: &str, e: openssl::error::ErrorStack| {
            CryptoError::Other(format!("DTLS {what}: {e}"))
        };
        let x509 = X509::from_der(&cert.certificate).map_err(|e| err("certificate", e))?;
        let key = PKey::private_key_from_der(&cert.private_key).map_err(|e| err("key", e))?;
        let mut ssl = Ssl::new(ctx).map_err(|e| err("session", e))?;
        ssl.set_certificate(&x509)
            .map_err(|e| err("certificate", e))?;
        ssl.set_private_key(&key).map_err(|e| err("key", e))?;
        // The context's policy (a certificate is required), with this session's check of
        // it against the offer's fingerprint.
        ssl.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            move |_preverified, ctx| super::peer::verify(&expected, ctx),
        );
        ssl.set_mtu(u32::try_from(mtu).unwrap_or(1200))
            .map_err(|e| err("MTU", e))?;
        let stream = SslStream::new(ssl, Wire::default()).map_err(|e| err("stream", e))?;
        Ok(Session {
            stream,
            phase: Phase::Idle,
            active: false,
            events: VecDeque::new(),
            now,
            failure: None,
            close_notify_sent: false,
            keys,
        })
    }

    /// Runs the handshake as far as the datagrams so far allow (`SSL_connect` and
    /// `SSL_accept` set the role on their first call and continue it after).
    fn handshake(&mut self) {
        let step = if self.active {
            self.stream.connect()
        } else {
            self.stream.accept()
        };
        match step {
            Ok(()) => self.on_connected(),
            Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {}
            Err(e) => {
                // OpenSSL has written the fatal alert that tells the peer (in the Wire).
                let why = describe(&e);
                let cert = why.contains("certificate");
                self.fail(format!("DTLS handshake failed: {why}"), failure(cert));
            }
        }
    }

    fn fail(&mut self, why: String, error: DtlsImplError) {
        tracing::info!(
            role = if self.active { "client" } else { "server" },
            "{why}"
        );
        self.phase = Phase::Failed;
        self.failure = Some(error);
    }

    /// The handshake is done: the peer's certificate (for str0m's fingerprint check),
    /// then the SRTP keys, then "connected".
    fn on_connected(&mut self) {
        let ssl = self.stream.ssl();
        let Some(cert) = ssl.peer_certificate().and_then(|c| c.to_der().ok()) else {
            let why = "DTLS handshake failed: the peer sent no certificate";
            return self.fail(why.into(), failure(true));
        };
        let Some(profile) = ssl
            .selected_srtp_profile()
            .and_then(|p| srtp_profile(p.id()))
        else {
            let why = "DTLS handshake failed: no SRTP profile in common";
            return self.fail(why.into(), failure(false));
        };
        let mut km = vec![0u8; profile.keying_material_len()];
        if let Err(e) = ssl.export_keying_material(&mut km, SRTP_EXPORTER_LABEL, None) {
            let why = format!("DTLS handshake failed: SRTP key export: {e}");
            return self.fail(why, failure(false));
        }
        // str0m takes the client half when active (RFC 5764 §4.2); so does the direct
        // fan-out's sender.
        if let Some(sender) =
            SrtpSender::from_keying_material(&KeyingMaterial::new(&km), profile, self.active)
        {
            let _ = self.keys.set(sender);
        }
        tracing::debug!(
            version = ssl.version_str(),
            cipher = ssl.current_cipher().map(|c| c.name()),
            ?profile,
            "DTLS connected"
        );
        self.phase = Phase::Connected;
        self.events.push_back(Event::PeerCert(cert));
        self.events.push_back(Event::Keys(km, profile));
        self.events.push_back(Event::Connected);
    }

    /// Reads every application record (SCTP) the datagrams so far hold, and notices the
    /// peer's close_notify.
    fn read_records(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.ssl_read(&mut buf) {
                Ok(n) => self.events.push_back(Event::Data(buf[..n].to_vec())),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.on_close_notify();
                    return;
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => return,
                Err(e) => {
                    // A record that fails to decrypt is dropped by OpenSSL's DTLS without
                    // an error; anything reaching here ends the session.
                    tracing::debug!("DTLS read failed: {}", describe(&e));
                    if self.stream.get_shutdown().contains(ShutdownState::RECEIVED) {
                        self.on_close_notify();
                    }
                    return;
                }
            }
        }
    }

    fn on_close_notify(&mut self) {
        if !self.close_notify_sent {
            // Answer with ours (RFC 5246 §7.2.1).
            let _ = self.stream.shutdown();
            self.close_notify_sent = true;
        }
        self.phase = Phase::Closed;
        self.events.push_back(Event::CloseNotify);
    }

    /// How long OpenSSL's retransmission timer has left, if it runs.
    fn retransmit_in(&self) -> Option<Duration> {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` through the pointer,
        // which is valid for the call; the SSL pointer is the live session's.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                self.stream.ssl().as_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc::timeval).cast(),
            )
        };
        (running == 1).then(|| {
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        })
    }

    fn copy_out<'a>(buf: &'a mut [u8], bytes: &[u8]) -> Option<&'a [u8]> {
        let dst = buf.get_mut(..bytes.len())?;
        dst.copy_from_slice(bytes);
        Some(dst)
    }
}

impl DtlsInstance for Session {
    fn set_active(&mut self, active: bool) {
        self.active = active;
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Handshaking;
        if active {
            // The client speaks first: the ClientHello goes out now.
            self.handshake();
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        tracing::trace!(len = packet.len(), phase = ?self.phase, "DTLS datagram in");
        if packet.is_empty() {
            // str0m hands an empty datagram to start an active session (dimpl's way); we
            // started at `set_active`, and an empty read would be an EOF to OpenSSL.
            return Ok(());
        }
        if matches!(self.phase, Phase::Failed | Phase::Closed) {
            // Nothing more is read; what the peer sends now is dropped.
            return Ok(());
        }
        if !self.stream.get_mut().push_incoming(packet) {
            return Err(DtlsImplError::ReceiveQueueFull);
        }
        match self.phase {
            // A datagram before our role is known waits for it.
            Phase::Idle => {}
            Phase::Handshaking => {
                self.handshake();
                if self.phase == Phase::Connected {
                    // Records that came with the last flight.
                    self.read_records();
                }
            }
            Phase::Connected => self.read_records(),
            Phase::Failed | Phase::Closed => {}
        }
        Ok(())
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if let Some(needed) = self.stream.get_ref().next_outgoing_len() {
            if needed > buf.len() {
                return DtlsOutput::BufferTooSmall { needed };
            }
            let datagram = self.stream.get_mut().pop_outgoing().unwrap_or_default();
            let n = datagram.len();
            buf[..n].copy_from_slice(&datagram);
            return DtlsOutput::Packet(&buf[..n]);
        }
        if let Some(event) = self.events.pop_front() {
            let needed = match &event {
                Event::PeerCert(b) | Event::Data(b) => b.len(),
                _ => 0,
            };
            if needed > buf.len() {
                self.events.push_front(event);
                return DtlsOutput::BufferTooSmall { needed };
            }
            return match event {
                Event::PeerCert(der) => DtlsOutput::PeerCert(Self::copy_out(buf, &der).unwrap()),
                Event::Keys(km, profile) => {
                    DtlsOutput::KeyingMaterial(KeyingMaterial::new(&km), profile)
                }
                Event::Connected => DtlsOutput::Connected,
                Event::Data(d) => DtlsOutput::ApplicationData(Self::copy_out(buf, &d).unwrap()),
                Event::CloseNotify => DtlsOutput::CloseNotify,
            };
        }
        let at = match self.phase {
            // Report the failure right away, now that the alert is out.
            Phase::Failed => self.now,
            Phase::Handshaking => self
                .retransmit_in()
                .map_or(self.now + IDLE, |left| self.now + left),
            Phase::Idle | Phase::Connected | Phase::Closed => self.now + IDLE,
        };
        DtlsOutput::Timeout(at)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = self.now.max(now);
        match self.phase {
            Phase::Failed if !self.stream.get_ref().has_outgoing() => Err(self
                .failure
                .take()
                .unwrap_or(DtlsImplError::ConnectionClosed)),
            Phase::Handshaking => {
                if self.retransmit_in() == Some(Duration::ZERO) {
                    // SAFETY: DTLS_CTRL_HANDLE_TIMEOUT takes no argument; the SSL pointer
                    // is the live session's.
                    let r = unsafe {
                        openssl_sys::SSL_ctrl(
                            self.stream.ssl().as_ptr(),
                            DTLS_CTRL_HANDLE_TIMEOUT,
                            0,
                            std::ptr::null_mut(),
                        )
                    };
                    if r < 0 {
                        let why = "DTLS handshake failed: the peer stopped answering";
                        let e = DtlsImplError::Timeout(dimpl::TimeoutError::Handshake);
                        self.fail(why.into(), e);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        match self.phase {
            Phase::Connected if !data.is_empty() => match self.stream.ssl_write(data) {
                Ok(n) => Ok(n),
                Err(e) => {
                    tracing::debug!("DTLS write failed: {}", describe(&e));
                    Err(DtlsImplError::ConnectionClosed)
                }
            },
            // Not accepted before the handshake is done: str0m keeps it and retries.
            Phase::Idle | Phase::Handshaking | Phase::Connected => Ok(0),
            Phase::Failed | Phase::Closed => Err(DtlsImplError::ConnectionClosed),
        }
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        matches!(self.phase, Phase::Connected | Phase::Closed).then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.close_notify_sent && self.stream.get_ref().has_outgoing()
    }

    fn is_closed(&self) -> bool {
        self.phase == Phase::Closed && !self.stream.get_ref().has_outgoing()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if self.phase == Phase::Connected && !self.close_notify_sent {
            let _ = self.stream.shutdown();
        }
        self.close_notify_sent = true;
        self.phase = Phase::Closed;
        Ok(())
    }
}

fn srtp_profile(id: SrtpProfileId) -> Option<SrtpProfile> {
    match id {
        SrtpProfileId::SRTP_AEAD_AES_256_GCM => Some(SrtpProfile::AEAD_AES_256_GCM),
        SrtpProfileId::SRTP_AEAD_AES_128_GCM => Some(SrtpProfile::AEAD_AES_128_GCM),
        SrtpProfileId::SRTP_AES128_CM_SHA1_80 => Some(SrtpProfile::AES128_CM_SHA1_80),
        _ => None,
    }
}

/// The error str0m gets for a failed handshake (the reason itself is logged: dimpl's
/// error type, which str0m's trait requires, has no free-form variant).
fn failure(certificate: bool) -> DtlsImplError {
    if certificate {
        DtlsImplError::CertificateError(dimpl::CertificateError::ParseFailed)
    } else {
        DtlsImplError::CryptoError(dimpl::CryptoError::OperationFailed(
            dimpl::CryptoOperation::CompleteKeyExchange,
        ))
    }
}

/// An OpenSSL error as one line: its reason strings, or the I/O error.
fn describe(e: &openssl::ssl::Error) -> String {
    if let Some(stack) = e.ssl_error() {
        let reasons: Vec<_> = stack
            .errors()
            .iter()
            .map(|x| x.reason().unwrap_or("unknown").to_string())
            .collect();
        if !reasons.is_empty() {
            return reasons.join(", ");
        }
    }
    match e.io_error() {
        Some(io) if io.kind() != io::ErrorKind::WouldBlock => io.to_string(),
        _ => format!("{e} (code {:?})", e.code()),
    }
}
