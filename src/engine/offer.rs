//! From an SDP offer to an `Rtc` and its answer. Pure: the caller passes `now` and the
//! candidates to advertise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::{Codec, FormatParams};
use str0m::media::Frequency;
use str0m::{Candidate, Rtc};

use crate::streams::VideoSource;

/// Why an offer was refused. Signalling maps these to HTTP statuses (400 and 422).
/// `Malformed` and `Unusable` hold our own words, fit for the client; `Unparsable` and
/// `Refused` hold str0m's, which are for the log only (they can quote memory addresses).
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The body is not SDP we can parse (400).
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// str0m could not parse it (400); its error text.
    #[error("SDP parse: {0}")]
    Unparsable(String),
    /// Parsed, but we cannot serve it (422).
    #[error("unusable offer: {0}")]
    Unusable(String),
    /// str0m refused to answer it (422); its error text.
    #[error("str0m refused the offer: {0}")]
    Refused(String),
}

impl OfferError {
    /// The whole story, for the log.
    pub fn detail(&self) -> String {
        self.to_string()
    }
}

/// What kind of peer an `Rtc` is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A WHEP viewer: we send the stream's mix.
    Viewer,
    /// A WHIP publisher: we receive its audio (and its video, if any).
    Publisher,
}

impl Role {
    /// `whep` or `whip`: the path segment of its endpoint.
    pub fn endpoint(self) -> &'static str {
        match self {
            Role::Viewer => "whep",
            Role::Publisher => "whip",
        }
    }

    /// What a person calls it in a log line.
    pub fn noun(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Publisher => "publisher",
        }
    }
}

/// A negotiated session, ready to hand to its owning thread.
pub struct Negotiated {
    /// The `Rtc`, already past `accept_offer`. Its owner must drain `poll_output` first.
    pub rtc: Rtc,
    /// The answer to send back.
    pub answer: String,
    /// Our ICE username fragment, which the UDP loop uses to route the first STUN request.
    pub local_ufrag: String,
    /// Our ICE password, with which the UDP loop checks that first request's integrity.
    pub local_pwd: String,
    /// The `Rtc` is an ICE-lite agent (see [`needs_ice_lite`]).
    pub ice_lite: bool,
    /// The `Rtc`'s SRTP sending keys, filled in by its DTLS handshake: a viewer's go to
    /// its TX thread with it, for the `direct` fan-out.
    pub srtp_keys: Option<crate::net::dtls::SrtpKeys>,
}

/// Whether the offer comes from FFmpeg's WHIP muxer, which needs us to be ICE-lite.
///
/// FFmpeg 8 (libavformat/whip.c) answers our connectivity checks without
/// XOR-MAPPED-ADDRESS, which str0m (rightly) refuses, so a full-ICE str0m agent never sees
/// a check of its own succeed and never connects. As an ICE-lite agent we send no checks:
/// FFmpeg's requests (mended by the UDP loop, see `Egress::handle_receive`) are enough. The
/// offer names itself: `s=FFmpegPublishSession` (and `o=FFmpeg ...`). Every other client
/// gets the full ICE agent RFC 9725 recommends.
pub fn needs_ice_lite(offer: &str) -> bool {
    offer.lines().take(8).any(|l| {
        let l = l.trim_end();
        l == "s=FFmpegPublishSession" || l.starts_with("o=FFmpeg ")
    })
}

/// How often str0m reports a viewer's send statistics (the loss its receiver reports
/// show), which move it between simulcast layers (see `egress::Layering`).
pub const VIEWER_STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether an audio-only viewer's RTCP reaches the engine as str0m's raw packets: its
/// receiver reports give the loss in its end line and the stream's loss counter. str0m's own
/// stats skip a stream it never sent on (the direct fan-out sends without it), so the
/// reports are read as they arrive. The cost is what the viewer sends: a receiver report
/// every second or few (no transport-cc feedback, as direct packets carry no extension),
/// plus str0m's own sender report every 5 s, each handed over as one small event.
pub const AUDIO_VIEWER_RAW_RTCP: bool = true;

/// Our Opus payload type in answers when the offer does not dictate one.
const PT_OPUS: u8 = 111;

