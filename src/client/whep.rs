//! A blocking WHEP client: POSTs an offer, connects over its own UDP socket, receives and
//! decodes Opus for a while, then DELETEs its session.
//!
//! Owns one socket and one `Rtc` per `play`. Every wait is bounded (HTTP by
//! `http::REQUEST_TIMEOUT`, the connection by `CONNECT_TIMEOUT`, media by the caller's
//! duration), so `play` always returns. A loopback-bound client never sends to a
//! non-loopback address, whatever candidates the server advertises.

use super::driver::Driver;
use super::http::SignalClient;
use crate::media::opus::Decoder;
use crate::media::{Frame, FRAME_LEN, FRAME_SAMPLES};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaData, MediaKind};
use str0m::{Candidate, Event, IceConnectionState, Rtc, RtcConfig};

/// Longest wait from the answer to a connected (ICE + DTLS) session.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Most lost 20 ms frames concealed in one gap; a longer gap is an outage, not loss.
const MAX_CONCEAL_FRAMES: u64 = 50;

/// What to play and how.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// The WHEP endpoint, e.g. `http://127.0.0.1:8889/live/whep`.
    pub url: String,
    /// A Bearer token, if the stream needs one.
    pub token: Option<String>,
    /// How long to receive media once connected.
    pub duration: Duration,
    /// The local address to bind the client's UDP socket to. Must be a specific address
    /// (it is announced as the host candidate). When it is a loopback address, only the
    /// server's loopback candidates are used.
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
    /// The SDP answer as the server sent it (before any candidate was dropped).
    pub answer_sdp: String,
    /// Time from the POST to the connected session (ICE and DTLS done).
    pub connected_after: Option<Duration>,
    /// Packets missing from the RTP sequence (gaps; a late packet counts back).
    pub lost_packets: u64,
    /// Packets the decoder refused (each replaced by concealment in `pcm`).
    pub decode_errors: u64,
    /// Packets whose RTP time is not the previous packet's plus 960 (20 ms) per sequence
    /// step: the media clock jumped or stalled.
    pub rtp_time_jumps: u64,
    /// Whether the connection dropped before `duration` was over.
    pub disconnected: bool,
    /// When each piece of `pcm` arrived, in order (empty unless `decode`): one entry per
    /// decoded or concealed packet, so that a sample's arrival time is known (the server
    /// sends 20 ms packets: one entry per 20 ms frame).
    pub frame_arrivals: Vec<FrameArrival>,
    /// The latest round trip of the ICE consent checks ([`play_into`] only: it turns
    /// str0m's stats on).
    pub rtt: Option<Duration>,
    /// Whether the server ended the session with a DTLS close_notify (the stream ended,
    /// or the server is shutting down); `disconnected` is then true too.
    pub closed_by_server: bool,
}

/// Where [`play_into`] hands the media as it arrives, instead of keeping it in the report
/// (the `mixcast pull` command writes files with it).
pub trait PlaySink {
    /// One Opus packet as received, after `lost_before` packets that never came.
    fn opus(&mut self, packet: &[u8], lost_before: u64);
    /// The next piece of decoded (or concealed) audio: interleaved stereo at 48 kHz.
    fn pcm(&mut self, pcm: &[f32]);
    /// Called after every wake-up of the client (at least every [`SINK_POLL`]) with what
    /// arrived so far; returning false ends the play (the session is DELETEd).
    fn keep_going(&mut self, report: &PlayReport) -> bool;
}

/// The longest [`play_into`] goes without asking its sink whether to go on.
pub const SINK_POLL: Duration = Duration::from_millis(100);

/// When one decoded piece of a [`PlayReport`]'s `pcm` arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameArrival {
    /// Where the piece starts in `pcm`, in samples per channel (stereo pairs).
    pub offset: usize,
    /// Samples per channel in the piece (960 for a 20 ms packet).
    pub samples: usize,
    /// When the datagram that carried it was read from the socket. For a concealed piece,
    /// the arrival of the packet after the gap (the moment the loss became known).
    pub at: Instant,
    /// True when the piece is the decoder's concealment of a lost or undecodable packet.
    pub concealed: bool,
}

