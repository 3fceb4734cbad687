//! A blocking WHIP publisher (RFC 9725): POSTs an offer, connects over its own UDP socket,
//! sends one Opus frame of its [`Source`] every 20 ms, then DELETEs its session.
//!
//! Owns one socket, one `Rtc`, one Opus encoder and one source per publisher. Frames are
//! paced from a fixed origin (frame `k` is due at `origin + k × 20 ms`), so lateness never
//! accumulates; a frame that is late is sent at once, never skipped, so the RTP timeline has
//! no holes. Every wait is bounded (HTTP by `http::REQUEST_TIMEOUT`, the connection by
//! [`CONNECT_TIMEOUT`], media by the caller's duration or [`Publisher::stop`]). A
//! loopback-bound client never sends to a non-loopback address, whatever candidates the
//! server advertises. It sends no video: the optional video m-line only makes the offer look
//! like the ones OBS and FFmpeg send.

use super::driver::Driver;
use super::http::SignalClient;
use super::link_stats::LinkStats;
use super::whep::keep_reachable_candidates;
use super::whep::Viewer;
pub use super::whep::{ClientError, CONNECT_TIMEOUT};
use crate::media::opus::{Encoder, MAX_PACKET};
use crate::media::sources::Source;
use crate::media::{Frame, FRAME_DURATION, FRAME_LEN, FRAME_SAMPLES};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::{Candidate, Event, IceConnectionState, Rtc};

/// How often str0m reports stats (RTT, loss) when [`PublishOptions::stats`] is set.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a measuring publisher sleeps between looks at its socket.
const MEASURING_NAP: Duration = Duration::from_millis(1);

/// What to publish and how.
pub struct PublishOptions {
    /// The WHIP endpoint, e.g. `http://127.0.0.1:8889/mystream/whip`.
    pub url: String,
    /// A Bearer token, if the server wants one.
    pub token: Option<String>,
    /// How long to send once connected (rounded up to whole 20 ms frames).
    pub duration: Duration,
    /// The local address to bind the client's UDP socket to. Must be a specific address
    /// (it is announced as the host candidate). When it is a loopback address, only the
    /// server's loopback candidates are used.
    pub bind: IpAddr,
    /// The audio to send: one frame is pulled every 20 ms, in order.
    pub source: Box<dyn Source + Send>,
    /// Whether to offer a sendonly video m-line (VP8 and H264), as OBS and FFmpeg do. No
    /// video is sent.
    pub video: bool,
    /// The Opus bitrate in bit/s (0: the codec's default, 128 kbit/s).
    pub bitrate: u32,
    /// When done, vanish as a crashed client would: no DTLS close_notify, no DELETE (the
    /// server has to notice by itself). For soak and fault tests.
    pub abandon: bool,
    /// Live counters (packets, bytes, RTT and loss from the server's receiver reports) for
    /// a progress display; str0m's stats events are turned on only when this is set.
    pub stats: Option<Arc<LinkStats>>,
    /// Whether the report keeps each frame's send time (`PublishReport::sent_at`): true
    /// for tests; a long-running publisher turns it off so memory stays flat.
    pub keep_send_times: bool,
    /// Offer the audio `sendrecv` (two-way) and decode what the server sends back (the
    /// stream's mix minus this publisher) into [`PublishReport::heard`].
    pub listen: bool,
}

impl PublishOptions {
    /// Options for publishing `source` to `url` for `duration` from 127.0.0.1, audio only,
    /// without a token, at the default bitrate.
    pub fn new(url: impl Into<String>, source: Box<dyn Source + Send>, duration: Duration) -> Self {
        PublishOptions {
            url: url.into(),
            token: None,
            duration,
            bind: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            source,
            video: false,
            bitrate: 0,
            abandon: false,
            stats: None,
            keep_send_times: true,
            listen: false,
        }
    }
}

impl std::fmt::Debug for PublishOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishOptions")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("duration", &self.duration)
            .field("bind", &self.bind)
            .field("source", &self.source.describe())
            .field("video", &self.video)
            .field("bitrate", &self.bitrate)
            .field("abandon", &self.abandon)
            .field("stats", &self.stats.is_some())
            .field("keep_send_times", &self.keep_send_times)
            .field("listen", &self.listen)
            .finish()
    }
}

