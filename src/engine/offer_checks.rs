//! Checks an SDP offer must pass before str0m sees it, so that an offer that cannot work is
//! refused at the POST with a reason in our words (naming the line) rather than accepted and
//! left to fail, or refused with str0m's internal text: lines of the `<type>=<value>` form
//! without control characters; ICE credentials of ICE characters (RFC 8839 §5.4); at least
//! one DTLS fingerprint in a hash we can check (sha-256, sha-1: what str0m verifies); media
//! kinds str0m answers (audio, video, application); and at least one m-section that is not
//! disabled (port 0, RFC 3264 §6) for the role.
//!
//! Owns no state; pure functions of the offer's text.

use super::offer::{OfferError, Role};

/// Longest ICE ufrag or password (RFC 8839 §5.4).
const MAX_ICE_CREDENTIAL: usize = 256;

/// Every line `<letter>=<value>`, no control characters but tab.
pub fn lines(sdp: &str) -> Result<(), OfferError> {
    for (n, line) in numbered(sdp) {
        if line.is_empty() {
            continue;
        }
        let b = line.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err(OfferError::Malformed(format!(
                "line {n} is not an SDP <type>=<value> line"
            )));
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(OfferError::Malformed(format!(
                "line {n} holds a control character"
            )));
        }
    }
    Ok(())
}

/// ICE credentials, fingerprints, and an m-section the role can use.
pub fn values(sdp: &str, role: Role) -> Result<(), OfferError> {
    let mut fingerprints = 0;
    let mut usable_fingerprint = false;
    // (kind, enabled) per m-section.
    let mut sections: Vec<(&str, bool)> = Vec::new();
    for (n, line) in numbered(sdp) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split(' ');
            let kind = f.next().unwrap_or("");
            let port = f.next().unwrap_or("");
            // `port` or `port/count` (RFC 8866 §5.14).
            let number = port.split('/').next().unwrap_or("");
            if number.parse::<u16>().is_err() {
                return Err(OfferError::Malformed(format!(
                    "m= on line {n}: the port is not a number"
                )));
            }
            // str0m leaves a section of any other kind out of its answer, which would then
            // have fewer m-lines than the offer (RFC 3264 §6): no client could apply it.
            if !matches!(kind, "audio" | "video" | "application") {
                return Err(OfferError::Unusable(format!(
                    "m= on line {n}: media other than audio, video or application"
                )));
            }
            let enabled = number != "0";
            sections.push((kind, enabled));
        } else if line == "a=bundle-only" {
            // Disabled in the offer only to be bundled (RFC 9143 §7.3).
            if let Some(last) = sections.last_mut() {
                last.1 = true;
            }
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ice_credential("a=ice-ufrag", n, v)?;
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            ice_credential("a=ice-pwd", n, v)?;
        } else if let Some(v) = line.strip_prefix("a=fingerprint:") {
            fingerprints += 1;
            usable_fingerprint |= fingerprint(n, v)?;
        }
    }
    if !usable_fingerprint {
        return Err(OfferError::Unusable(if fingerprints == 0 {
            "no a=fingerprint: DTLS needs the certificate's fingerprint".into()
        } else {
            "no a=fingerprint in sha-256 or sha-1, the hashes DTLS can check here".into()
        }));
    }
    let enabled = |kind: &str| sections.iter().any(|&(k, on)| k == kind && on);
    let ok = match role {
        Role::Viewer => enabled("audio"),
        Role::Publisher => enabled("audio") || enabled("video"),
    };
    if !ok {
        return Err(OfferError::Unusable(match role {
            Role::Viewer => "the audio m-section is disabled (port 0)".into(),
            Role::Publisher => "every audio and video m-section is disabled (port 0)".into(),
        }));
    }
    Ok(())
}

/// Lines numbered from 1, without their line end.
fn numbered(sdp: &str) -> impl Iterator<Item = (usize, &str)> {
    sdp.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// ice-char = ALPHA / DIGIT / "+" / "/", 1 to 256 of them.
fn ice_credential(what: &str, n: usize, v: &str) -> Result<(), OfferError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_ICE_CREDENTIAL
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err(OfferError::Malformed(format!(
            "{what} on line {n}: 1 to {MAX_ICE_CREDENTIAL} ICE characters (A-Z a-z 0-9 + /)"
        )))
    }
}