impl PlayReport {
    /// Whether the answer asks for stereo Opus (`stereo=1` on the Opus `a=fmtp`), which
    /// browsers need to decode both channels.
    pub fn answer_has_stereo_opus(&self) -> bool {
        opus_fmtp_has_stereo(&self.answer_sdp)
    }
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(String),
    /// The server answered with an unexpected status.
    #[error("http: {method} {url}: status {status}: {body}")]
    Status {
        /// The request's method.
        method: &'static str,
        /// The request's URL.
        url: String,
        /// The status code.
        status: u16,
        /// The response body (the server's explanation).
        body: String,
    },
    /// The answer or the connection was unusable.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// A socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The HTTP status, if the server answered with an unexpected one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Plays `opts.url` for `opts.duration` and reports what arrived.
///
/// Once the server has created a session, the session is DELETEd whatever happens next.
pub fn play(opts: &PlayOptions) -> Result<PlayReport, ClientError> {
    play_with(opts, |_, _| {})
}

/// As [`play`], calling `before_connect` with the server's answer and the client's own UDP
/// address once the session exists and before the client applies the answer, so before
/// its first ICE check: the hostile-input tests act in that window.
pub fn play_with(
    opts: &PlayOptions,
    before_connect: impl FnOnce(&str, SocketAddr),
) -> Result<PlayReport, ClientError> {
    play_inner(opts, before_connect, None)
}

/// As [`play`], handing the media to `sink` as it arrives (the report keeps no `pcm` and no
/// `frame_arrivals`, so memory stays flat however long it plays) and asking it at least
/// every [`SINK_POLL`] whether to go on. `opts.duration` still bounds the play, and
/// `opts.decode` says whether the sink gets decoded audio.
pub fn play_into(opts: &PlayOptions, sink: &mut dyn PlaySink) -> Result<PlayReport, ClientError> {
    play_inner(opts, |_, _| {}, Some(sink))
}

fn play_inner(
    opts: &PlayOptions,
    before_connect: impl FnOnce(&str, SocketAddr),
    sink: Option<&mut dyn PlaySink>,
) -> Result<PlayReport, ClientError> {
    if opts.bind.is_unspecified() {
        return Err(ClientError::Rtc(format!(
            "bind address {} is unspecified: give the address to announce",
            opts.bind
        )));
    }
    let socket = UdpSocket::bind(SocketAddr::new(opts.bind, 0))?;
    let mut config = viewer_rtc_config();
    if sink.is_some() {
        config = config.set_stats_interval(Some(super::whip::STATS_INTERVAL));
    }
    let rtc = config.build(Instant::now());
    let mut driver = Driver::new(rtc, socket)?;
    let local = driver.local_addr();
    let mut ignore = |_: Event| {};
    let (offer, pending) = driver.mutate(|rtc| audio_offer(rtc, local), &mut ignore)??;

    let signal = SignalClient::new(opts.token.as_deref());
    let posted_at = Instant::now();
    let created = signal.post_offer(&opts.url, &offer.to_sdp_string())?;
    before_connect(&created.answer, local);
    let received = receive(&mut driver, pending, &created.answer, opts, posted_at, sink);
    let deleted = signal.delete(&created.session_url);
    driver.close();

    let mut report = received?;
    deleted?;
    report.session_url = created.session_url;
    report.answer_sdp = created.answer;
    Ok(report)
}

/// The `Rtc` configuration of a WHEP viewer: Opus only (what the server sends). Shared by
/// [`play`] and the load tool, which adds its own settings.
pub(crate) fn viewer_rtc_config() -> RtcConfig {
    Rtc::builder().clear_codecs().enable_opus(true, false)
}

/// Announces `local` as the host candidate of a fresh viewer `Rtc` and makes its offer: one
/// recvonly audio m-line. The caller drains the `Rtc` afterwards (nothing to send yet).
pub(crate) fn audio_offer(
    rtc: &mut Rtc,
    local: SocketAddr,
) -> Result<(SdpOffer, SdpPendingOffer), ClientError> {
    let host = Candidate::host(local, "udp")
        .map_err(|e| ClientError::Rtc(format!("host candidate: {e}")))?;
    rtc.add_local_candidate(host);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    change
        .apply()
        .ok_or_else(|| ClientError::Rtc("str0m made no offer".into()))
}

/// Applies the server's answer to the `Rtc` that made the offer, keeping only the
/// candidates a client bound to `bind` may send to (see [`keep_reachable_candidates`]).
pub(crate) fn accept_answer(
    rtc: &mut Rtc,
    pending: SdpPendingOffer,
    answer: &str,
    bind: IpAddr,
) -> Result<(), ClientError> {
    let reachable = keep_reachable_candidates(answer, bind);
    let answer = SdpAnswer::from_sdp_string(&reachable)
        .map_err(|e| ClientError::Rtc(format!("bad answer: {e}")))?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| ClientError::Rtc(format!("answer not accepted: {e}")))
}

