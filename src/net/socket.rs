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
    // Best effort: the kernel caps these at net.core.{r,w}mem_max; with CAP_NET_ADMIN the
    // FORCE variants go past the cap. A tick for thousands of viewers is megabytes, and
    // the batched sender drops what the kernel has no room for.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    force_buffer(&socket, libc::SO_RCVBUFFORCE, socket.recv_buffer_size());
    force_buffer(&socket, libc::SO_SNDBUFFORCE, socket.send_buffer_size());
    let (rcv, snd) = (
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    );
    // Linux reports twice the size granted (the other half is its bookkeeping overhead).
    if rcv < 2 * SOCKET_BUFFER_BYTES || snd < 2 * SOCKET_BUFFER_BYTES {
        tracing::warn!(
            "UDP socket buffers: receive {} KiB, send {} KiB (asked {} KiB each); for \
             thousands of viewers raise net.core.rmem_max and net.core.wmem_max",
            rcv / 2048,
            snd / 2048,
            SOCKET_BUFFER_BYTES / 1024
        );
    } else {
        tracing::debug!(
            "UDP socket buffers: receive {} KiB, send {} KiB",
            rcv / 2048,
            snd / 2048
        );
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Sets `option` (SO_RCVBUFFORCE or SO_SNDBUFFORCE) to [`SOCKET_BUFFER_BYTES`] when the
/// size granted (half the size reported, `current`) is smaller; silently nothing without
/// CAP_NET_ADMIN.
fn force_buffer(socket: &Socket, option: libc::c_int, current: std::io::Result<usize>) {
    use std::os::fd::AsRawFd;
    if current.is_ok_and(|c| c >= 2 * SOCKET_BUFFER_BYTES) {
        return;
    }
    let size = SOCKET_BUFFER_BYTES as libc::c_int;
    // SAFETY: a valid socket and a c_int option value that outlives the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
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
    fn buffers_are_large_with_net_admin() {
        let udp = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let sock = socket2::SockRef::from(&udp);
        let (rcv, snd) = (
            sock.recv_buffer_size().unwrap(),
            sock.send_buffer_size().unwrap(),
        );
        // With CAP_NET_ADMIN (bit 12 of the effective set) the sizes are forced.
        let net_admin = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let hex = s
                    .lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))?
                    .trim()
                    .to_string();
                u64::from_str_radix(&hex, 16).ok()
            })
            .is_some_and(|caps| caps & (1 << 12) != 0);
        if net_admin {
            assert!(
                rcv >= SOCKET_BUFFER_BYTES && snd >= SOCKET_BUFFER_BYTES,
                "{rcv} {snd}"
            );
        }
    }

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
