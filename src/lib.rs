//! mixcast: a WebRTC media server. WHIP in, WHEP out, one Opus mix per stream.
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod media;
pub mod server;
pub mod engine;
pub mod metrics;
pub mod net;
pub mod sessions;
pub mod signal;
