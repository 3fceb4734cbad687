//! Offers without `a=group:BUNDLE`: which m-section we serve, the offer str0m is given, and
//! the answer turned back into an answer to the offer the client sent.
//!
//! RFC 8843 lets an offerer not ask for BUNDLE (webrtcbin with `bundle-policy=none`, as
//! Meetecho's simple-whip-client sends for audio alone); then every m-section is its own
//! transport, with its own ICE and DTLS. str0m 0.25 refuses such offers ("Session attribute
//! a=group missing") and has one ICE agent and one DTLS association per `Rtc`, so one `Rtc`
//! can carry one of those transports. We serve one section (the first open audio section
//! with Opus, else the first open video section: a publisher may send video alone) and
//! reject every other one with port 0, as RFC 3264 section 6 says (same m-lines, same
//! order). Serving both would need two `Rtc`s behind one WHIP/WHEP resource: PATCH
//! (trickle, ICE restart) routed per m-section, one DELETE ending both, and lip-sync across
//! two sessions. No client we know needs that: simple-whip-client bundles audio with video
//! (`max-bundle`), and browsers, OBS and FFmpeg always bundle.
//!
//! str0m is given an offer with only the served section and a BUNDLE group naming it; its
//! answer loses that group again (RFC 8843 section 7.3: no BUNDLE group in an answer to an
//! offer that had none) and gets a rejected section for every section it never saw. Those
//! carry our `a=mid`, ICE credentials, fingerprint and `a=setup` too: webrtcbin refuses an
//! answer with an m-section that lacks any of them, rejected or not.

use super::offer::OfferError;

/// How an offer without BUNDLE is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The offer for str0m: the session part and the served section, under a BUNDLE group.
    pub offer: String,
    /// The served section's index among the offer's m-sections.
    served: usize,
    /// The mid str0m sees for the served section.
    mid: String,
    /// We made up `mid`: the offer's section has no `a=mid` (legal without BUNDLE), so the
    /// answer must not have one either (RFC 5888).
    added_mid: bool,
    /// Every m-section of the offer, in order: its m= line and its `a=mid` value.
    sections: Vec<(String, Option<String>)>,
}

/// An SDP split into its session lines and its m-sections' lines (line ends dropped).
fn split(sdp: &str) -> (Vec<&str>, Vec<Vec<&str>>) {
    let mut session = Vec::new();
    let mut media: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line.starts_with("m=") {
            media.push(vec![line]);
        } else if let Some(section) = media.last_mut() {
            section.push(line);
        } else {
            session.push(line);
        }
    }
    (session, media)
}

/// The value of `a=<name>:` in `lines`.
fn attribute<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
    let prefix = format!("a={name}:");
    lines.iter().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// Whether an m-section is open (port not 0) and of `kind`; for audio, also that it offers
/// Opus, which is all we take.
fn servable(section: &[&str], kind: &str) -> bool {
    let mut m = section[0].trim_start_matches("m=").split(' ');
    if m.next() != Some(kind) || m.next().is_none_or(|port| port == "0") {
        return false;
    }
    kind != "audio"
        || section.iter().any(|l| {
            l.strip_prefix("a=rtpmap:")
                .and_then(|map| map.split_whitespace().nth(1))
                .is_some_and(|enc| enc.to_ascii_lowercase().starts_with("opus/48000"))
        })
}

/// For an offer with no `a=group:BUNDLE`: the plan to answer it (`None`: the offer asks for
/// BUNDLE and str0m takes it as it is). An offer with nothing we could serve goes to str0m
/// unchanged too (one section, or none open): its own checks give the reason.
pub fn plan(offer: &str) -> Result<Option<Plan>, OfferError> {
    let (session, media) = split(offer);
    if session.iter().any(|l| l.starts_with("a=group:BUNDLE")) {
        return Ok(None);
    }
    let served = media
        .iter()
        .position(|s| servable(s, "audio"))
        .or_else(|| media.iter().position(|s| servable(s, "video")));
    let Some(served) = served else {
        return Ok(None);
    };
    let sections: Vec<(String, Option<String>)> = media
        .iter()
        .map(|s| (s[0].to_string(), attribute(s, "mid").map(str::to_string)))
        .collect();
    let (mid, added_mid) = match &sections[served].1 {
        Some(mid) => (mid.clone(), false),
        None => ("0".to_string(), true),
    };
    if mid.contains(char::is_whitespace) || mid.is_empty() {
        return Err(OfferError::Malformed(format!("a=mid:{mid} is not a token")));
    }
    let mut text = String::with_capacity(offer.len());
    let mut grouped = false;
    for line in &session {
        // Other groups (a=group:LS) name sections str0m no longer sees, and str0m takes the
        // first group of any kind for its BUNDLE group.
        if line.starts_with("a=group:") {
            continue;
        }
        // The group goes right after t=, where SDP writers put session attributes.
        text.push_str(line);
        text.push_str("\r\n");
        if line.starts_with("t=") && !grouped {
            text.push_str(&format!("a=group:BUNDLE {mid}\r\n"));
            grouped = true;
        }
    }
    if !grouped {
        text.push_str(&format!("a=group:BUNDLE {mid}\r\n"));
    }
    for line in &media[served] {
        text.push_str(line);
        text.push_str("\r\n");
        if added_mid && line.starts_with("m=") {
            text.push_str(&format!("a=mid:{mid}\r\n"));
        }
    }
    Ok(Some(Plan {
        offer: text,
        served,
        mid,
        added_mid,
        sections,
    }))
}

