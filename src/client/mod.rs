//! WHEP and WHIP clients over real UDP, used by the CLI (`mixcast push`,
//! `mixcast pull`), the tests and the load tool.
//!
//! `whep` (play) and `whip` (publish) are the public faces; `http` carries the signalling
//! and `driver` runs one str0m `Rtc` over one blocking socket.

mod driver;
mod http;
pub mod link_stats;
pub mod load;
pub mod progress;
pub mod pull;
pub mod push;
pub mod remote_source;
pub mod signals;
pub mod wav_out;
pub mod whep;
pub mod whip;

pub use http::REQUEST_TIMEOUT;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};

/// Why a client command (`mixcast push`, `mixcast pull`) stopped short.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command line is wrong (a URL, a source, a file name): exit status 2.
    #[error("{0}")]
    Usage(String),
    /// The remote refused for good, or the output could not be written: exit status 1.
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    /// The process exit status this error calls for.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_) => 2,
            CommandError::Failed(_) => 1,
        }
    }
}

/// Checks that `url` is an absolute `http` or `https` URL with a host, and returns the
/// host's first address and port (default 80 or 443).
pub fn endpoint_address(url: &str) -> Result<SocketAddr, CommandError> {
    let bad = |why: &str| CommandError::Usage(format!("bad URL {url:?}: {why}"));
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => return Err(bad("expected http://HOST[:PORT]/PATH")),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(port);
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| bad(&format!("{host} has no address")))
}

/// The local address a client should announce to reach `server`: the server's own
/// address family's loopback when the server is on loopback (only loopback candidates are
/// then used), else the address the OS would send from (a connected UDP socket's, no
/// packet sent).
pub fn local_address_for(server: SocketAddr) -> Result<IpAddr, CommandError> {
    if server.ip().is_loopback() {
        return Ok(server.ip());
    }
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = UdpSocket::bind(any)
        .and_then(|s| s.connect(server).map(|_| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| CommandError::Failed(format!("no route to {server}: {e}")))?;
    Ok(probe.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let a = endpoint_address("http://127.0.0.1:8889/live/whip").unwrap();
        assert_eq!(a, "127.0.0.1:8889".parse().unwrap());
        let a = endpoint_address("https://[::1]/live/whep").unwrap();
        assert_eq!(a, "[::1]:443".parse().unwrap());
        for bad in [
            "",
            "127.0.0.1:8889/live/whip",
            "ftp://x/y",
            "http://",
            "not a url",
        ] {
            assert!(
                matches!(endpoint_address(bad), Err(CommandError::Usage(_))),
                "{bad}"
            );
        }
        assert_eq!(
            local_address_for("127.0.0.1:9".parse().unwrap()).unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }
}
