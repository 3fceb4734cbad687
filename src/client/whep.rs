//! A blocking WHEP client: POSTs an offer, connects over its own UDP socket, receives and
//! decodes Opus for a while, then DELETEs its session. STUB: to be replaced.

use std::net::IpAddr;
use std::time::Duration;

/// What to play and how.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// The WHEP endpoint, e.g. `http://127.0.0.1:8889/live/whep`.
    pub url: String,
    /// A Bearer token, if the stream needs one.
    pub token: Option<String>,
    /// How long to receive media once connected.
    pub duration: Duration,
    /// The local address to bind the client's UDP socket to.
    pub bind: IpAddr,
    /// Whether to decode and keep the audio (false: count packets only).
    pub decode: bool,
}

/// What a play session saw.
#[derive(Debug, Clone, Default)]
pub struct PlayReport {
    /// The session URL from the 201's `Location`.
    pub session_url: String,
    /// RTP audio packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Time from the POST to the first audio packet.
    pub first_packet_after: Option<Duration>,
    /// Decoded audio, interleaved stereo at 48 kHz (empty unless `decode`).
    pub pcm: Vec<f32>,
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP exchange failed or answered with an error status.
    #[error("http: {0}")]
    Http(String),
    /// The answer or the connection was unusable.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// A socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Plays `opts.url` for `opts.duration` and reports what arrived.
pub fn play(opts: &PlayOptions) -> Result<PlayReport, ClientError> {
    let _ = opts;
    unimplemented!()
}
