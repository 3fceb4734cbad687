//! An SDP offer as a WHIP or WHEP POST brings it: the offer checks, str0m's parser and
//! answerer, the unbundled-offer plan. An offer is refused with one of our errors or
//! answered; an answer is SDP that str0m parses back, with our credentials, one
//! fingerprint, and a usable audio section in the role's direction.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mixcast::engine::offer::{self, OfferError, Role};
use mixcast::streams::VideoSource;
use str0m::format::Codec;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    // The HTTP layer refuses bodies that are not UTF-8.
    let Ok(sdp) = std::str::from_utf8(body) else {
        return;
    };
    let role = if choice & 1 == 0 {
        Role::Viewer
    } else {
        Role::Publisher
    };
    let source = match (choice >> 1) & 3 {
        0 => VideoSource::First,
        1 => VideoSource::Latest,
        _ => VideoSource::None,
    };
    let current = match (choice >> 3) & 7 {
        1 => Some(Codec::Vp8),
        2 => Some(Codec::H264),
        3 => Some(Codec::Vp9),
        4 => Some(Codec::Av1),
        5 => Some(Codec::H265),
        _ => None,
    };
    let server = "127.0.0.1:8189".parse().unwrap();
    let result = offer::accept_for_stream(sdp, role, &[server], Instant::now(), source, current);
    let negotiated = match result {
        Ok(n) => n,
        Err(e) => {
            // Our own reasons are short and say something; str0m's go to the log only.
            match &e {
                OfferError::Malformed(m) | OfferError::Unusable(m) => assert!(!m.is_empty()),
                OfferError::Unparsable(_) | OfferError::Refused(_) => {}
            }
            let _ = e.detail();
            return;
        }
    };
    // What passed must have passed the checks.
    offer_checks_pass(sdp, role);
    let answer = &negotiated.answer;
    // A rejected section (port 0) of an offer without BUNDLE is restored as a bare m-line
    // (RFC 3264 §6), which str0m's strict parser does not take; the rest must parse.
    assert!(
        str0m::change::SdpAnswer::from_sdp_string(&without_rejected(answer)).is_ok(),
        "the answer does not parse:\n{answer}"
    );
    // RFC 3264 §6: one m-line per offered one, same kinds, same order.
    let kinds = |sdp: &str| -> Vec<String> {
        sdp.lines()
            .filter_map(|l| l.strip_prefix("m="))
            .map(|m| m.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        kinds(sdp),
        kinds(answer),
        "m-lines differ from the offer's:\n{answer}"
    );
    for line in answer.split("\r\n").filter(|l| !l.is_empty()) {
        let b = line.as_bytes();
        assert!(b.len() >= 2 && b[1] == b'=', "answer line {line:?}");
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "control character in answer line {line:?}"
        );
    }
    assert!(answer.contains(&format!("a=ice-ufrag:{}", negotiated.local_ufrag)));
    assert!(answer.contains(&format!("a=ice-pwd:{}", negotiated.local_pwd)));
    let fingerprints = answer
        .lines()
        .filter(|l| l.starts_with("a=fingerprint:"))
        .count();
    assert!(fingerprints >= 1, "no fingerprint in\n{answer}");
    assert!(
        answer
            .lines()
            .filter(|l| l.starts_with("a=fingerprint:"))
            .all(|l| l.starts_with("a=fingerprint:sha-256 ")),
        "one sha-256 fingerprint only:\n{answer}"
    );
    let audio_ok = sections(answer)
        .iter()
        .any(|s| s.kind == "audio" && s.open && (s.dir == role_dir(role) || s.dir == "sendrecv"));
    if role == Role::Viewer {
        assert!(
            audio_ok,
            "a viewer's answer without usable audio:\n{answer}"
        );
    }
    if role == Role::Viewer && source == VideoSource::None {
        assert!(
            !sections(answer).iter().any(|s| s.kind == "video" && s.open),
            "an audio-only stream's viewer got video:\n{answer}"
        );
    }
});

/// The answer without its port-0 m-sections.
fn without_rejected(answer: &str) -> String {
    let mut out = String::new();
    let mut keep = true;
    for line in answer.split("\r\n") {
        if let Some(m) = line.strip_prefix("m=") {
            keep = m.split(' ').nth(1) != Some("0");
        }
        if keep && !line.is_empty() {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

fn offer_checks_pass(sdp: &str, role: Role) {
    use mixcast::engine::offer_checks;
    assert!(offer_checks::lines(sdp).is_ok());
    assert!(offer_checks::values(sdp, role).is_ok());
}

fn role_dir(role: Role) -> &'static str {
    match role {
        Role::Viewer => "sendonly",
        Role::Publisher => "recvonly",
    }
}

struct Section<'a> {
    kind: &'a str,
    open: bool,
    dir: &'a str,
}

fn sections(answer: &str) -> Vec<Section<'_>> {
    let mut out: Vec<Section> = Vec::new();
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut it = m.split(' ');
            let kind = it.next().unwrap_or("");
            let open = it.next().is_some_and(|p| p != "0");
            out.push(Section {
                kind,
                open,
                dir: "sendrecv",
            });
        } else if let Some(s) = out.last_mut() {
            for d in ["sendonly", "recvonly", "inactive", "sendrecv"] {
                if line.strip_prefix("a=") == Some(d) {
                    s.dir = d;
                }
            }
        }
    }
    out
}
