//! Real publishers' WHIP offers (tests/fixtures/*.sdp: OBS, FFmpeg 8, GStreamer) POSTed to
//! the in-process server: each must get a 201 whose answer the same client can use.
//!
//! Checked per offer: status, `Location` under the endpoint, a strong ETag,
//! `application/sdp`; in the answer, a recvonly audio section with the offer's Opus payload
//! type, the video section accepted with the offer's H264 payload type, ICE credentials, the
//! server's candidates (all on loopback here), exactly one `a=fingerprint` and it is
//! sha-256 (libdatachannel, OBS's stack, fails DTLS often with several), and a DTLS role
//! that fits the offer's `a=setup`. Then DELETE on the session: 200.
//!
//! Offers are sent as captured except that candidates off loopback are dropped first
//! (tests never make the server send to other addresses).

use mixcast::config::Config;
use mixcast::server::Server;
use std::path::Path;
use std::sync::Mutex;

/// Each test starts its own server; one at a time keeps the small machine calm.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock only orders tests.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The offer without candidates whose address is not 127.0.0.1 or ::1.
fn loopback_candidates_only(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|line| {
            let Some(candidate) = line.trim_end().strip_prefix("a=candidate:") else {
                return true;
            };
            matches!(
                candidate.split_whitespace().nth(3),
                Some("127.0.0.1" | "::1")
            )
        })
        .collect()
}

/// An SDP split into its session part and its media sections, line by line.
struct Sdp<'a> {
    session: Vec<&'a str>,
    media: Vec<Vec<&'a str>>,
}

impl<'a> Sdp<'a> {
    fn parse(text: &'a str) -> Sdp<'a> {
        let mut sdp = Sdp {
            session: Vec::new(),
            media: Vec::new(),
        };
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if line.starts_with("m=") {
                sdp.media.push(vec![line]);
            } else if let Some(section) = sdp.media.last_mut() {
                section.push(line);
            } else {
                sdp.session.push(line);
            }
        }
        sdp
    }

    /// The media section of `kind` ("audio", "video").
    fn section(&self, kind: &str) -> Option<&[&'a str]> {
        let prefix = format!("m={kind} ");
        self.media
            .iter()
            .find(|m| m[0].starts_with(&prefix))
            .map(Vec::as_slice)
    }

    /// Every line anywhere that starts with `prefix`.
    fn all(&self, prefix: &str) -> Vec<&'a str> {
        self.session
            .iter()
            .chain(self.media.iter().flatten())
            .filter(|l| l.starts_with(prefix))
            .copied()
            .collect()
    }
}