/// Adds our Opus: 48 kHz stereo (`stereo=1; sprop-stereo=1`), in-band FEC, 10 ms minimum
/// packet time. Shared by the server's answers and our own clients' offers.
pub fn add_stereo_opus(builder: &mut str0m::RtcConfig) {
    builder.codec_config().add_config(
        PT_OPUS.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            stereo: Some(true),
            sprop_stereo: Some(true),
            ..Default::default()
        },
    );
}

/// Checks the offer's shape against RFC 9725 / WHEP: at most one audio and one video
/// m-section, and an audio section that offers Opus.
fn check_shape(sdp: &str, role: Role) -> Result<(), OfferError> {
    let mut audio = 0;
    let mut video = 0;
    let mut opus = false;
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ");
            if in_audio {
                audio += 1;
            } else if m.starts_with("video ") {
                video += 1;
            }
        } else if in_audio {
            if let Some(map) = line.strip_prefix("a=rtpmap:") {
                // "111 opus/48000/2": codec names are case-insensitive (OBS writes OPUS).
                let enc = map.split_whitespace().nth(1).unwrap_or("");
                if enc.to_ascii_lowercase().starts_with("opus/48000") {
                    opus = true;
                }
            }
        }
    }
    if audio > 1 || video > 1 {
        return Err(OfferError::Unusable(format!(
            "{audio} audio and {video} video m-sections; at most one of each"
        )));
    }
    if audio == 0 {
        // A publisher may send video alone; a viewer comes for the audio mix.
        if role == Role::Publisher && video == 1 {
            return Ok(());
        }
        return Err(OfferError::Unusable("no audio m-section".into()));
    }
    if !opus {
        return Err(OfferError::Unusable(
            "the audio m-section does not offer Opus".into(),
        ));
    }
    Ok(())
}

/// Builds the `Rtc` for `role`, advertising `candidates`, and answers `offer`.
pub fn accept(
    offer: &str,
    role: Role,
    candidates: &[SocketAddr],
    now: Instant,
) -> Result<Negotiated, OfferError> {
    accept_with_video(offer, role, candidates, now, VideoCodecs::Any)
}

/// The video codecs we receive from publishers and forward to viewers (never decoded).
/// H265 and AV1 only where str0m can carry them.
pub const VIDEO_CODECS: [Codec; 5] = [Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1, Codec::H265];

/// [`accept`] for a session of a stream whose video is chosen by `source` (see
/// [`VideoSource`]) and is now in codec `current` (`None`: no video yet). A viewer of an
/// audio-only stream ([`VideoSource::None`]) gets an answer that rejects its video
/// m-section (port 0, RFC 3264), so a player shows no video; a viewer of a stream with
/// video is offered only that codec (one that cannot take it gets an audio-only answer,
/// its video m-section rejected); a viewer of a stream without video yet, every codec both
/// sides know. Publishers are answered as by [`accept`] whatever the setting: OBS with
/// simulcast stops when its video is refused, so a `none` stream takes it and drops it.
pub fn accept_for_stream(
    offer: &str,
    role: Role,
    candidates: &[SocketAddr],
    now: Instant,
    source: VideoSource,
    current: Option<Codec>,
) -> Result<Negotiated, OfferError> {
    let video = match (role, source, current) {
        (Role::Viewer, VideoSource::None, _) => VideoCodecs::None,
        (Role::Viewer, _, Some(codec)) => VideoCodecs::Only(codec),
        _ => VideoCodecs::Any,
    };
    accept_with_video(offer, role, candidates, now, video)
}

/// Which video codecs an answer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodecs {
    /// Every codec of [`VIDEO_CODECS`] the offer has.
    Any,
    /// Only this one (a viewer of a stream whose video publisher sends it).
    Only(Codec),
    /// None: the video m-section is rejected.
    None,
}