/// Applies the answer, waits for the connection, then receives for `opts.duration`.
fn receive(
    driver: &mut Driver,
    pending: SdpPendingOffer,
    answer: &str,
    opts: &PlayOptions,
    posted_at: Instant,
    sink: Option<&mut dyn PlaySink>,
) -> Result<PlayReport, ClientError> {
    let mut viewer = Viewer::new(opts.decode, posted_at, sink)?;
    driver.mutate(
        |rtc| accept_answer(rtc, pending, answer, opts.bind),
        &mut |e| viewer.on_event(e),
    )??;

    let connect_by = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let now = Instant::now();
        let mut limit = match viewer.connected_at {
            // A duration too long for an `Instant` (Duration::MAX): no end but the sink's.
            Some(at) => at.checked_add(opts.duration).unwrap_or(now + SINK_POLL),
            None => connect_by,
        };
        if let Some(sink) = viewer.sink.as_mut() {
            if viewer.connected_at.is_some() && !sink.keep_going(&viewer.report) {
                break;
            }
            limit = limit.min(now + SINK_POLL);
        }
        if viewer.report.disconnected {
            if viewer.connected_at.is_none() {
                return Err(ClientError::Rtc(
                    "ICE disconnected before connecting".into(),
                ));
            }
            break;
        }
        let over = match viewer.connected_at {
            Some(at) => at.checked_add(opts.duration).is_some_and(|end| now >= end),
            None => now >= connect_by,
        };
        if over {
            if viewer.connected_at.is_none() {
                return Err(ClientError::Rtc(format!(
                    "not connected within {CONNECT_TIMEOUT:?} of the answer"
                )));
            }
            // What the kernel queued while this thread waited for a core arrived in time.
            driver.take_queued(&mut |e| viewer.on_event(e))?;
            break;
        }
        driver.step(limit, &mut |e| viewer.on_event(e))?;
    }
    Ok(viewer.report)
}

/// What a viewer does with the events of its `Rtc` (also a two-way publisher's listening
/// half, see [`super::whip::PublishOptions::listen`]).
pub(crate) struct Viewer<'a> {
    posted_at: Instant,
    connected_at: Option<Instant>,
    decoder: Option<Decoder>,
    frame: Box<Frame>,
    /// The highest RTP sequence number seen, and that packet's RTP time (48 kHz).
    last_seq: Option<u64>,
    last_time: u64,
    pub(crate) report: PlayReport,
    /// Where the media goes when it is not kept in the report.
    sink: Option<&'a mut dyn PlaySink>,
}