/// The value of the first `a=<name>:` line of `section`, falling back to the session.
fn attribute<'a>(sdp: &Sdp<'a>, section: &[&'a str], name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    section
        .iter()
        .chain(sdp.session.iter())
        .find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// Whether `section` is sending/receiving as `direction` ("recvonly" etc.).
fn has_direction(section: &[&str], direction: &str) -> bool {
    section.iter().any(|l| *l == format!("a={direction}"))
}

/// The payload type of `codec` (case-insensitive) in `section`'s rtpmaps.
fn payload_type(section: &[&str], codec: &str) -> Option<u8> {
    section.iter().find_map(|l| {
        let rest = l.strip_prefix("a=rtpmap:")?;
        let (pt, encoding) = rest.split_once(' ')?;
        let name = encoding.split('/').next()?;
        name.eq_ignore_ascii_case(codec)
            .then(|| pt.parse().ok())
            .flatten()
    })
}

/// The port of a media section's m= line (0 = rejected).
fn port(section: &[&str]) -> u16 {
    section[0]
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// POSTs `offer` to a fresh server's `/{stream}/whip` and checks the answer against it.
/// Returns the answer.
fn check_offer(name: &str, offer: &str) -> String {
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts");
    let base = format!("http://{}", server.http_addr());
    let stream = "fixture";
    let offer = loopback_candidates_only(offer);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let mut res = agent
        .post(&format!("{base}/{stream}/whip"))
        .header("Content-Type", "application/sdp")
        .send(offer.as_str())
        .unwrap_or_else(|e| panic!("{name}: POST: {e}"));
    let status = res.status().as_u16();
    let header = |res: &ureq::http::Response<ureq::Body>, h: &str| {
        res.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let location = header(&res, "location");
    let etag = header(&res, "etag");
    let content_type = header(&res, "content-type");
    let answer = res.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 201, "{name}: status {status}: {answer}");
    let location = location.unwrap_or_else(|| panic!("{name}: 201 without Location"));
    assert!(
        location.starts_with(&format!("/{stream}/whip/")) && location.len() > 20,
        "{name}: Location {location}"
    );
    let etag = etag.unwrap_or_else(|| panic!("{name}: 201 without ETag"));
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"') && etag != "\"*\"",
        "{name}: ETag {etag} is not a strong, unique tag"
    );
    assert_eq!(
        content_type.as_deref(),
        Some("application/sdp"),
        "{name}: content type"
    );

    let o = Sdp::parse(&offer);
    let a = Sdp::parse(&answer);
    let problems = answer_problems(&o, &a);
    assert!(
        problems.is_empty(),
        "{name}: {}\noffer:\n{offer}\nanswer:\n{answer}",
        problems.join("\n")
    );

    let res = agent
        .delete(&format!("{base}{location}"))
        .call()
        .unwrap_or_else(|e| panic!("{name}: DELETE: {e}"));
    assert_eq!(res.status().as_u16(), 200, "{name}: DELETE {location}");
    server.shutdown();
    answer
}

/// How many simulcast layers OBS (32.1+, plugins/obs-webrtc/whip-utils.h
/// `simulcast_layers_in_answer`) reads from an answer: the first `a=simulcast` line anywhere,
/// one layer plus one per `;` up to its line end; 0 without such a line. OBS stops with
/// "Error.SimulcastLayersRejected" unless this equals the number of layers it sends.
fn obs_layers_accepted(answer: &str) -> usize {
    let Some(start) = answer.find("a=simulcast") else {
        return 0;
    };
    let Some(len) = answer[start..].find("\r\n") else {
        return 0;
    };
    1 + answer[start..start + len].matches(';').count()
}

/// Everything wrong with `answer` as an answer to `offer`, as sentences.
fn answer_problems(offer: &Sdp, answer: &Sdp) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(offer_audio) = offer.section("audio") else {
        return vec!["the fixture has no audio".into()];
    };
    match answer.section("audio") {
        None => problems.push("no audio section".into()),
        Some(audio) => {
            if port(audio) == 0 {
                problems.push("audio rejected (port 0)".into());
            }
            if !has_direction(audio, "recvonly") {
                problems.push("audio is not recvonly".into());
            }
            let offered = payload_type(offer_audio, "opus");
            let answered = payload_type(audio, "opus");
            if offered.is_none() || answered != offered {
                problems.push(format!(
                    "Opus payload type {answered:?}, the offer used {offered:?}"
                ));
            }
            if attribute(answer, audio, "ice-ufrag").is_none()
                || attribute(answer, audio, "ice-pwd").is_none()
            {
                problems.push("no ICE credentials".into());
            }
            if !audio.contains(&"a=rtcp-mux") {
                problems.push("no a=rtcp-mux".into());
            }
            let offered_setup = attribute(offer, offer_audio, "setup");
            let answered_setup = attribute(answer, audio, "setup");
            let fits = match offered_setup {
                Some("passive") => answered_setup == Some("active"),
                Some("active") => answered_setup == Some("passive"),
                _ => matches!(answered_setup, Some("active" | "passive")),
            };
            if !fits {
                problems.push(format!(
                    "a=setup:{answered_setup:?} does not fit the offer's {offered_setup:?}"
                ));
            }
        }
    }
    let bundled = offer
        .session
        .iter()
        .any(|l| l.starts_with("a=group:BUNDLE "));
    if let Some(offer_video) = offer.section("video") {
        match answer.section("video") {
            None => problems.push("no video section for the offered video".into()),
            // Unbundled, video is on a transport of its own, which a session does not
            // serve (README, Publishing): rejected, with what webrtcbin wants to see in
            // every section.
            Some(video) if !bundled => {
                if port(video) != 0 {
                    problems.push("unbundled video accepted: the README says rejected".into());
                }
                for a in ["mid", "ice-ufrag", "ice-pwd", "setup"] {
                    if attribute(answer, video, a).is_none() {
                        problems.push(format!("the rejected video section has no a={a}"));
                    }
                }
                if video.iter().any(|l| l.starts_with("a=candidate:")) {
                    problems.push("candidates in the rejected video section".into());
                }
            }
            Some(video) => {
                if port(video) == 0 {
                    problems.push("video rejected (port 0): WHIP accepts video".into());
                } else {
                    if !has_direction(video, "recvonly") {
                        problems.push("video is not recvonly".into());
                    }
                    let codec = ["h264", "vp8"]
                        .into_iter()
                        .find(|c| payload_type(offer_video, c).is_some())
                        .unwrap_or("h264");
                    let offered = payload_type(offer_video, codec);
                    let answered = payload_type(video, codec);
                    if offered.is_none() || answered != offered {
                        problems.push(format!(
                            "{codec} payload type {answered:?}, the offer used {offered:?}"
                        ));
                    }
                }
            }
        }
    }
    // RFC 3264: as many m-lines as the offer, of the same kinds, in the same order; each
    // with the offer's mid.
    let kinds = |sdp: &Sdp| -> Vec<String> {
        sdp.media
            .iter()
            .map(|m| {
                let kind = m[0]
                    .trim_start_matches("m=")
                    .split(' ')
                    .next()
                    .unwrap_or("");
                let mid = m
                    .iter()
                    .find_map(|l| l.strip_prefix("a=mid:"))
                    .unwrap_or("");
                format!("{kind}/{mid}")
            })
            .collect()
    };
    if kinds(offer) != kinds(answer) {
        problems.push(format!(
            "m-sections {:?}, the offer has {:?}",
            kinds(answer),
            kinds(offer)
        ));
    }
    let fingerprints = answer.all("a=fingerprint:");
    let sha256 = fingerprints
        .iter()
        .filter(|l| l.starts_with("a=fingerprint:sha-256 "))
        .count();
    // A BUNDLE answer may repeat the one fingerprint in every section; what breaks
    // libdatachannel is several hash functions.
    let distinct: std::collections::BTreeSet<&str> = fingerprints.iter().copied().collect();
    if distinct.len() != 1 || sha256 == 0 {
        problems.push(format!(
            "fingerprints {fingerprints:?}: expected one sha-256 fingerprint"
        ));
    }
    let candidates = answer.all("a=candidate:");
    if candidates.is_empty() {
        problems.push("no candidates: the server never trickles".into());
    }
    for c in &candidates {
        let fields: Vec<&str> = c.split_whitespace().collect();
        let on_loopback = fields
            .get(4)
            .is_some_and(|a| *a == "127.0.0.1" || *a == "::1");
        let udp_host = fields.get(2).is_some_and(|p| p.eq_ignore_ascii_case("udp"))
            && fields.get(7) == Some(&"host");
        if !on_loopback || !udp_host {
            problems.push(format!(
                "candidate {c}: expected UDP host candidates on loopback only"
            ));
        }
    }
    let answer_bundles = answer
        .session
        .iter()
        .any(|l| l.starts_with("a=group:BUNDLE "));
    if bundled && !answer_bundles {
        problems.push("no a=group:BUNDLE".into());
    }
    // RFC 8843 section 7.3: an answer groups only what the offer grouped.
    if !bundled && answer_bundles {
        problems.push("a=group:BUNDLE in the answer to an offer without one".into());
    }
    problems
}

