//! Prints a WebRTC offer (one recvonly Opus audio m-line) for trying WHEP by hand:
//!
//! ```sh
//! cargo run --example whep_offer > offer.sdp
//! curl -si -X POST -H 'Content-Type: application/sdp' --data-binary @offer.sdp \
//!      http://127.0.0.1:8889/live/whep
//! ```
//! The offer's candidate is a placeholder port on 127.0.0.1: nothing listens there, so the
//! session shows the SDP exchange and then times out (use `whep_play` to hear the stream).

use std::time::Instant;

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host("127.0.0.1:9".parse()?, "udp")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().ok_or("str0m made no offer")?;
    print!("{}", offer.to_sdp_string());
    Ok(())
}
