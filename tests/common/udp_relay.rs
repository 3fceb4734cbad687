//! An impaired UDP path between WebRTC clients and the server, on loopback: this kernel has
//! no `netem`, so the test puts a relay in the middle that drops a share of the datagrams
//! each way, delays the rest, and can hold back DTLS (a handshake that stalls).
//!
//! Clients send to [`Relay::addr`] (a test rewrites the server's answer to name it, see
//! `sdp_proxy::start_with`); for each client address the relay opens its own socket towards
//! the server, so the server sees one client per socket, as behind a NAT. Loss is drawn
//! from a seeded generator (the same run drops the same datagrams); every datagram waits
//! the same delay, so order is kept.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the path does to each datagram, each way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Share of datagrams dropped (0 to 1).
    pub loss: f64,
    /// Added one-way delay.
    pub delay: Duration,
    /// Drop every DTLS record (first byte 20 to 63, RFC 7983).
    pub stall_dtls: bool,
}

/// Counts, both directions together.
#[derive(Debug, Default)]
pub struct Counts {
    /// Datagrams passed on.
    pub forwarded: AtomicU64,
    /// Dropped as loss.
    pub lost: AtomicU64,
    /// Dropped as DTLS while stalled.
    pub stalled: AtomicU64,
}

/// A running relay; its threads stop when it is dropped.
pub struct Relay {
    /// Where clients send.
    pub addr: SocketAddr,
    /// What it does now (change it while it runs).
    pub impairment: Arc<Mutex<Impairment>>,
    /// What it did.
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One datagram waiting out its delay.
struct Delayed {
    due: Instant,
    from: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// xorshift64*: a seeded, repeatable coin for the loss.
struct Coin(u64);

impl Coin {
    fn below(&mut self, p: f64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Whether a datagram is a DTLS record (RFC 7983 demultiplexing).
fn is_dtls(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(20..=63))
}

/// The shared decision: forward (after the delay) or drop, counted.
struct Path {
    impairment: Arc<Mutex<Impairment>>,
    counts: Arc<Counts>,
    coin: Mutex<Coin>,
    queue: crossbeam_channel::Sender<Delayed>,
}

impl Path {
    fn pass(&self, from: &Arc<UdpSocket>, to: SocketAddr, bytes: &[u8]) {
        let now = self.impairment.lock().unwrap().to_owned();
        if now.stall_dtls && is_dtls(bytes) {
            self.counts.stalled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.coin.lock().unwrap().below(now.loss) {
            self.counts.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }

        self.counts.forwarded.fetch_add(1, Ordering::Relaxed);
        let _ = self.queue.send(Delayed {
            due: Instant::now() + now.delay,
            from: Arc::clone(from),
            to,
            bytes: bytes.to_vec(),
        });
    }
}

/// Starts a relay in front of the server's UDP port `server`.
pub fn start(server: SocketAddr, impairment: Impairment, seed: u64) -> Relay {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind the relay"));
    front
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = front.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let impairment = Arc::new(Mutex::new(impairment));
    let counts = Arc::new(Counts::default());
    let (queue, delayed) = crossbeam_channel::unbounded::<Delayed>();
    let path = Arc::new(Path {
        impairment: Arc::clone(&impairment),
        counts: Arc::clone(&counts),
        coin: Mutex::new(Coin(seed | 1)),
        queue,
    });

    // The delay line: every datagram waits the same, so first in is first due.
    let halt = Arc::clone(&stop);
    std::thread::spawn(move || {
        while !halt.load(Ordering::Relaxed) {
            let Ok(d) = delayed.recv_timeout(Duration::from_millis(50)) else {
                continue;
            };
            let wait = d.due.saturating_duration_since(Instant::now());
            std::thread::sleep(wait);
            let _ = d.from.send_to(&d.bytes, d.to);
        }
    });

    // Client to server: one socket towards the server per client address.
    let halt = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        while !halt.load(Ordering::Relaxed) {
            let Ok((n, client)) = front.recv_from(&mut buf) else {
                continue;
            };
            let back = backs.entry(client).or_insert_with(|| {
                let back = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind a relay port"));
                back.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                // Server to this client, through the front socket.
                let (back2, front2, path2, halt2) = (
                    Arc::clone(&back),
                    Arc::clone(&front),
                    Arc::clone(&path),
                    Arc::clone(&halt),
                );
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65_536];
                    while !halt2.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = back2.recv_from(&mut buf) {
                            if from == server {
                                path2.pass(&front2, client, &buf[..n]);
                            }
                        }
                    }
                });
                back
            });
            path.pass(back, server, &buf[..n]);
        }
    });
    Relay {
        addr,
        impairment,
        counts,
        stop,
    }
}

/// `answer` with each m-section's candidates replaced by one host candidate at `relay`:
/// clients can reach the server only through the relay.
pub fn answer_via(answer: &str, relay: SocketAddr) -> String {
    let mut out = Vec::new();
    let mut placed = false;
    for line in answer.split("\r\n") {
        if line.starts_with("m=") {
            placed = false;
        }
        if line.starts_with("a=candidate:") {
            if !placed {
                out.push(format!(
                    "a=candidate:1 1 udp 2130706431 {} {} typ host",
                    relay.ip(),
                    relay.port()
                ));
                placed = true;
            }
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\r\n")
}

#[test]
fn the_coin_drops_about_its_share() {
    let mut coin = Coin(7);
    let dropped = (0..100_000).filter(|_| coin.below(0.1)).count();
    assert!((9_000..11_000).contains(&dropped), "{dropped}");
    assert!(is_dtls(&[22, 254, 253]) && !is_dtls(&[0x80, 111]) && !is_dtls(&[0, 1]));
}

/// `offer` without its candidates: the server learns the client's address only from the
/// checks that reach it (through the relay), as behind a NAT whose inside is unreachable.
pub fn offer_without_candidates(offer: &str) -> String {
    offer
        .split("\r\n")
        .filter(|l| !l.starts_with("a=candidate:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}
