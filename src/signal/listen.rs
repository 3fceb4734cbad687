//! The HTTP(S) listener: accepts TCP connections and hands each to `signal::conn`, with the
//! limits a hostile client must not get around: at most `max_connections_per_ip` open
//! connections per source address (IPv6: per /64), and an accept loop that survives running
//! out of file descriptors (one clear log line, then back-off instead of a spin).
//!
//! Owns the accept loop, the per-address counts and the accept-error log. The timeouts are
//! applied per connection by `signal::conn`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::sync::watch;

use super::conn;
use crate::log_throttle::{more_text, Throttle};

/// Default longest wait for a request's headers (and a TLS handshake).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait for a request's whole body once its headers are in.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most open connections from one source address (IPv6: one /64).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Largest request body: an SDP offer is a few kB (a browser's with video and simulcast
/// about 10 kB).
pub const MAX_BODY: usize = 128 * 1024;

/// First and longest pause after a failed accept for want of resources.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(20);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The HTTP limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a request's headers, from the connection's start or the previous
    /// response (an idle keep-alive connection is closed after it too), and for a TLS
    /// handshake.
    pub header_timeout: Duration,
    /// Longest wait for a request's whole body after its headers (408 after it).
    pub body_timeout: Duration,
    /// Most open connections from one source address; more are closed at once.
    pub max_connections_per_ip: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
        }
    }
}

/// Serves `app` on `listener` until `stop` fires (or is dropped). Runs on the current
/// tokio runtime.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: HttpLimits,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (shutdown, shutting_down) = watch::channel(false);
    let counts = PerAddress::new(limits.max_connections_per_ip);
    let mut errors = AcceptErrors::default();
    let mut refused = Throttle::default();
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => {
                errors.recovered();
                x
            }
            Err(e) => {
                let Some(pause) = errors.failed(&e) else {
                    continue; // the one connection's trouble (reset before accept...)
                };
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let Some(slot) = counts.take(peer.ip()) else {
            if let Some(more) = refused.tick() {
                tracing::warn!(
                    client = %peer.ip(),
                    "HTTP: closed a connection from {}: it already has {} open \
                     (--max-connections-per-ip){}",
                    peer.ip(),
                    limits.max_connections_per_ip,
                    more_text(more)
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let connection = conn::Connection {
            peer,
            app: app.clone(),
            limits,
            shutdown: shutting_down.clone(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            connection.run(tcp, acceptor).await;
            drop(slot);
        });
    }
    // Connections finish the request in hand and close; the runtime's shutdown bounds it.
    let _ = shutdown.send(true);
}

/// Open connections per source address (IPv4, or an IPv6 /64), capped.
struct PerAddress {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`PerAddress`], given back on drop.
struct Slot {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    fn new(max: usize) -> PerAddress {
        PerAddress {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or `None` if it has `max` open already.
    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            key,
            open: self.open.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What connections are counted under: an IPv4 address (also when mapped into IPv6), or an
/// IPv6 address's /64 (one host usually has a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
        v4 => v4,
    }
}

/// Accept failures for want of resources (file descriptors, memory): the state of the
/// back-off and of the log.
#[derive(Default)]
struct AcceptErrors {
    /// Since when accepting fails, and how often it has.
    failing: Option<(Instant, u64)>,
    pause: Duration,
    log: Throttle,
}

impl AcceptErrors {
    /// Notes a failed accept; the pause before the next try, or `None` to retry at once
    /// (an error of that one connection, not of the listener).
    fn failed(&mut self, e: &std::io::Error) -> Option<Duration> {
        let resources = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if !resources {
            tracing::debug!("HTTP accept: {e}");
            return None;
        }
        let (since, count) = self.failing.get_or_insert((Instant::now(), 0));
        *count += 1;
        let (since, count) = (*since, *count);
        self.pause = (self.pause * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        if let Some(more) = self.log.tick() {
            if count == 1 {
                tracing::error!(
                    "HTTP: cannot accept connections: {e} (file-descriptor limit {}); \
                     new clients wait in the kernel's queue; retrying every {} ms at most",
                    fd_limit(),
                    ACCEPT_BACKOFF_MAX.as_millis()
                );
            } else {
                tracing::error!(
                    "HTTP: still cannot accept connections: {e}; {count} failures in {:.0} s{}",
                    since.elapsed().as_secs_f64(),
                    more_text(more)
                );
            }
        }
        Some(self.pause)
    }

    /// Notes a successful accept: says so once if accepting had been failing.
    fn recovered(&mut self) {
        if let Some((since, count)) = self.failing.take() {
            tracing::warn!(
                "HTTP: accepting connections again after {count} failed accepts over {:.1} s",
                since.elapsed().as_secs_f64()
            );
            self.pause = Duration::ZERO;
            self.log = Throttle::default();
        }
    }
}

/// The process's soft RLIMIT_NOFILE, as text.
fn fd_limit() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.to_string()
    } else {
        "unknown".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_cap_and_release() {
        let counts = PerAddress::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = counts.take(a).unwrap();
        let _s2 = counts.take(a).unwrap();
        assert!(counts.take(a).is_none());
        assert!(counts.take("::ffff:127.0.0.1".parse().unwrap()).is_none());
        let _s3 = counts.take(b).unwrap();
        drop(s1);
        assert!(counts.take(a).is_some());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let counts = PerAddress::new(1);
        let _s = counts.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(counts
            .take("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_none());
        assert!(counts.take("2001:db8:1:3::1".parse().unwrap()).is_some());
    }

    #[test]
    fn accept_back_off_grows_and_resets() {
        let mut e = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let p1 = e.failed(&emfile).unwrap();
        let p2 = e.failed(&emfile).unwrap();
        assert!(p2 > p1 && p2 <= ACCEPT_BACKOFF_MAX);
        for _ in 0..20 {
            assert!(e.failed(&emfile).unwrap() <= ACCEPT_BACKOFF_MAX);
        }
        let reset = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(e.failed(&reset), None);
        e.recovered();
        assert_eq!(e.failed(&emfile), Some(ACCEPT_BACKOFF_MIN));
    }
}