/// [`accept`] with a choice of video codecs: for a viewer of a stream whose video
/// publisher sends `Only(codec)`, the viewer is offered exactly what it will get, and one
/// that cannot take it gets an answer without video (its video m-section rejected).
pub fn accept_with_video(
    offer: &str,
    role: Role,
    candidates: &[SocketAddr],
    now: Instant,
    video: VideoCodecs,
) -> Result<Negotiated, OfferError> {
    if !offer.trim_start().starts_with("v=0") {
        return Err(OfferError::Malformed("an SDP offer starts with v=0".into()));
    }
    super::offer_checks::lines(offer)?;
    let mut parsed =
        SdpOffer::from_sdp_string(offer).map_err(|e| OfferError::Unparsable(e.to_string()))?;
    check_shape(offer, role)?;
    super::offer_checks::values(offer, role)?;
    let ice_lite = role == Role::Publisher && needs_ice_lite(offer);
    // An offer without BUNDLE: str0m gets only the section we serve (see `unbundled`).
    let unbundled = super::unbundled::plan(offer)?;
    if let Some(plan) = &unbundled {
        for why in plan.rejected() {
            tracing::info!(
                endpoint = role.endpoint(),
                "offer without BUNDLE: rejected {why}"
            );
        }
        parsed = SdpOffer::from_sdp_string(&plan.offer)
            .map_err(|e| OfferError::Unparsable(e.to_string()))?;
    }
    let served = unbundled.as_ref().map_or(offer, |p| p.offer.as_str());

    let mut builder = Rtc::builder()
        .clear_codecs()
        .set_ice_lite(ice_lite)
        .set_crypto_provider(crate::net::dtls::crypto_provider());
    // Video is received from publishers and forwarded to viewers untouched: the codecs
    // OBS, FFmpeg and browsers send.
    let wanted = |c: Codec| match video {
        VideoCodecs::Any => true,
        VideoCodecs::Only(v) => v == c,
        VideoCodecs::None => false,
    };
    builder = builder
        .enable_h264(wanted(Codec::H264))
        .enable_vp8(wanted(Codec::Vp8))
        .enable_vp9(wanted(Codec::Vp9))
        .enable_av1(wanted(Codec::Av1))
        .enable_h265(wanted(Codec::H265));
    if role == Role::Viewer && served.contains("m=video") {
        // A viewer lines audio up with video by their sender reports; str0m sends audio
        // ones every 5 s by default, so lip-sync would only start after 5 s. Audio-only
        // viewers keep the default (fewer packets at scale).
        builder = builder.set_rtcp_report_interval_audio(Duration::from_secs(1));
        // Loss stats choose a viewer's simulcast layer; audio-only viewers need none
        // (a stats event a second per listener is a cost at 10,000 listeners).
        builder = builder.set_stats_interval(Some(VIEWER_STATS_INTERVAL));
    } else if role == Role::Viewer && AUDIO_VIEWER_RAW_RTCP {
        builder = builder.enable_raw_packets(true);
    }
    if role == Role::Publisher {
        // Audio is released packet by packet as it arrives; the publisher's jitter buffer
        // does the reordering and concealment.
        builder = builder.set_reordering_size_audio(0);
    }
    add_stereo_opus(&mut builder);
    let mut rtc = builder.build(now);
    let handles = crate::net::dtls::take_last_session();
    if let Some(h) = &handles {
        // Checked inside the handshake, so a mismatch is refused with an alert.
        let _ = h
            .expected_peer
            .set(crate::net::dtls::fingerprints_in(served));
    }
    let srtp_keys = handles.map(|h| h.srtp_keys);
    for addr in candidates {
        let c = Candidate::host(*addr, "udp")
            .map_err(|e| OfferError::Unusable(format!("candidate {addr}: {e}")))?;
        rtc.add_local_candidate(c);
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(parsed)
        .map_err(|e| OfferError::Refused(e.to_string()))?;
    let answer = match &unbundled {
        Some(plan) => plan.restore(&answer.to_sdp_string())?,
        None => answer.to_sdp_string(),
    };
    let answer = ensure_stereo(&answer);
    check_answer(&answer, role)?;
    if m_kinds(offer).ne(m_kinds(&answer)) {
        return Err(OfferError::Unusable(
            "an offered m-section could not be answered in place (RFC 3264 §6)".into(),
        ));
    }
    let local = rtc.direct_api().local_ice_credentials();
    Ok(Negotiated {
        rtc,
        answer,
        local_ufrag: local.ufrag,
        local_pwd: local.pass,
        ice_lite,
        srtp_keys,
    })
}

/// Checks that the answer serves the role: a usable audio section (publishers may have
/// video alone) in the right direction: WHEP answers send, WHIP answers receive. An offer
/// in the wrong direction (a WHIP offer that only wants to receive) ends up `inactive`.
fn check_answer(answer: &str, role: Role) -> Result<(), OfferError> {
    let mut sections: Vec<(&str, bool, &str)> = Vec::new(); // (kind, port != 0, direction)
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut it = m.split(' ');
            let kind = it.next().unwrap_or("");
            let open = it.next().is_some_and(|p| p != "0") && m.split(' ').count() > 3;
            sections.push((kind, open, "sendrecv"));
        } else if let Some(last) = sections.last_mut() {
            if let Some(dir) = ["sendonly", "recvonly", "inactive", "sendrecv"]
                .into_iter()
                .find(|d| line.trim_end() == format!("a={d}"))
            {
                last.2 = dir;
            }
        }
    }
    let want = match role {
        Role::Viewer => "sendonly",
        Role::Publisher => "recvonly",
    };
    let usable = |kind: &str| {
        sections
            .iter()
            .any(|&(k, open, dir)| k == kind && open && (dir == want || dir == "sendrecv"))
    };
    match role {
        Role::Viewer if !usable("audio") => Err(OfferError::Unusable(
            "no common audio codec, or the offer does not receive audio".into(),
        )),
        Role::Publisher if !usable("audio") && !usable("video") => Err(OfferError::Unusable(
            "no common codec, or the offer does not send media".into(),
        )),
        _ => Ok(()),
    }
}