/// What a publish session did.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    /// The session URL from the 201's `Location`.
    pub session_url: String,
    /// The SDP answer as the server sent it (before any candidate was dropped).
    pub answer_sdp: String,
    /// Time from the POST to the connected session (ICE and DTLS done).
    pub connected_after: Option<Duration>,
    /// RTP audio packets handed to the socket (one per 20 ms frame).
    pub packets_sent: u64,
    /// Opus payload bytes sent.
    pub bytes_sent: u64,
    /// When each frame left: its index in the source's order (frame `k` carries RTP time
    /// `k × 960`) and the instant right after its packet was handed to the socket.
    pub sent_at: Vec<(u64, Instant)>,
    /// When frame 0 was due: frame `k` was due at `origin + k × 20 ms`.
    pub origin: Option<Instant>,
    /// The latest any frame left after its due time.
    pub max_lateness: Duration,
    /// Frames the encoder or str0m refused (not sent).
    pub send_errors: u64,
    /// Whether the connection dropped before the end.
    pub disconnected: bool,
    /// With [`PublishOptions::listen`]: what the server sent back, decoded (its `pcm`,
    /// packets, loss and RTP time jumps; `answer_sdp` and `session_url` are left empty).
    pub heard: Option<super::whep::PlayReport>,
}

/// A publisher running on a thread of its own: [`start`](Self::start) returns once it is
/// connected, [`wait`](Self::wait) or [`stop`](Self::stop) end it and give its report.
pub struct Publisher {
    session_url: String,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<PublishReport, ClientError>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("session_url", &self.session_url)
            .finish()
    }
}