#[test]
fn obs_offer_without_candidates() {
    let _serial = serial();
    check_offer("obs_offer.sdp", &fixture("obs_offer.sdp"));
}

#[test]
fn obs_offer_with_upper_case_opus() {
    // Some OBS builds spell the codec `OPUS` (SRS added a case-insensitive match for it);
    // RFC 4855 says media subtype names are case-insensitive.
    let _serial = serial();
    let offer = fixture("obs_offer.sdp").replace("opus/48000/2", "OPUS/48000/2");
    assert!(offer.contains("a=rtpmap:111 OPUS/48000/2"));
    check_offer("obs_offer.sdp (OPUS)", &offer);
}

/// OBS 32.1+ with three simulcast layers (rids "0", "1", "2"; "0" is the full-size
/// encoder): the answer must receive every layer, or OBS aborts.
#[test]
fn obs_simulcast_offer_gets_every_layer() {
    let _serial = serial();
    let answer = check_offer(
        "obs_simulcast_offer.sdp",
        &fixture("obs_simulcast_offer.sdp"),
    );
    let a = Sdp::parse(&answer);
    let video = a.section("video").expect("a video section");
    for rid in ["0", "1", "2"] {
        assert!(
            video.contains(&format!("a=rid:{rid} recv").as_str()),
            "rid {rid} not received:\n{answer}"
        );
    }
    assert!(
        video.contains(&"a=simulcast:recv 0;1;2"),
        "no a=simulcast:recv 0;1;2:\n{answer}"
    );
    assert_eq!(
        obs_layers_accepted(&answer),
        3,
        "OBS would abort:\n{answer}"
    );
    // The rid travels in the RTP header extension OBS declared as id 2; without it the
    // layers cannot be told apart (OBS declares no SSRCs when it sends rids).
    assert!(
        video.contains(&"a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
        "the rtp-stream-id extension is not accepted:\n{answer}"
    );
    // OBS's reading of the answers it must refuse.
    assert_eq!(obs_layers_accepted("v=0\r\na=simulcast:recv 0;1\r\n"), 2);
    assert_eq!(obs_layers_accepted("v=0\r\n"), 0);
}

#[test]
fn obs_offer_with_gathered_candidates() {
    let _serial = serial();
    check_offer("obs_gathered_offer.sdp", &fixture("obs_gathered_offer.sdp"));
}

#[test]
fn ffmpeg_offer_passive_with_rtx() {
    let _serial = serial();
    check_offer("ffmpeg_offer.sdp", &fixture("ffmpeg_offer.sdp"));
}

#[test]
fn gstreamer_offer_with_tcp_candidates() {
    let _serial = serial();
    check_offer("gstreamer_offer.sdp", &fixture("gstreamer_offer.sdp"));
}

/// Meetecho's simple-whip-client with audio alone: webrtcbin with `bundle-policy=none`, so
/// no `a=group:BUNDLE`; candidates trickled later, none in the offer. One section: served.
#[test]
fn simple_whip_client_offer_without_bundle() {
    let _serial = serial();
    let answer = check_offer(
        "simple_whip_client_offer.sdp",
        &fixture("simple_whip_client_offer.sdp"),
    );
    assert!(answer.contains("a=mid:audio0"), "{answer}");
}

/// simple-whip-client with audio and video: `max-bundle`, video first, the audio section
/// `a=bundle-only` with port 0 inside the BUNDLE group. Both served.
#[test]
fn simple_whip_client_av_offer_bundle_only_audio() {
    let _serial = serial();
    let answer = check_offer(
        "simple_whip_client_av_offer.sdp",
        &fixture("simple_whip_client_av_offer.sdp"),
    );
    assert!(answer.contains("a=group:BUNDLE video0 audio1"), "{answer}");
}

/// webrtcbin with `bundle-policy=none`, audio and video: two transports. The audio's is
/// served, the video section rejected with port 0 (README, Publishing).
#[test]
fn gstreamer_unbundled_audio_and_video() {
    let _serial = serial();
    let answer = check_offer(
        "gstreamer_unbundled_av_offer.sdp",
        &fixture("gstreamer_unbundled_av_offer.sdp"),
    );
    let a = Sdp::parse(&answer);
    let audio = a.section("audio").expect("audio");
    // Only the audio transport's candidates: ours, in the audio section.
    assert!(
        audio.iter().any(|l| l.starts_with("a=candidate:")),
        "{answer}"
    );
}

#[test]
fn the_checks_catch_a_bad_answer() {
    // The answer checks must fail on answers a real client would choke on.
    let offer_text = fixture("ffmpeg_offer.sdp");
    let offer = Sdp::parse(&offer_text);
    let good = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        a=fingerprint:sha-256 AA:BB\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n\
        a=setup:active\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 106\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
        a=rtpmap:106 H264/90000\r\n";
    assert_eq!(
        answer_problems(&offer, &Sdp::parse(good)),
        Vec::<String>::new()
    );
    for (what, bad) in [
        (
            "sendonly",
            good.replace(
                "a=recvonly\r\na=rtcp-mux\r\na=rtpmap:111",
                "a=sendonly\r\na=rtcp-mux\r\na=rtpmap:111",
            ),
        ),
        ("other PT", good.replace("111", "109")),
        (
            "two hashes",
            good.replace(
                "a=fingerprint:sha-256 AA:BB\r\n",
                "a=fingerprint:sha-256 AA:BB\r\na=fingerprint:sha-384 CC:DD\r\n",
            ),
        ),
        (
            "no candidates",
            good.replace(
                "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n",
                "",
            ),
        ),
        ("lan candidate", good.replace("127.0.0.1", "192.168.1.2")),
        (
            "passive to passive",
            good.replace("a=setup:active", "a=setup:passive"),
        ),
        ("video rejected", good.replace("m=video 9", "m=video 0")),
    ] {
        assert!(
            !answer_problems(&offer, &Sdp::parse(&bad)).is_empty(),
            "the checks miss: {what}"
        );
    }
}

#[test]
fn the_checks_catch_a_bad_answer_to_an_unbundled_offer() {
    let offer_text = fixture("gstreamer_unbundled_av_offer.sdp");
    let offer = Sdp::parse(&offer_text);
    let good = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n\
        a=fingerprint:sha-256 AA:BB\r\na=setup:active\r\na=recvonly\r\na=rtcp-mux\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:video1\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n\
        a=fingerprint:sha-256 AA:BB\r\na=setup:active\r\na=inactive\r\n";
    assert_eq!(
        answer_problems(&offer, &Sdp::parse(good)),
        Vec::<String>::new()
    );
    let swapped = {
        let (audio, video) = good.split_at(good.find("m=video").unwrap());
        let (session, audio) = audio.split_at(audio.find("m=audio").unwrap());
        format!("{session}{video}{audio}")
    };
    for (what, bad) in [
        (
            "a BUNDLE group",
            good.replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE audio0\r\n"),
        ),
        ("video accepted", good.replace("m=video 0", "m=video 9")),
        ("sections swapped", swapped),
        ("no mid", good.replace("a=mid:video1\r\n", "")),
        (
            "no setup",
            good.replace("a=setup:active\r\na=inactive", "a=inactive"),
        ),
        (
            "a candidate in the rejected section",
            good.replace(
                "a=inactive\r\n",
                "a=inactive\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\n",
            ),
        ),
    ] {
        assert!(
            !answer_problems(&offer, &Sdp::parse(&bad)).is_empty(),
            "the checks miss: {what}"
        );
    }
}
