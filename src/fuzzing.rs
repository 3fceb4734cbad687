//! What the fuzz targets (`fuzz/`, a workspace of its own) reach that is not public
//! otherwise. Hidden from the docs; not an API. Everything else they use is public already
//! (offers, STUN, the demux, the engine, the jitter buffer).

pub use crate::signal::session::SdpFrag;

/// The PATCH (trickle ICE, ICE restart) body parser the session endpoint uses.
pub fn parse_sdpfrag(body: &str) -> SdpFrag {
    crate::signal::session::parse_sdpfrag(body)
}