impl<'a> Viewer<'a> {
    pub(crate) fn new(
        decode: bool,
        posted_at: Instant,
        sink: Option<&'a mut dyn PlaySink>,
    ) -> Result<Viewer<'a>, ClientError> {
        let decoder = if decode {
            Some(Decoder::new().map_err(|e| ClientError::Rtc(format!("decoder: {e}")))?)
        } else {
            None
        };
        Ok(Viewer {
            posted_at,
            connected_at: None,
            decoder,
            frame: Box::new([0.0; FRAME_LEN]),
            last_seq: None,
            last_time: 0,
            report: PlayReport::default(),
            sink,
        })
    }

    pub(crate) fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                let now = Instant::now();
                self.connected_at = Some(now);
                self.report.connected_after = Some(now - self.posted_at);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.report.disconnected = true;
            }
            Event::Closed => {
                self.report.disconnected = true;
                self.report.closed_by_server = true;
            }
            Event::PeerStats(s) => {
                let pair = s.selected_candidate_pair.as_ref();
                if let Some(rtt) = pair.and_then(|p| p.current_round_trip_time) {
                    self.report.rtt = Some(rtt);
                }
            }
            Event::MediaData(data) if data.params.spec().codec == Codec::Opus => {
                self.on_opus(&data);
            }
            _ => {}
        }
    }

    fn on_opus(&mut self, data: &MediaData) {
        let report = &mut self.report;
        report.packets += 1;
        report.bytes += data.data.len() as u64;
        if report.first_packet_after.is_none() {
            report.first_packet_after =
                Some(data.network_time.saturating_duration_since(self.posted_at));
        }
        let first = **data.seq_range.start();
        let last = **data.seq_range.end();
        let gap = match self.last_seq {
            Some(prev) if last <= prev => {
                // Late: its place in the audio has passed (and was concealed).
                report.lost_packets = report.lost_packets.saturating_sub(1);
                return;
            }
            Some(prev) => first.saturating_sub(prev + 1),
            None => 0,
        };
        report.lost_packets += gap;
        let time = data.time.numer();
        if let Some(prev) = self.last_seq {
            let steps = last - prev;
            if time != self.last_time + steps * FRAME_SAMPLES as u64 {
                report.rtp_time_jumps += 1;
            }
        }
        self.last_seq = Some(last);
        self.last_time = time;
        let mut sink = self.sink.as_deref_mut();
        if let Some(sink) = sink.as_mut() {
            sink.opus(&data.data, gap);
        }

        let Some(decoder) = self.decoder.as_mut() else {
            return;
        };
        let at = data.network_time;
        for _ in 0..gap.min(MAX_CONCEAL_FRAMES) {
            if let Ok(samples) = decoder.conceal(&mut self.frame) {
                append(report, &mut sink, &self.frame, samples, at, true);
            }
        }
        match decoder.decode(&data.data, &mut self.frame) {
            Ok(samples) => append(report, &mut sink, &self.frame, samples, at, false),
            Err(e) => {
                tracing::debug!(error = %e, "undecodable Opus packet");
                report.decode_errors += 1;
                if let Ok(samples) = decoder.conceal(&mut self.frame) {
                    append(report, &mut sink, &self.frame, samples, at, true);
                }
            }
        }
    }
}

/// Hands the first `samples` stereo samples of `frame` to the sink, if there is one, or
/// appends them to the report's `pcm` and notes when they arrived.
fn append<'s>(
    report: &mut PlayReport,
    sink: &mut Option<&mut (dyn PlaySink + 's)>,
    frame: &Frame,
    samples: usize,
    at: Instant,
    concealed: bool,
) {
    let len = (samples * 2).min(frame.len());
    if let Some(sink) = sink {
        sink.pcm(&frame[..len]);
        return;
    }
    report.frame_arrivals.push(FrameArrival {
        offset: report.pcm.len() / 2,
        samples: len / 2,
        at,
        concealed,
    });
    report.pcm.extend_from_slice(&frame[..len]);
}