/// The media kind of each m-line, in order.
fn m_kinds(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|m| m.split(' ').next().unwrap_or(""))
}

/// Makes sure every Opus fmtp line of the answer says `stereo=1; sprop-stereo=1`, which
/// Chrome needs to decode stereo (without it, it plays mono).
fn ensure_stereo(sdp: &str) -> String {
    let mut opus_pts = Vec::new();
    for line in sdp.lines() {
        if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let mut it = map.split_whitespace();
            if let (Some(pt), Some(enc)) = (it.next(), it.next()) {
                if enc.to_ascii_lowercase().starts_with("opus/") {
                    opus_pts.push(pt.to_string());
                }
            }
        }
    }
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        out.push_str(line);
        if let Some(rest) = line.strip_prefix("a=fmtp:") {
            let pt = rest.split_whitespace().next().unwrap_or("");
            if opus_pts.iter().any(|p| p == pt) {
                for key in ["stereo=1", "sprop-stereo=1"] {
                    let name = key.split('=').next().unwrap_or(key);
                    let has = rest
                        .split([';', ' '])
                        .any(|kv| kv.trim().split('=').next() == Some(name));
                    if !has {
                        out.push(';');
                        out.push_str(key);
                    }
                }
            }
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_is_added_once() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
        let out = ensure_stereo(sdp);
        assert!(out.contains("a=fmtp:111 minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1"));
        assert_eq!(ensure_stereo(&out), out);
    }

    #[test]
    fn shape_rules() {
        let two = "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(
            check_shape(two, Role::Viewer),
            Err(OfferError::Unusable(_))
        ));
        let none = "v=0\r\nm=video 9 X 96\r\n";
        assert!(matches!(
            check_shape(none, Role::Viewer),
            Err(OfferError::Unusable(_))
        ));
        assert!(
            check_shape(none, Role::Publisher).is_ok(),
            "video alone may be published"
        );
        let pcmu = "v=0\r\nm=audio 9 X 0\r\na=rtpmap:0 PCMU/8000\r\n";
        assert!(matches!(
            check_shape(pcmu, Role::Publisher),
            Err(OfferError::Unusable(_))
        ));
        let obs = "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 OPUS/48000/2\r\n";
        assert!(check_shape(obs, Role::Publisher).is_ok());
    }

    #[test]
    fn only_ffmpeg_gets_ice_lite() {
        let ffmpeg = "v=0\r\no=FFmpeg 4489045141692799359 2 IN IP4 127.0.0.1\r\ns=FFmpegPublishSession\r\nt=0 0\r\n";
        assert!(needs_ice_lite(ffmpeg));
        let chrome = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        assert!(!needs_ice_lite(chrome));
    }

    /// A str0m viewer's offer (audio and video, both recvonly).
    fn av_viewer_offer() -> String {
        let mut rtc = Rtc::builder().build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(
            str0m::media::MediaKind::Audio,
            str0m::media::Direction::RecvOnly,
            None,
            None,
            None,
        );
        api.add_media(
            str0m::media::MediaKind::Video,
            str0m::media::Direction::RecvOnly,
            None,
            None,
            None,
        );
        api.apply().unwrap().0.to_sdp_string()
    }

    /// The port of the answer's video m= line.
    fn video_port(answer: &str) -> Option<&str> {
        answer
            .lines()
            .find_map(|l| l.strip_prefix("m=video "))
            .and_then(|m| m.split(' ').next())
    }

    #[test]
    fn audio_only_streams_reject_the_viewers_video() {
        let offer = av_viewer_offer();
        let addr: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let now = Instant::now();
        let none = accept_for_stream(
            &offer,
            Role::Viewer,
            &[addr],
            now,
            VideoSource::None,
            Some(Codec::Vp8),
        )
        .expect("audio is still served");
        assert_eq!(video_port(&none.answer), Some("0"), "{}", none.answer);
        assert!(none.answer.contains("a=sendonly"), "audio is sent");
        for source in [VideoSource::First, VideoSource::Latest] {
            let a = accept_for_stream(&offer, Role::Viewer, &[addr], now, source, None).unwrap();
            assert_ne!(video_port(&a.answer), Some("0"), "{source}: {}", a.answer);
        }
    }

    #[test]
    fn viewers_are_offered_the_codec_the_video_has() {
        let addr: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let now = Instant::now();
        let first = VideoSource::First;
        let vp8 = accept_for_stream(
            &av_viewer_offer(),
            Role::Viewer,
            &[addr],
            now,
            first,
            Some(Codec::Vp8),
        )
        .unwrap()
        .answer;
        let video: String = vp8.split("m=video").nth(1).unwrap_or("").to_string();
        assert!(video.contains(" VP8/90000"), "{vp8}");
        assert!(!video.contains("H264/") && !video.contains("VP9/"), "{vp8}");
        // A viewer that offers VP8 only, of an H264 stream: audio only.
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(now);
        let mut api = rtc.sdp_api();
        for kind in [
            str0m::media::MediaKind::Audio,
            str0m::media::MediaKind::Video,
        ] {
            api.add_media(kind, str0m::media::Direction::RecvOnly, None, None, None);
        }
        let offer = api.apply().unwrap().0.to_sdp_string();
        let h264 = accept_for_stream(&offer, Role::Viewer, &[addr], now, first, Some(Codec::H264))
            .expect("audio is still served")
            .answer;
        assert_eq!(video_port(&h264), Some("0"), "{h264}");
        // A publisher's video is taken whatever the stream's setting.
        let mut rtc = Rtc::builder().build(now);
        let mut api = rtc.sdp_api();
        for kind in [
            str0m::media::MediaKind::Audio,
            str0m::media::MediaKind::Video,
        ] {
            api.add_media(kind, str0m::media::Direction::SendOnly, None, None, None);
        }
        let offer = api.apply().unwrap().0.to_sdp_string();
        let p = accept_for_stream(
            &offer,
            Role::Publisher,
            &[addr],
            now,
            VideoSource::None,
            Some(Codec::H264),
        )
        .unwrap()
        .answer;
        assert_ne!(video_port(&p), Some("0"), "{p}");
    }

    /// Found by the `offer` fuzz target: an m-section of a kind str0m does not know
    /// (`m=vide[`) was left out of the answer, which then had fewer m-lines than the offer
    /// (RFC 3264 §6 wants one per offered one): a 201 no client can apply.
    #[test]
    fn every_offered_section_is_answered_or_the_offer_refused() {
        let offer = av_viewer_offer().replacen("m=video", "m=vide[", 1);
        let addr: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let r = accept(&offer, Role::Viewer, &[addr], Instant::now());
        assert!(
            matches!(r, Err(OfferError::Unusable(_))),
            "{:?}",
            r.map(|n| n.answer)
        );
        // A data channel section, which browsers add: answered (rejected or not), in place.
        let mut rtc = Rtc::builder().build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(
            str0m::media::MediaKind::Audio,
            str0m::media::Direction::RecvOnly,
            None,
            None,
            None,
        );
        api.add_channel("chat".into());
        let offer = api.apply().unwrap().0.to_sdp_string();
        let kinds = |sdp: &str| {
            sdp.lines()
                .filter(|l| l.starts_with("m="))
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        match accept(&offer, Role::Viewer, &[addr], Instant::now()) {
            Ok(n) => assert_eq!(kinds(&offer), kinds(&n.answer), "{}", n.answer),
            Err(e) => panic!("an offer with a data channel: {e}"),
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let r = accept("hello", Role::Viewer, &[], Instant::now());
        assert!(matches!(r, Err(OfferError::Malformed(_))));
    }
}
