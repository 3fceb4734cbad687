//! SDP offers for tests that need a well-formed offer and no peer behind it: str0m builds
//! them, with one loopback host candidate.

#![allow(dead_code)]

use std::time::Instant;

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// An offer with these m-lines, in order.
pub fn media(lines: &[(MediaKind, Direction)]) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:5000".parse().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    for &(kind, direction) in lines {
        api.add_media(kind, direction, None, None, None);
    }
    api.apply().unwrap().0.to_sdp_string()
}

/// An offer with one audio m-line in `direction`.
pub fn audio(direction: Direction) -> String {
    media(&[(MediaKind::Audio, direction)])
}
