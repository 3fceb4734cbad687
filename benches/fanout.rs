//! Cost of one 20 ms tick's fan-out per viewer: one stream (the test tone, encoded once per
//! tick) and N connected WHEP viewers, each a real str0m client that did ICE and DTLS with
//! the server's `Rtc` over a simulated wire in virtual time.
//!
//! One iteration is one `Egress::tick`: mix, encode once, write the frame to every
//! viewer's `Rtc`, drain it (RTP packetisation, SRTP) and hand each datagram to a sender:
//! - `engine/…`: a sender that only counts: str0m's and our per-viewer cost, no kernel;
//! - `socket/…`: real sends to one socket on 127.0.0.1 per viewer;
//!
//! each for `naive` (the baseline, `--fanout naive`: write and drain in the tick, the
//! packet leaves on the viewer's next timeout, one `send_to` per datagram) and `batched`
//! (`--fanout batched`: the packet leaves in the tick's drain, `sendmmsg` in batches) and
//! `direct` (`--fanout direct`: as batched, but the engine builds and SRTP-protects each
//! audio-only viewer's packet itself, without its `Rtc`).
//!
//! The time is the TX thread's CPU time (see [`thread_cpu_time`]). Criterion's throughput
//! is in viewers, so the time per viewer is one over the elements per second. Between timed ticks, untimed: the viewers' sockets are emptied and the
//! clients get their STUN and RTCP (so ICE consent and RTCP keep going as in a real run;
//! the RTP is counted, not decrypted).
//!
//! `cargo bench --bench fanout` (`-- engine` for one mode). `FANOUT_VIEWERS=100,1000`
//! chooses the sizes.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mixcast::config::Fanout;
use mixcast::engine::egress::{Egress, StreamMix};
use mixcast::engine::offer::{self, Role};
use mixcast::engine::Transmitter;
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::Encoder;
use mixcast::media::sources::{self, SourceSpec};
use mixcast::media::FRAME_DURATION;
use mixcast::metrics::Metrics;
use mixcast::net::batch::{BatchSender, MmsgSocket};
use mixcast::net::send::{NaiveSender, Outbox};
use mixcast::streams::StreamDirectory;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const SERVER: &str = "127.0.0.1:8189";

/// Datagrams between the server and the clients, delivered at the next step.
#[derive(Default)]
struct Wire {
    packets: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Transmitter for Wire {
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        self.packets.push((source, destination, data.to_vec()));
    }
}

/// Counts what the engine sends; keeps the non-RTP datagrams for the clients.
#[derive(Default)]
struct Counter {
    rtp: u64,
    bytes: u64,
    other: Wire,
}

impl Transmitter for Counter {
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if is_rtp(data) {
            self.rtp += 1;
            self.bytes += data.len() as u64;
        } else {
            self.other.send(source, destination, data);
        }
    }
}

impl Outbox for Counter {
    fn flush(&mut self) {}
}

/// RTP, not RTCP, STUN or DTLS (RFC 7983 demultiplexing, RFC 5761 for RTCP types).
fn is_rtp(data: &[u8]) -> bool {
    data.len() > 1 && (128..192).contains(&data[0]) && !(192..224).contains(&data[1])
}

struct Client {
    rtc: Rtc,
    timeout: Instant,
    connected: bool,
}

