//! A PATCH body (RFC 8840 trickle ICE, or an ICE restart with new credentials): parsed as
//! the session endpoint parses it, then applied to a live session's `Rtc` in the engine as
//! the TX thread applies it (trickled candidates, new remote credentials), and two seconds
//! of virtual time run so that str0m's ICE agent uses them (checks to the candidates,
//! STUN with the new credentials).
//!
//! Invariants: what the parser returns is in the body as it says (values without line
//! ends, candidates from `a=candidate:` lines); a candidate str0m parses prints as one it
//! parses again.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mixcast::engine::offer::Role;
use mixcast_fuzz::{Pair, KEY};
use str0m::{Candidate, IceCreds};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return; // the endpoint answers 400
    };
    let frag = mixcast::fuzzing::parse_sdpfrag(body);
    for v in [&frag.ufrag, &frag.pwd].into_iter().flatten() {
        assert!(!v.contains('\n') && !v.ends_with('\r'), "{v:?}");
    }
    if let Some(u) = &frag.ufrag {
        assert!(body.contains(&format!("a=ice-ufrag:{u}")));
    }
    if let Some(p) = &frag.pwd {
        assert!(body.contains(&format!("a=ice-pwd:{p}")));
    }
    assert!(frag.candidates.len() <= body.lines().count());
    let mut candidates = Vec::new();
    for c in &frag.candidates {
        assert!(c.starts_with("candidate:") && body.contains(&format!("a={c}")));
        if let Ok(candidate) = Candidate::from_sdp_string(c) {
            let printed = candidate.to_sdp_string();
            let printed = printed.strip_prefix("a=").unwrap_or(&printed);
            assert!(
                Candidate::from_sdp_string(printed).is_ok(),
                "{c:?} printed as {printed:?}, which does not parse"
            );
            candidates.push(candidate);
        }
    }
    if candidates.is_empty() && frag.ufrag.is_none() {
        return;
    }

    let start = Instant::now();
    let mut pair = Pair::new(Role::Viewer, start);
    for candidate in candidates.into_iter().take(32) {
        pair.egress
            .add_remote_candidate(KEY, candidate, pair.now, &mut pair.wire);
    }
    if let (Some(ufrag), Some(pass)) = (frag.ufrag, frag.pwd) {
        let local =
            pair.egress
                .restart_ice(KEY, IceCreds { ufrag, pass }, pair.now, &mut pair.wire);
        if let Some(local) = local {
            assert!(!local.ufrag.is_empty() && !local.pass.is_empty());
        }
    }
    pair.run_until(start + Duration::from_secs(2));
});