/// Drops the answer's candidates that this client must not (or cannot) send to: for a
/// loopback bind, everything but loopback UDP candidates; otherwise candidates of the
/// other address family and unresolved (mDNS `.local`) ones.
pub fn keep_reachable_candidates(sdp: &str, bind: IpAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        if let Some(attr) = text.strip_prefix("a=") {
            if attr.starts_with("candidate:") && !reachable(attr, bind) {
                tracing::debug!(candidate = attr, "dropping unreachable candidate");
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

fn reachable(candidate: &str, bind: IpAddr) -> bool {
    let Ok(candidate) = Candidate::from_sdp_string(candidate) else {
        // An mDNS name or something else we cannot parse: not an address we can use.
        return false;
    };
    let ip = candidate.addr().ip();
    if bind.is_loopback() {
        ip.is_loopback() && ip.is_ipv4() == bind.is_ipv4()
    } else {
        !ip.is_loopback() && !ip.is_unspecified() && ip.is_ipv4() == bind.is_ipv4()
    }
}

/// Whether the Opus payload type of `sdp` has `stereo=1` in its `a=fmtp`.
fn opus_fmtp_has_stereo(sdp: &str) -> bool {
    let opus_pts: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=rtpmap:"))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, codec)| codec.to_ascii_lowercase().starts_with("opus/"))
        .map(|(pt, _)| pt)
        .collect();
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=fmtp:"))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(pt, _)| opus_pts.contains(pt))
        .any(|(_, params)| {
            params
                .split(';')
                .any(|p| p.trim().eq_ignore_ascii_case("stereo=1"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const ANSWER: &str = "v=0\r\n\
        o=- 1 2 IN IP4 0.0.0.0\r\n\
        s=-\r\n\
        t=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1;sprop-stereo=1;stereo=1\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n\
        a=candidate:2 1 udp 2130706431 10.1.2.3 40000 typ host\r\n\
        a=candidate:3 1 udp 2130706431 ::1 40000 typ host\r\n\
        a=candidate:4 1 udp 2130706431 abcd-1234.local 40000 typ host\r\n\
        a=candidate:5 1 udp 2130706431 192.168.1.9 40000 typ host\r\n\
        a=end-of-candidates\r\n";

    #[test]
    fn loopback_bind_keeps_only_loopback_of_its_family() {
        let kept = keep_reachable_candidates(ANSWER, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let candidates: Vec<&str> = kept
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        assert_eq!(
            candidates,
            ["a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"]
        );
        assert!(kept.contains("a=end-of-candidates\r\n"));
        assert!(kept.contains("a=fmtp:111 "));
    }

    #[test]
    fn other_bind_drops_loopback_and_mdns() {
        let kept = keep_reachable_candidates(ANSWER, "192.168.1.2".parse().expect("an address"));
        let candidates: Vec<&str> = kept
            .lines()
            .filter(|l| l.starts_with("a=candidate"))
            .collect();
        assert_eq!(candidates.len(), 2);
        assert!(candidates[0].contains("10.1.2.3"));
        assert!(candidates[1].contains("192.168.1.9"));
    }

    #[test]
    fn stereo_is_read_from_the_opus_fmtp_only() {
        assert!(opus_fmtp_has_stereo(ANSWER));
        let sprop_only = ANSWER.replace(";stereo=1", "");
        assert!(!opus_fmtp_has_stereo(&sprop_only));
        let other_pt = ANSWER.replace("a=fmtp:111", "a=fmtp:96");
        assert!(!opus_fmtp_has_stereo(&other_pt));
    }

    #[test]
    fn unspecified_bind_is_refused_without_network() {
        let opts = PlayOptions {
            url: "http://127.0.0.1:9/live/whep".into(),
            token: None,
            duration: Duration::from_millis(10),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            decode: false,
        };
        assert!(matches!(play(&opts), Err(ClientError::Rtc(_))));
    }
}