/// A server engine and its connected viewers.
struct Fixture {
    egress: Egress,
    clients: Vec<Client>,
    /// The viewers' sockets (their `Rtc`'s address), read and discarded between ticks.
    sockets: Vec<UdpSocket>,
    by_addr: HashMap<SocketAddr, usize>,
    server: SocketAddr,
    now: Instant,
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let server: SocketAddr = SERVER.parse().unwrap();
        let now = Instant::now();
        let mut mixer = Mixer::new();
        mixer.add(sources::open(&SourceSpec::Tone).unwrap(), 1.0);
        let stream = StreamMix::new("live".into(), mixer, Encoder::new(128_000).unwrap());
        let directory = Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
        let metrics = Arc::new(Metrics::default());
        let egress = Egress::new(vec![stream], directory, 128_000, metrics);
        let mut f = Fixture {
            egress,
            clients: Vec::new(),
            sockets: Vec::new(),
            by_addr: HashMap::new(),
            server,
            now,
        };
        let mut wire = Wire::default();
        for i in 0..n {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_nonblocking(true).unwrap();
            let addr = socket.local_addr().unwrap();
            let mut rtc = Rtc::builder().build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
            let mut api = rtc.sdp_api();
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            let (offer_sdp, pending) = api.apply().unwrap();
            let negotiated =
                offer::accept(&offer_sdp.to_sdp_string(), Role::Viewer, &[server], now).unwrap();
            let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer).unwrap();
            rtc.sdp_api().accept_answer(pending, answer).unwrap();
            f.egress.add_viewer(
                now,
                key(i),
                negotiated.rtc,
                negotiated.srtp_keys,
                "live",
                &mut wire,
            );
            f.clients.push(Client {
                rtc,
                timeout: now,
                connected: false,
            });
            f.sockets.push(socket);
            f.by_addr.insert(addr, i);
        }
        // Handshakes, 1 ms steps of virtual time.
        let limit = now + Duration::from_secs(20);
        while f.clients.iter().any(|c| !c.connected) {
            assert!(f.now < limit, "viewers did not connect");
            f.now += Duration::from_millis(1);
            f.step(&mut wire);
        }
        // Let the server side see DTLS finish too, and RTCP start.
        for _ in 0..100 {
            f.now += Duration::from_millis(5);
            f.step(&mut wire);
        }
        f
    }

    /// Delivers what is on the wire (both ways) and runs due timeouts.
    fn step(&mut self, wire: &mut Wire) {
        let now = self.now;
        self.egress.handle_timeouts(now, wire);
        for i in 0..self.clients.len() {
            if self.clients[i].timeout <= now {
                self.clients[i]
                    .rtc
                    .handle_input(Input::Timeout(now))
                    .unwrap();
                self.drain_client(i, wire);
            }
        }
        while !wire.packets.is_empty() {
            for (src, dst, data) in std::mem::take(&mut wire.packets) {
                if dst == self.server {
                    let i = self.by_addr[&src];
                    self.egress
                        .handle_receive(now, key(i), src, dst, &data, wire);
                } else if let Some(&i) = self.by_addr.get(&dst) {
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source: src,
                            destination: dst,
                            contents: data.as_slice().try_into().unwrap(),
                        },
                    );
                    self.clients[i].rtc.handle_input(input).unwrap();
                    self.drain_client(i, wire);
                }
            }
        }
    }

    fn drain_client(&mut self, i: usize, wire: &mut Wire) {
        let c = &mut self.clients[i];
        loop {
            match c.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    c.timeout = t;
                    return;
                }
                Output::Transmit(t) => wire.send(t.source, t.destination, &t.contents),
                Output::Event(Event::Connected) => c.connected = true,
                Output::Event(_) => {}
            }
        }
    }

    /// Untimed housekeeping after a tick: empty the sockets, let the clients answer.
    fn after_tick(&mut self, other: &mut Wire) {
        let mut buf = [0u8; 2048];
        for s in &self.sockets {
            while s.recv(&mut buf).is_ok() {}
        }
        self.step(other);
    }
}

fn key(i: usize) -> u64 {
    i as u64 + 1
}

/// A sender under test that keeps the non-RTP datagrams for the clients.
trait BenchTx: Outbox {
    fn other(&mut self) -> &mut Wire;
}

impl BenchTx for Counter {
    fn other(&mut self) -> &mut Wire {
        &mut self.other
    }
}

impl<T: Outbox> BenchTx for Split<'_, T> {
    fn other(&mut self) -> &mut Wire {
        &mut self.other
    }
}

/// CPU time of the calling thread (user and system: the loopback's receive path runs in
/// the sender's system call). The machine this runs on is shared: wall time would count
/// other processes' turns on the core; CPU time does not.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Times `ticks` ticks into `tx`, returning the CPU time spent in them.
fn run_ticks(f: &mut Fixture, ticks: u64, tx: &mut impl BenchTx) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..ticks {
        f.now += FRAME_DURATION;
        let t = thread_cpu_time();
        // What the TX thread does on a tick: the tick, then the timeouts due (where the
        // naive path's packets leave), then the flush.
        f.egress.tick(f.now, tx);
        f.egress.handle_timeouts(f.now, tx);
        tx.flush();
        spent += thread_cpu_time() - t;
        let mut other = std::mem::take(tx.other());
        f.after_tick(&mut other);
    }
    spent
}

/// RTP to a real sender, the rest (RTCP, STUN) to the simulated wire so that the clients
/// keep ICE consent and RTCP going.
struct Split<'a, T> {
    rtp: &'a mut T,
    other: Wire,
}