impl Publisher {
    /// POSTs the offer and connects (blocking, bounded by `REQUEST_TIMEOUT` and
    /// [`CONNECT_TIMEOUT`]), then sends on a new thread for `opts.duration`. When this
    /// returns `Ok`, the server has the session and media is flowing. If connecting fails,
    /// the session is DELETEd before the error is returned.
    pub fn start(opts: PublishOptions) -> Result<Publisher, ClientError> {
        if opts.bind.is_unspecified() {
            return Err(ClientError::Rtc(format!(
                "bind address {} is unspecified: give the address to announce",
                opts.bind
            )));
        }
        let encoder =
            Encoder::new(opts.bitrate).map_err(|e| ClientError::Rtc(format!("encoder: {e}")))?;
        let socket = UdpSocket::bind(SocketAddr::new(opts.bind, 0))?;
        let mut builder = Rtc::builder().clear_codecs();
        crate::engine::offer::add_stereo_opus(&mut builder);
        if opts.video {
            builder = builder.enable_vp8(true).enable_h264(true);
        }
        if opts.stats.is_some() {
            builder = builder.set_stats_interval(Some(STATS_INTERVAL));
        }
        let measuring = opts.stats.is_some();
        let mut driver = Driver::new(builder.build(Instant::now()), socket)?;
        if measuring {
            // Replies (receiver reports, STUN) read within a millisecond of arriving, not
            // at the next frame: the round trip they measure is then the network's.
            driver.set_max_nap(MEASURING_NAP);
        }
        let host = Candidate::host(driver.local_addr(), "udp")
            .map_err(|e| ClientError::Rtc(format!("host candidate: {e}")))?;
        let mut ignore = |_: Event| {};
        driver.mutate(
            |rtc| {
                rtc.add_local_candidate(host);
            },
            &mut ignore,
        )?;
        let video = opts.video;
        let direction = if opts.listen {
            Direction::SendRecv
        } else {
            Direction::SendOnly
        };
        let (audio_mid, offer) = driver.mutate(
            |rtc| {
                let mut change = rtc.sdp_api();
                let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
                if video {
                    change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
                }
                (mid, change.apply())
            },
            &mut ignore,
        )?;
        let (offer, pending) =
            offer.ok_or_else(|| ClientError::Rtc("str0m made no offer".into()))?;

        let signal = SignalClient::new(opts.token.as_deref());
        let posted_at = Instant::now();
        let created = signal.post_offer(&opts.url, &offer.to_sdp_string())?;
        let connected = connect(&mut driver, pending, &created.answer, opts.bind, audio_mid);
        let (pt, connected_at) = match connected {
            Ok(c) => c,
            Err(e) => {
                if let Err(d) = signal.delete(&created.session_url) {
                    tracing::debug!(error = %d, "DELETE after a failed connect");
                }
                driver.close();
                return Err(e);
            }
        };

        let report = PublishReport {
            session_url: created.session_url.clone(),
            answer_sdp: created.answer,
            connected_after: Some(connected_at - posted_at),
            ..PublishReport::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut sender = Sender {
            driver,
            mid: audio_mid,
            pt,
            encoder,
            source: opts.source,
            duration: opts.duration,
            stop: stop.clone(),
            stats: opts.stats,
            keep_send_times: opts.keep_send_times,
            report,
        };
        let session_url = created.session_url;
        let url = session_url.clone();
        let abandon = opts.abandon;
        let listen = opts.listen;
        let thread = std::thread::Builder::new()
            .name("whip-publisher".into())
            .spawn(move || {
                // The listening half lives on this thread (its sink is not `Send`); media
                // that arrived while connecting, before it, is not counted.
                let mut heard = match listen {
                    true => Some(Viewer::new(true, posted_at, None)?),
                    false => None,
                };
                let sent = sender.run(&mut heard);
                sender.report.heard = heard.map(|v| v.report);
                if abandon {
                    return sent.map(|()| sender.report);
                }
                // The session ends whatever happened to the media: the DELETE first, so
                // that the server ends it as closed by us (and says goodbye), then our
                // own close_notify, which it no longer needs.
                let deleted = signal.delete(&url);
                sender.driver.close();
                sent?;
                deleted?;
                Ok(sender.report)
            })?;
        Ok(Publisher {
            session_url,
            stop,
            thread,
        })
    }

    /// The session URL (the 201's `Location`).
    pub fn session_url(&self) -> &str {
        &self.session_url
    }

    /// Whether sending has ended (the duration is over or the connection dropped): then
    /// [`wait`](Self::wait) returns at once, or after the DELETE.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Sends until the duration is over, DELETEs the session and reports.
    pub fn wait(self) -> Result<PublishReport, ClientError> {
        self.thread
            .join()
            .map_err(|_| ClientError::Rtc("the publisher thread panicked".into()))?
    }

    /// Stops sending now (within one frame), DELETEs the session and reports.
    pub fn stop(self) -> Result<PublishReport, ClientError> {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }
}

/// Publishes `opts.source` to `opts.url` for `opts.duration`, blocking, and reports.
///
/// Once the server has created a session, the session is DELETEd whatever happens next.
pub fn publish(opts: PublishOptions) -> Result<PublishReport, ClientError> {
    Publisher::start(opts)?.wait()
}

/// Applies the answer and waits for the connection. Returns the Opus payload type the
/// answer accepted and when the session connected.
fn connect(
    driver: &mut Driver,
    pending: SdpPendingOffer,
    answer: &str,
    bind: IpAddr,
    mid: Mid,
) -> Result<(Pt, Instant), ClientError> {
    let reachable = keep_reachable_candidates(answer, bind);
    let answer = SdpAnswer::from_sdp_string(&reachable)
        .map_err(|e| ClientError::Rtc(format!("bad answer: {e}")))?;
    let mut state = Connecting::default();
    driver
        .mutate(
            |rtc| rtc.sdp_api().accept_answer(pending, answer),
            &mut |e| state.on_event(e),
        )?
        .map_err(|e| ClientError::Rtc(format!("answer not accepted: {e}")))?;
    let pt = driver
        .mutate(
            |rtc| {
                rtc.writer(mid).and_then(|w| {
                    w.payload_params()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .map(|p| p.pt())
                })
            },
            &mut |e| state.on_event(e),
        )?
        .ok_or_else(|| ClientError::Rtc("the answer accepted no Opus".into()))?;

    let connect_by = Instant::now() + CONNECT_TIMEOUT;
    loop {
        if let Some(at) = state.connected_at {
            return Ok((pt, at));
        }
        if state.disconnected {
            return Err(ClientError::Rtc(
                "ICE disconnected before connecting".into(),
            ));
        }
        if Instant::now() >= connect_by {
            return Err(ClientError::Rtc(format!(
                "not connected within {CONNECT_TIMEOUT:?} of the answer"
            )));
        }
        driver.step(connect_by, &mut |e| state.on_event(e))?;
    }
}

/// What connecting has seen so far.
#[derive(Default)]
struct Connecting {
    connected_at: Option<Instant>,
    disconnected: bool,
}

impl Connecting {
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => self.connected_at = Some(Instant::now()),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                self.disconnected = true;
            }
            _ => {}
        }
    }
}

/// The sending half of a connected publisher.
struct Sender {
    driver: Driver,
    mid: Mid,
    pt: Pt,
    encoder: Encoder,
    source: Box<dyn Source + Send>,
    duration: Duration,
    stop: Arc<AtomicBool>,
    stats: Option<Arc<LinkStats>>,
    keep_send_times: bool,
    report: PublishReport,
}