/// `hash HEX:HEX:…`. True if it is a hash we can check, with the right length.
fn fingerprint(n: usize, v: &str) -> Result<bool, OfferError> {
    let bad = || {
        OfferError::Malformed(format!(
            "a=fingerprint on line {n}: expected <hash> <hex pairs separated by ':'>"
        ))
    };
    let (hash, hex) = v.trim().split_once(' ').ok_or_else(bad)?;
    let bytes = hex.trim().split(':');
    let mut count = 0;
    for b in bytes {
        if b.len() != 2 || !b.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        count += 1;
    }
    let want = if hash.eq_ignore_ascii_case("sha-256") {
        32
    } else if hash.eq_ignore_ascii_case("sha-1") {
        20
    } else {
        return Ok(false);
    };
    if count == want {
        Ok(true)
    } else {
        Err(OfferError::Malformed(format!(
            "a=fingerprint on line {n}: {hash} is {want} bytes, not {count}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "a=fingerprint:sha-256 \
        AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    fn offer(extra: &str, m: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n{FP}\r\n{m}\r\n\
             a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n{extra}"
        )
    }

    #[test]
    fn good_offer_passes() {
        let o = offer("", "m=audio 9 UDP/TLS/RTP/SAVPF 111");
        lines(&o).unwrap();
        values(&o, Role::Viewer).unwrap();
    }

    #[test]
    fn control_characters_and_odd_lines() {
        let o = offer(
            "a=ice-options:trickle\0\r\n",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        );
        assert!(matches!(lines(&o), Err(OfferError::Malformed(m)) if m.contains("line 9")));
        assert!(lines("v=0\r\nhello\r\n").is_err());
        assert!(lines("v=0\r\n=x\r\n").is_err());
    }

    #[test]
    fn ice_credentials_are_ice_chars() {
        for bad in [
            "a=ice-pwd:abc\0def",
            "a=ice-ufrag:ab cd",
            "a=ice-ufrag:",
            "a=ice-pwd:é",
        ] {
            let o = offer(&format!("{bad}\r\n"), "m=audio 9 UDP/TLS/RTP/SAVPF 111");
            assert!(
                matches!(values(&o, Role::Viewer), Err(OfferError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = format!("a=ice-pwd:{}\r\n", "a".repeat(257));
        let o = offer(&long, "m=audio 9 UDP/TLS/RTP/SAVPF 111");
        assert!(values(&o, Role::Viewer).is_err());
    }

    #[test]
    fn fingerprint_hashes() {
        let o = offer("", "m=audio 9 UDP/TLS/RTP/SAVPF 111").replace("sha-256", "md7");
        assert!(matches!(
            values(&o, Role::Viewer),
            Err(OfferError::Unusable(_))
        ));
        let o = offer("", "m=audio 9 UDP/TLS/RTP/SAVPF 111").replace("sha-256", "SHA-1");
        assert!(
            matches!(values(&o, Role::Viewer), Err(OfferError::Malformed(_))),
            "length"
        );
        let both = offer(
            "a=fingerprint:md7 00:11\r\n",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        );
        values(&both, Role::Viewer).unwrap();
        let none = offer("", "m=audio 9 UDP/TLS/RTP/SAVPF 111").replace(FP, "a=x:y");
        assert!(matches!(
            values(&none, Role::Viewer),
            Err(OfferError::Unusable(_))
        ));
        let broken = offer(
            "a=fingerprint:sha-256 zz:zz\r\n",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        );
        assert!(matches!(
            values(&broken, Role::Viewer),
            Err(OfferError::Malformed(_))
        ));
    }

    #[test]
    fn disabled_sections() {
        let o = offer("", "m=audio 0 UDP/TLS/RTP/SAVPF 111");
        assert!(matches!(
            values(&o, Role::Viewer),
            Err(OfferError::Unusable(_))
        ));
        assert!(matches!(
            values(&o, Role::Publisher),
            Err(OfferError::Unusable(_))
        ));
        let video = offer(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111",
        );
        values(&video, Role::Publisher).unwrap();
        assert!(values(&video, Role::Viewer).is_err());
        let bundled = offer(
            "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=bundle-only\r\n",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111",
        );
        values(&bundled, Role::Publisher).unwrap();
    }
}
