//! Binding the one UDP socket and finding the addresses to advertise as host candidates.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Kernel buffer we ask for on each direction: a second of audio for thousands of viewers.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Binds the media socket with large kernel buffers.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // `::` then also takes IPv4 peers where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The addresses to advertise as host candidates for a socket bound to `bound`:
/// that address alone, or for an unspecified bind every usable interface address
/// (loopback included), and `public` (NAT 1:1) on the same port.
///
/// Ordered by how likely a client can reach them: the operator's public addresses first,
/// then interface addresses, loopback last. Order matters: FFmpeg's WHIP muxer uses only
/// the first host candidate of the answer.
pub fn candidate_addrs(bound: SocketAddr, public: &[IpAddr]) -> Vec<SocketAddr> {
    let mut out = gather(bound, public);
    // Stable: within a rank, interface order is kept.
    out.sort_by_key(|a| {
        if public.contains(&a.ip()) {
            0
        } else if a.ip().is_loopback() {
            2
        } else {
            1
        }
    });
    out
}

fn gather(bound: SocketAddr, public: &[IpAddr]) -> Vec<SocketAddr> {
    let port = bound.port();
    let mut out: Vec<SocketAddr> = Vec::new();
    if bound.ip().is_unspecified() {
        let want_v6 = bound.is_ipv6();
        for ip in interface_addrs() {
            let link_local_v6 =
                matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if (ip.is_ipv4() || want_v6) && !link_local_v6 {
                out.push(SocketAddr::new(ip, port));
            }
        }
    } else {
        out.push(bound);
    }
    for ip in public {
        let a = SocketAddr::new(*ip, port);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Every address of every interface that is up.
fn interface_addrs() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!("cannot list network interfaces ({e}); advertising loopback only");
            vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_address_is_the_only_candidate() {
        let b: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        assert_eq!(candidate_addrs(b, &[]), vec![b]);
        let p: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            candidate_addrs(b, &[p]),
            vec!["203.0.113.7:8189".parse().unwrap(), b],
            "a public address comes first"
        );
    }

    #[test]
    fn unspecified_lists_loopback_too() {
        let b: SocketAddr = "0.0.0.0:8189".parse().unwrap();
        let c = candidate_addrs(b, &[]);
        assert!(c.contains(&"127.0.0.1:8189".parse().unwrap()), "{c:?}");
        assert!(c.iter().all(|a| a.is_ipv4()));
        assert!(
            c.last().is_some_and(|a| a.ip().is_loopback()),
            "loopback last: {c:?}"
        );
    }
}