impl Sender {
    /// Sends `duration` worth of frames (or until stopped or disconnected). Each frame is
    /// pulled and encoded ahead of its due time, so that its packet leaves on time.
    fn run(&mut self, heard: &mut Option<Viewer<'_>>) -> Result<(), ClientError> {
        let frames = self.duration.as_nanos().div_ceil(FRAME_DURATION.as_nanos());
        let frames = u64::try_from(frames).unwrap_or(u64::MAX);
        if self.keep_send_times {
            self.report.sent_at =
                Vec::with_capacity(usize::try_from(frames.min(1 << 16)).unwrap_or(0));
        }
        let mut pcm: Box<Frame> = Box::new([0.0; FRAME_LEN]);
        let mut packet = vec![0u8; MAX_PACKET];
        let origin = Instant::now();
        self.report.origin = Some(origin);
        let mut due = origin;
        for index in 0..frames {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            self.source.fill(&mut pcm);
            let encoded = self.encoder.encode(&pcm, &mut packet);
            let disconnected = &mut self.report.disconnected;
            let stats = self.stats.as_deref();
            self.driver
                .sleep_until(due, &mut |e| watch(e, disconnected, stats, heard))?;
            if self.report.disconnected || self.stop.load(Ordering::Relaxed) {
                break;
            }
            match encoded {
                Ok(len) => self.send(index, due, &packet[..len], heard)?,
                Err(e) => {
                    tracing::debug!(index, error = %e, "encode failed");
                    self.report.send_errors += 1;
                }
            }
            due += FRAME_DURATION;
        }
        Ok(())
    }

    /// Writes frame `index`, which was due at `due`, and sends its packet.
    fn send(
        &mut self,
        index: u64,
        due: Instant,
        data: &[u8],
        heard: &mut Option<Viewer<'_>>,
    ) -> Result<(), ClientError> {
        let rtp_time = MediaTime::new(index * FRAME_SAMPLES as u64, Frequency::FORTY_EIGHT_KHZ);
        let (mid, pt) = (self.mid, self.pt);
        let disconnected = &mut self.report.disconnected;
        let stats = self.stats.as_deref();
        let written = self.driver.mutate(
            |rtc| match rtc.writer(mid) {
                Some(w) => w
                    .write(pt, due, rtp_time, Arc::<[u8]>::from(data))
                    .map_err(|e| e.to_string()),
                None => Err("the session is closed".to_string()),
            },
            &mut |e| watch(e, disconnected, stats, heard),
        )?;
        let left = Instant::now();
        match written {
            Ok(()) => {
                self.report.packets_sent += 1;
                self.report.bytes_sent += data.len() as u64;
                if let Some(stats) = &self.stats {
                    stats.count(data.len());
                }
                if self.keep_send_times {
                    self.report.sent_at.push((index, left));
                }
                self.report.max_lateness = self.report.max_lateness.max(left - due);
            }
            Err(e) => {
                tracing::debug!(index, error = %e, "write failed");
                self.report.send_errors += 1;
            }
        }
        Ok(())
    }
}

/// Notes the end of the connection: ICE disconnected (the server is gone or stopped
/// answering consent checks) or the server's DTLS close_notify (it ended the session).
/// Hands stats events to `stats`, and media to the listening half of a two-way publisher.
fn watch(
    event: Event,
    disconnected: &mut bool,
    stats: Option<&LinkStats>,
    heard: &mut Option<Viewer<'_>>,
) {
    if let (Event::MediaData(_), Some(v)) = (&event, heard.as_mut()) {
        v.on_event(event);
        return;
    }
    match &event {
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
            *disconnected = true;
        }
        Event::MediaEgressStats(_) | Event::PeerStats(_) => {
            if let Some(stats) = stats {
                stats.on_event(&event);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sources::ToneSource;
    use std::net::Ipv4Addr;

    #[test]
    fn unspecified_bind_is_refused_without_network() {
        let mut opts = PublishOptions::new(
            "http://127.0.0.1:9/live/whip",
            Box::new(ToneSource::new()),
            Duration::from_millis(10),
        );
        opts.bind = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert!(matches!(publish(opts), Err(ClientError::Rtc(_))));
    }

    #[test]
    fn debug_hides_the_token() {
        let mut opts = PublishOptions::new(
            "http://127.0.0.1:9/live/whip",
            Box::new(ToneSource::sine(1000, 1000, 0.25)),
            Duration::from_secs(1),
        );
        opts.token = Some("secret".into());
        let shown = format!("{opts:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("sine 1000/1000 Hz"), "{shown}");
    }
}