impl<'a, T> Split<'a, T> {
    fn new(rtp: &'a mut T) -> Self {
        Split {
            rtp,
            other: Wire::default(),
        }
    }
}

impl<T: Outbox> Transmitter for Split<'_, T> {
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if is_rtp(data) {
            self.rtp.send(source, destination, data);
        } else {
            self.other.send(source, destination, data);
        }
    }
}

impl<T: Outbox> Outbox for Split<'_, T> {
    fn flush(&mut self) {
        self.rtp.flush();
    }
}

/// Viewer counts to measure.
fn sizes() -> Vec<usize> {
    std::env::var("FANOUT_VIEWERS")
        .ok()
        .map(|v| {
            v.split(',')
                .map(|n| n.trim().parse().expect("a number"))
                .collect()
        })
        .unwrap_or_else(|| vec![100, 1000])
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan-out tick per viewer");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for n in sizes() {
        let mut f = Fixture::new(n);
        // Sanity: every viewer gets one packet per tick.
        let mut counter = Counter::default();
        run_ticks(&mut f, 1, &mut counter);
        assert_eq!(counter.rtp, n as u64, "one RTP packet per viewer per tick");
        println!(
            "{n} viewers: {} bytes per RTP datagram",
            counter.bytes / counter.rtp
        );
        group.throughput(Throughput::Elements(n as u64));
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut naive = NaiveSender::new(socket.try_clone().unwrap());
        let mut batched = BatchSender::with_sink(MmsgSocket::new(socket.try_clone().unwrap()));
        for mode in [Fanout::Naive, Fanout::Batched, Fanout::Direct] {
            f.egress.set_fanout(mode);
            let name = format!("{mode:?}").to_lowercase();
            group.bench_function(BenchmarkId::new(format!("engine/{name}"), n), |b| {
                b.iter_custom(|iters| run_ticks(&mut f, iters, &mut Counter::default()))
            });
            group.bench_function(BenchmarkId::new(format!("socket/{name}"), n), |b| {
                b.iter_custom(|iters| match mode {
                    Fanout::Naive => run_ticks(&mut f, iters, &mut Split::new(&mut naive)),
                    Fanout::Batched | Fanout::Direct => {
                        run_ticks(&mut f, iters, &mut Split::new(&mut batched))
                    }
                })
            });
        }
        println!("batched sender: {:?}", batched.stats());
    }
    group.finish();
}

/// The scaling past one core, roughly: N viewers on one TX thread against N/2 on each of two
/// threads ticking in parallel (batched, real sockets). Each thread here has its own engine
/// and so its own mix and encode (one Opus encode per tick, well under 1% of the tick at
/// 1000 viewers); the server's design encodes once and shares the frame. The time is the
/// CPU time of the slower thread in each tick (the threads start each tick together): on
/// a quiet machine with a core per thread, the tick's duration. `FANOUT_THREADS_VIEWERS` sets N (default 1000).
fn threads(c: &mut Criterion) {
    let n: usize = std::env::var("FANOUT_THREADS_VIEWERS")
        .ok()
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(1000);
    let mut group = c.benchmark_group("fan-out tick, TX threads");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(n as u64));
    for threads in [1usize, 2] {
        let mut parts: Vec<(Fixture, BatchSender<MmsgSocket>)> = (0..threads)
            .map(|_| {
                let f = Fixture::new(n / threads);
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                (f, BatchSender::with_sink(MmsgSocket::new(socket)))
            })
            .collect();
        group.bench_function(BenchmarkId::new("batched", threads), |b| {
            b.iter_custom(|iters| {
                // The threads tick together (a barrier before each tick); the process's
                // time for a tick is the slower thread's.
                let barrier = std::sync::Barrier::new(parts.len());
                let per_thread: Vec<Vec<Duration>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = parts
                        .iter_mut()
                        .map(|(f, tx)| {
                            let barrier = &barrier;
                            scope.spawn(move || {
                                let mut tx = Split::new(tx);
                                (0..iters)
                                    .map(|_| {
                                        barrier.wait();
                                        run_ticks(f, 1, &mut tx)
                                    })
                                    .collect()
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                (0..iters as usize)
                    .map(|i| per_thread.iter().map(|t| t[i]).max().unwrap())
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout, threads);
criterion_main!(benches);