impl Plan {
    /// What is rejected and why, one entry per rejected m-section: for the log.
    pub fn rejected(&self) -> Vec<String> {
        let served_kind = kind(&self.sections[self.served].0);
        self.sections
            .iter()
            .enumerate()
            .filter(|(i, (line, _))| *i != self.served && !line_port_is_zero(line))
            .map(|(i, (line, mid))| {
                format!(
                    "m-section {i} ({}, mid {}): not bundled with the {served_kind} section \
                     we serve, and a session has one transport",
                    kind(line),
                    mid.as_deref().unwrap_or("none"),
                )
            })
            .collect()
    }

    /// str0m's `answer` to [`Plan::offer`], turned into an answer to the client's offer:
    /// its m-sections in the offer's order, the ones str0m did not see rejected (port 0),
    /// and no BUNDLE group.
    pub fn restore(&self, answer: &str) -> Result<String, OfferError> {
        let (session, media) = split(answer);
        let [served] = media.as_slice() else {
            return Err(OfferError::Unusable(format!(
                "expected one m-section in our answer, got {}",
                media.len()
            )));
        };
        // What a rejected section repeats from the served one (webrtcbin wants each).
        let transport: Vec<&str> = served
            .iter()
            .filter(|l| {
                ["a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=setup:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .copied()
            .collect();
        let mut out = String::with_capacity(answer.len() + 256 * self.sections.len());
        for line in &session {
            if line.starts_with("a=group:BUNDLE") {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        for (i, (m_line, mid)) in self.sections.iter().enumerate() {
            if i == self.served {
                for line in served {
                    if self.added_mid && line.strip_prefix("a=mid:") == Some(self.mid.as_str()) {
                        continue;
                    }
                    out.push_str(line);
                    out.push_str("\r\n");
                }
                continue;
            }
            out.push_str(&rejected_m_line(m_line));
            out.push_str("\r\nc=IN IP4 0.0.0.0\r\n");
            if let Some(mid) = mid {
                out.push_str(&format!("a=mid:{mid}\r\n"));
            }
            for line in &transport {
                out.push_str(line);
                out.push_str("\r\n");
            }
            out.push_str("a=inactive\r\na=rtcp-mux\r\n");
        }
        Ok(out)
    }
}

/// The media kind of an m= line ("audio", "video", "application").
fn kind(m_line: &str) -> &str {
    m_line
        .trim_start_matches("m=")
        .split(' ')
        .next()
        .unwrap_or("")
}

fn line_port_is_zero(m_line: &str) -> bool {
    m_line.trim_start_matches("m=").split(' ').nth(1) == Some("0")
}

/// The offer's m= line with port 0: same media, protocol and formats (RFC 3264 section 6:
/// the formats are ignored, but one must be there).
fn rejected_m_line(m_line: &str) -> String {
    let mut fields: Vec<&str> = m_line.trim_start_matches("m=").split(' ').collect();
    if fields.len() > 1 {
        fields[1] = "0";
    }
    format!("m={}", fields.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:LS v a\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=ice-ufrag:vv\r\na=rtpmap:96 VP8/90000\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\na=ice-ufrag:aa\r\na=rtpmap:111 OPUS/48000/2\r\n";

    #[test]
    fn bundled_offers_are_left_alone() {
        let offer =
            "v=0\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert_eq!(plan(offer).unwrap(), None);
    }

    #[test]
    fn the_audio_section_is_served_under_a_group_of_its_own() {
        let p = plan(TWO).unwrap().expect("a plan");
        assert_eq!(p.served, 1);
        assert!(
            p.offer.contains("t=0 0\r\na=group:BUNDLE a\r\nm=audio"),
            "{}",
            p.offer
        );
        assert!(!p.offer.contains("m=video") && !p.offer.contains("a=group:LS"));
        assert!(
            !p.offer.contains("ice-ufrag:vv"),
            "no other transport's credentials"
        );
        assert_eq!(p.rejected().len(), 1);
        assert!(
            p.rejected()[0].contains("video, mid v"),
            "{:?}",
            p.rejected()
        );
    }

    #[test]
    fn video_alone_is_served() {
        let offer = "v=0\r\nt=0 0\r\nm=video 9 X 96\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(plan(offer).unwrap().unwrap().served, 0);
    }

    #[test]
    fn the_answer_has_every_offered_section_in_order_and_no_group() {
        let p = plan(TWO).unwrap().unwrap();
        let str0m = "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE a\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:a\r\na=ice-ufrag:us\r\n\
            a=ice-pwd:pw\r\na=fingerprint:sha-256 AA\r\na=setup:active\r\na=recvonly\r\n\
            a=rtpmap:111 opus/48000/2\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n";
        let answer = p.restore(str0m).unwrap();
        assert!(!answer.contains("a=group"), "{answer}");
        let m: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            [
                "m=video 0 UDP/TLS/RTP/SAVPF 96",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111"
            ]
        );
        let video = answer.split("m=audio").next().unwrap();
        for want in ["a=mid:v", "a=ice-ufrag:us", "a=setup:active", "a=inactive"] {
            assert!(video.contains(want), "{want}: {answer}");
        }
        assert!(!video.contains("a=candidate"), "{answer}");
        assert_eq!(answer.matches("a=candidate").count(), 1);
        assert!(
            p.restore("v=0\r\nt=0 0\r\n").is_err(),
            "str0m answered nothing"
        );
    }

    /// Real offers (tests/fixtures) through the whole of `offer::accept`.
    #[test]
    fn real_offers_get_answers_of_their_shape() {
        use crate::engine::offer::{accept, Role};
        let addr: std::net::SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let now = std::time::Instant::now();
        let swc = include_str!("../../tests/fixtures/simple_whip_client_offer.sdp");
        let a = accept(swc, Role::Publisher, &[addr], now).unwrap().answer;
        assert!(!a.contains("a=group:"), "{a}");
        assert_eq!(a.matches("m=").count(), 1, "{a}");
        assert!(
            a.contains("a=mid:audio0") && a.contains("a=recvonly"),
            "{a}"
        );
        assert!(
            a.contains("a=rtpmap:100 opus/48000/2"),
            "the offer's PT: {a}"
        );

        let gst = include_str!("../../tests/fixtures/gstreamer_unbundled_av_offer.sdp");
        // As a publisher, and as a viewer (the same offer, receiving).
        for (role, offer, dir) in [
            (Role::Publisher, gst.to_string(), "a=recvonly"),
            (
                Role::Viewer,
                gst.replace("a=sendonly", "a=recvonly"),
                "a=sendonly",
            ),
        ] {
            let a = accept(&offer, role, &[addr], now).unwrap().answer;
            let (audio, video) = a.split_at(a.find("m=video").expect("a video m-line"));
            assert!(audio.contains("m=audio 9 ") && audio.contains(dir), "{a}");
            assert!(
                audio.contains("a=candidate:") && audio.contains("a=mid:audio0"),
                "{a}"
            );
            assert!(
                video.starts_with("m=video 0 ") && video.contains("a=mid:video1"),
                "{a}"
            );
            assert!(!a.contains("a=group:"), "{a}");
        }
    }

    #[test]
    fn a_section_without_mid_gets_none_back() {
        let offer = "v=0\r\nt=0 0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let p = plan(offer).unwrap().unwrap();
        assert!(p
            .offer
            .contains("a=group:BUNDLE 0\r\nm=audio 9 X 111\r\na=mid:0\r\n"));
        let answer = p
            .restore(
                "v=0\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 X 111\r\na=mid:0\r\na=recvonly\r\n",
            )
            .unwrap();
        assert_eq!(answer, "v=0\r\nt=0 0\r\nm=audio 9 X 111\r\na=recvonly\r\n");
    }
}
