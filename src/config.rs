//! Server configuration: a TOML file, overridden by flags and environment variables,
//! validated once at start-up. STUB shape; the lead fills it in.

use crate::media::sources::SourceSpec;
use std::net::{IpAddr, Ipv4Addr};

/// A configured stream and what it plays.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The stream's name, the `{stream}` of `/{stream}/whep`.
    pub name: String,
    /// Its inputs.
    pub sources: Vec<SourceSpec>,
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address HTTP and UDP bind to (`0.0.0.0` = all interfaces).
    pub bind: IpAddr,
    /// The HTTP signalling port (0 = any free port).
    pub http_port: u16,
    /// The one UDP port for every peer's ICE and media (0 = any free port).
    pub udp_port: u16,
    /// The configured streams.
    pub streams: Vec<StreamConfig>,
    /// Most viewers the server takes at once (over it: 503).
    pub max_viewers: usize,
}

impl Config {
    /// Loopback, ephemeral ports, the stream `live` playing the test signal: what tests use.
    pub fn loopback_ephemeral() -> Config {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            udp_port: 0,
            streams: vec![StreamConfig {
                name: "live".into(),
                sources: vec![SourceSpec::Tone],
            }],
            max_viewers: 10_000,
        }
    }
}
