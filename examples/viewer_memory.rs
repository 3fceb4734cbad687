//! Where a WHEP viewer's memory goes: builds N audio-only viewers in virtual time (no
//! sockets, as `tests/core_virtual_clock.rs` does), connects them, plays some seconds of
//! the mix, and reports the server's live heap bytes per viewer, by the phase that
//! allocated them.
//!
//! A counting global allocator tags every block with the "zone" current on its thread
//! when it was allocated (a 16-byte header), so a block is charged to that zone until it
//! is freed, wherever that happens. Zones: the server `Rtc` built by `offer::accept`, the
//! engine while adding the viewer, while connecting, in steady state, the RX demux table,
//! the session table; the clients and the simulated wire are tracked apart and left out.
//! What C code (aws-lc: SRTP and DTLS keys) allocates with `malloc` directly is found with
//! glibc's `mallinfo2` around each call into the server, minus our own blocks; glibc's
//! per-thread cache would blur that, so the program runs itself again with it off
//! (`GLIBC_TUNABLES=glibc.malloc.tcache_count=0`).
//!
//! ```text
//! cargo run --release --example viewer_memory -- 500 10
//! ```
//! Arguments: viewers (default 500), seconds of steady state (default 10), and `top` to
//! list the commonest live block sizes per zone with one backtrace each (slow).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixcast::engine::egress::{Egress, StreamMix};
use mixcast::engine::offer::{self, Role};
use mixcast::engine::Transmitter;
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::Encoder;
use mixcast::media::sources::{self, SourceSpec};
use mixcast::media::FRAME_DURATION;
use mixcast::metrics::Metrics;
use mixcast::net::demux::{Demux, Route};
use mixcast::sessions::{SessionEntry, Sessions};
use mixcast::streams::StreamDirectory;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

// ---- the counting allocator ------------------------------------------------------------

const OTHER: usize = 0;
const ACCEPT: usize = 1;
const ADD: usize = 2;
const CONNECT: usize = 3;
const STEADY: usize = 4;
const DEMUX: usize = 5;
const SESSIONS: usize = 6;
const CLIENT: usize = 7;
const WIRE: usize = 8;
const ZONES: usize = 9;
const ZONE_NAMES: [&str; ZONES] = [
    "other",
    "Rtc + answer (offer::accept)",
    "Egress::add_viewer",
    "engine while connecting",
    "engine in steady state",
    "RX demux entry",
    "session table entry",
    "clients (not server)",
    "wire (not server)",
];
/// Exact sizes tracked for the histogram; larger blocks share the last slot.
const SIZES: usize = 1 << 16;
const HEADER: usize = 16;

struct Counting;

static LIVE: [AtomicIsize; ZONES] = [const { AtomicIsize::new(0) }; ZONES];
/// The same blocks as glibc sizes its chunks: 8 bytes of overhead, 16-byte steps, 32 least.
static CHUNKS: [AtomicIsize; ZONES] = [const { AtomicIsize::new(0) }; ZONES];
static BLOCKS: [AtomicIsize; ZONES] = [const { AtomicIsize::new(0) }; ZONES];
/// What glibc counts for our blocks (usable size plus its 8-byte chunk header), to tell
/// the C libraries' own `malloc`s (aws-lc) apart: see [`c_heap`].
static SYS: AtomicIsize = AtomicIsize::new(0);
/// Bytes the C side allocated and still holds, charged to the zone of the window in which
/// they were allocated or freed.
static C_LIVE: [AtomicIsize; ZONES] = [const { AtomicIsize::new(0) }; ZONES];
static HIST: [[AtomicI32; SIZES]; ZONES] = [const { [const { AtomicI32::new(0) }; SIZES] }; ZONES];
/// A size whose next allocation in zone `TRACE_ZONE` prints a backtrace (0: none).
static TRACE_SIZE: AtomicUsize = AtomicUsize::new(0);
static TRACE_ZONE: AtomicUsize = AtomicUsize::new(usize::MAX);
static TRACED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static ZONE: Cell<usize> = const { Cell::new(OTHER) };
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn chunk(size: usize) -> isize {
    (size + 8).next_multiple_of(16).max(32) as isize
}

fn charge(zone: usize, size: usize, sign: isize) {
    LIVE[zone].fetch_add(sign * size as isize, Relaxed);
    CHUNKS[zone].fetch_add(sign * chunk(size), Relaxed);
    BLOCKS[zone].fetch_add(sign, Relaxed);
    HIST[zone][size.min(SIZES - 1)].fetch_add(sign as i32, Relaxed);
}

fn padded(layout: Layout) -> (Layout, usize) {
    let front = layout.align().max(HEADER);
    // Invariant: the size was valid for `layout`; adding at most one alignment keeps it so
    // for any allocation this program makes.
    let l = Layout::from_size_align(layout.size() + front, front).expect("padded layout");
    (l, front)
}

unsafe fn alloc_in(zone: usize, layout: Layout) -> *mut u8 {
    let (full, front) = padded(layout);
    // SAFETY: `full` has a non-zero size (it includes the header).
    let base = unsafe { System.alloc(full) };
    if base.is_null() {
        return base;
    }
    // SAFETY: `base` is a live block from the system allocator.
    let usable = unsafe { libc::malloc_usable_size(base.cast()) };
    SYS.fetch_add(usable as isize + 8, Relaxed);
    // SAFETY: `front >= 16` bytes precede the returned pointer, within the block.
    unsafe {
        let user = base.add(front);
        (user.sub(HEADER) as *mut usize).write(zone);
        (user.sub(8) as *mut usize).write(layout.size());
        charge(zone, layout.size(), 1);
        user
    }
}

unsafe fn zone_of(ptr: *mut u8) -> usize {
    // SAFETY: every pointer we hand out has its header in front of it.
    unsafe { (ptr.sub(HEADER) as *const usize).read() }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let zone = ZONE.with(Cell::get);
        maybe_trace(zone, layout.size());
        // SAFETY: as `System.alloc`.
        unsafe { alloc_in(zone, layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc_in` with this `layout`.
        unsafe {
            charge(zone_of(ptr), layout.size(), -1);
            let (full, front) = padded(layout);
            let usable = libc::malloc_usable_size(ptr.sub(front).cast());
            SYS.fetch_sub(usable as isize + 8, Relaxed);
            System.dealloc(ptr.sub(front), full);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The block stays in the zone that allocated it first.
        // SAFETY: as `GlobalAlloc::realloc`; the new layout is valid by its contract.
        unsafe {
            let zone = zone_of(ptr);
            maybe_trace(zone, new_size);
            let new = alloc_in(
                zone,
                Layout::from_size_align_unchecked(new_size, layout.align()),
            );
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// Prints a backtrace if this is the block [`trace_one`] waits for.
fn maybe_trace(zone: usize, size: usize) {
    if TRACE_ZONE.load(Relaxed) == zone
        && TRACE_SIZE.load(Relaxed) == size
        && !IN_TRACE.with(Cell::get)
        && !TRACED.swap(true, Relaxed)
    {
        IN_TRACE.with(|t| t.set(true));
        let old = ZONE.with(|z| z.replace(OTHER));
        if !print_trace(size) {
            TRACED.store(false, Relaxed);
        }
        ZONE.with(|z| z.set(old));
        IN_TRACE.with(|t| t.set(false));
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Prints where a block of `size` is being allocated; false (nothing printed) for the
/// encoder's transient blocks.
fn print_trace(size: usize) -> bool {
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    if bt.contains("Encoder::encode") {
        return false;
    }
    let frames: Vec<&str> = bt
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.contains(": ")
                && (l.contains("str0m") || l.contains("dimpl") || l.contains("mixcast"))
                && !l.contains("viewer_memory")
        })
        .take(7)
        .collect();
    println!("    {size} B allocated at:");
    for f in frames {
        println!("      {f}");
    }
    true
}

/// Runs `f` with allocations charged to `zone`.
fn in_zone<T>(zone: usize, f: impl FnOnce() -> T) -> T {
    let old = ZONE.with(|z| z.replace(zone));
    let r = f();
    ZONE.with(|z| z.set(old));
    r
}

/// Bytes in use by `malloc` that our allocator did not ask for: the C libraries' own
/// (aws-lc's keys and contexts). Single-threaded program: one arena.
fn c_heap() -> isize {
    // SAFETY: a plain query of glibc's statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as isize - SYS.load(Relaxed)
}

/// [`in_zone`] for server code only: also charges what C code allocated in it to `zone`.
fn server<T>(zone: usize, f: impl FnOnce() -> T) -> T {
    let before = c_heap();
    let r = in_zone(zone, f);
    C_LIVE[zone].fetch_add(c_heap() - before, Relaxed);
    r
}

fn live(zone: usize) -> isize {
    LIVE[zone].load(Relaxed)
}

const SERVER_ZONES: [usize; 6] = [ACCEPT, ADD, CONNECT, STEADY, DEMUX, SESSIONS];

/// The server's live bytes: Rust blocks plus what C code holds.
fn server_total() -> isize {
    SERVER_ZONES
        .iter()
        .map(|&z| live(z) + C_LIVE[z].load(Relaxed))
        .sum()
}

// ---- the simulation ---------------------------------------------------------------------

/// Datagrams in flight, delivered after a fixed delay.
#[derive(Default)]
struct Wire {
    now: Option<Instant>,
    in_flight: std::collections::VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
}

const LINK_DELAY: Duration = Duration::from_millis(5);

impl Transmitter for Wire {
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let at = self.now.expect("clock set") + LINK_DELAY;
        in_zone(WIRE, || {
            self.in_flight
                .push_back((at, source, destination, data.to_vec()))
        });
    }
}

struct Client {
    rtc: Rtc,
    timeout: Instant,
    connected: bool,
    packets: u64,
}

impl Client {
    fn drain(&mut self, wire: &mut Wire) {
        in_zone(CLIENT, || loop {
            match self.rtc.poll_output().expect("client output") {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
                Output::Transmit(t) => wire.send(t.source, t.destination, &t.contents),
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaData(_)) => self.packets += 1,
                Output::Event(_) => {}
            }
        })
    }
}

struct Sim {
    now: Instant,
    next_tick: Instant,
    egress: Egress,
    wire: Wire,
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    demux: Demux,
}

impl Sim {
    /// Adds a client `Rtc` at `addr` (its answer accepted) and drains it; its memory is
    /// charged to the clients.
    fn add_client(&mut self, addr: SocketAddr, rtc: Rtc, now: Instant) {
        let mut client = Client {
            rtc,
            timeout: now,
            connected: false,
            packets: 0,
        };
        client.drain(&mut self.wire);
        in_zone(CLIENT, || self.by_addr.insert(addr, self.clients.len()));
        in_zone(CLIENT, || self.clients.push(client));
    }

    /// Runs until `until`, charging the engine's allocations to `zone`.
    fn run(&mut self, until: Instant, zone: usize) {
        while self.now < until {
            let now = self.now;
            self.wire.now = Some(now);
            while self.wire.in_flight.front().is_some_and(|p| p.0 <= now) {
                let (_, src, dst, data) = self.wire.in_flight.pop_front().expect("one");
                if let Some(&i) = self.by_addr.get(&dst) {
                    let c = &mut self.clients[i];
                    let input = Input::Receive(
                        now,
                        Receive {
                            proto: Protocol::Udp,
                            source: src,
                            destination: dst,
                            contents: data.as_slice().try_into().expect("datagram"),
                        },
                    );
                    if in_zone(CLIENT, || c.rtc.handle_input(input)).is_ok() {
                        c.drain(&mut self.wire);
                    }
                } else {
                    let route = in_zone(DEMUX, || self.demux.route(src, &data).route());
                    if let Some(r) = route {
                        server(zone, || {
                            self.egress
                                .handle_receive(now, r.key, src, dst, &data, &mut self.wire)
                        });
                    }
                }
                in_zone(WIRE, || drop(data));
            }
            let mut next = self.next_tick.min(until);
            for c in &mut self.clients {
                if c.timeout <= now {
                    in_zone(CLIENT, || c.rtc.handle_input(Input::Timeout(now))).expect("timeout");
                    c.drain(&mut self.wire);
                }
                next = next.min(c.timeout);
            }
            server(zone, || {
                self.egress.handle_timeouts(now, &mut self.wire);
                if now >= self.next_tick {
                    self.egress.tick(now, &mut self.wire);
                    self.next_tick += FRAME_DURATION;
                }
            });
            next = next.min(self.next_tick);
            if let Some(t) = in_zone(zone, || self.egress.next_timeout()) {
                next = next.min(t);
            }
            if let Some(p) = self.wire.in_flight.front() {
                next = next.min(p.0);
            }
            self.now = next
                .max(now + Duration::from_micros(50))
                .min(until.max(now));
            if self.now == now {
                break;
            }
        }
    }
}

fn per_viewer(bytes: isize, n: usize) -> String {
    format!("{:>8.0}", bytes as f64 / n as f64)
}

fn main() {
    const TUNABLES: &str = "GLIBC_TUNABLES";
    if std::env::var_os(TUNABLES).is_none() {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().expect("own path");
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(TUNABLES, "glibc.malloc.tcache_count=0")
            .exec();
        panic!("could not run again without glibc's tcache: {err}");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(500);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let top = args.iter().any(|a| a == "top");
    let server_addr: SocketAddr = "127.0.0.1:8189".parse().expect("addr");

    let t = Instant::now();
    let provider = mixcast::net::dtls::crypto_provider();
    for _ in 0..100 {
        provider
            .dtls_provider
            .generate_certificate()
            .expect("certificate");
    }
    let cert_us = t.elapsed().as_secs_f64() * 1e6 / 100.0;

    let start = Instant::now();
    let mut mixer = Mixer::new();
    mixer.add(sources::open(&SourceSpec::Tone).expect("tone"), 1.0);
    let stream = StreamMix::new("live".into(), mixer, Encoder::new(128_000).expect("opus"));
    let directory = Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
    let egress = Egress::new(
        vec![stream],
        directory,
        128_000,
        Arc::new(Metrics::default()),
    );
    let mut sim = Sim {
        now: start,
        next_tick: start + FRAME_DURATION,
        egress,
        wire: Wire::default(),
        clients: Vec::with_capacity(n),
        by_addr: HashMap::with_capacity(n),
        demux: Demux::default(),
    };
    let sessions = Sessions::default();
    // A tick before anyone joins, so that the stream's own buffers are not charged.
    sim.run(start + FRAME_DURATION * 2, OTHER);

    let base: Vec<isize> = (0..ZONES).map(live).collect();
    let mut accept_time = Duration::ZERO;
    for i in 0..n {
        let now = sim.now;
        let addr = SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16));
        let (offer_sdp, pending, mut rtc) = in_zone(CLIENT, || client_offer(addr, now));
        let negotiated = server(ACCEPT, || {
            let t = Instant::now();
            let n = offer::accept(&offer_sdp, Role::Viewer, &[server_addr], now).expect("answer");
            accept_time += t.elapsed();
            n
        });
        in_zone(CLIENT, || {
            let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer)
                .expect("answer parses");
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .expect("answer accepted");
        });
        let key = i as u64 + 1;
        in_zone(DEMUX, || {
            sim.demux.register(
                negotiated.local_ufrag.clone(),
                &negotiated.local_pwd,
                Route { key, owner: 0 },
            )
        });
        in_zone(SESSIONS, || {
            sessions.insert(
                format!("{:032x}", key * 0x9e37_79b9_7f4a_7c15),
                SessionEntry {
                    key,
                    stream: "live".into(),
                    role: Role::Viewer,
                    etag: format!("\"{:016x}\"", key),
                    remote_ufrag: Some(format!("{key:08x}")),
                    owner: 0,
                    client: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 40_000))),
                    created: std::time::Instant::now(),
                    connected_after: None,
                },
            )
        });
        let offer::Negotiated {
            rtc: server_rtc,
            srtp_keys,
            ..
        } = negotiated;
        sim.wire.now = Some(now);
        server(ADD, || {
            sim.egress
                .add_viewer(now, key, server_rtc, srtp_keys, "live", &mut sim.wire)
        });
        sim.add_client(addr, rtc, now);
    }
    let after_add = server_total();

    // Connect: a few seconds of virtual time is plenty on a 5 ms link.
    let until = sim.now + Duration::from_secs(3);
    sim.run(until, CONNECT);
    let connected = sim.clients.iter().filter(|c| c.connected).count();
    let after_connect = server_total();

    let until = sim.now + Duration::from_secs(seconds);
    let packets_before: u64 = sim.clients.iter().map(|c| c.packets).sum();
    sim.run(until, STEADY);
    let packets: u64 = sim.clients.iter().map(|c| c.packets).sum::<u64>() - packets_before;
    let after_steady = server_total();

    println!(
        "{n} viewers, {connected} connected, {packets} packets in {seconds} s of steady state \
         ({:.1} per viewer per second); wall {:.1?}",
        packets as f64 / n as f64 / seconds as f64,
        start.elapsed()
    );
    println!(
        "offer::accept takes {:.0} µs per viewer, a DTLS certificate {cert_us:.0} µs to make \
         (wall, with this allocator)",
        accept_time.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "size_of::<Rtc>() = {} B (inline in the engine's Vec<Viewer>)",
        std::mem::size_of::<Rtc>()
    );
    println!();
    println!("server heap per viewer, bytes, by the phase that allocated it");
    println!(
        "  {:<32} {:>8} {:>8} {:>8} {:>7}",
        "", "Rust", "(chunks)", "C", "blocks"
    );
    for z in SERVER_ZONES {
        println!(
            "  {:<32} {} {} {} {:>7.1}",
            ZONE_NAMES[z],
            per_viewer(live(z) - base[z], n),
            per_viewer(CHUNKS[z].load(Relaxed), n),
            per_viewer(C_LIVE[z].load(Relaxed), n),
            BLOCKS[z].load(Relaxed) as f64 / n as f64,
        );
    }
    println!(
        "  {:<32} {} (Rust, for comparison)",
        ZONE_NAMES[CLIENT],
        per_viewer(live(CLIENT), n)
    );
    println!(
        "server total (Rust live + C): after add {} | connected {} | after {seconds} s {}",
        per_viewer(after_add, n),
        per_viewer(after_connect, n),
        per_viewer(after_steady, n),
    );
    let chunks: isize = SERVER_ZONES
        .iter()
        .map(|&z| CHUNKS[z].load(Relaxed) + C_LIVE[z].load(Relaxed))
        .sum();
    println!(
        "server total as glibc chunks (Rust + C): {} per viewer",
        per_viewer(chunks, n)
    );

    if top {
        for z in SERVER_ZONES {
            let mut sizes: Vec<(usize, i32)> = (0..SIZES)
                .map(|s| (s, HIST[z][s].load(Relaxed)))
                .filter(|&(_, c)| c as usize >= n / 2)
                .collect();
            sizes.sort_by_key(|&(s, c)| std::cmp::Reverse(s as i64 * c as i64));
            println!(
                "\n{}: block sizes with at least n/2 live blocks",
                ZONE_NAMES[z]
            );
            for (size, count) in sizes.into_iter().take(12) {
                println!(
                    "  {size:>6} B x {:>5.2} per viewer = {:>6.0} B",
                    count as f64 / n as f64,
                    size as f64 * count as f64 / n as f64
                );
                trace_one(z, size, &mut sim, server_addr);
            }
        }
    }
}

/// A client `Rtc` at `addr` and its audio-only WHEP offer.
fn client_offer(addr: SocketAddr, now: Instant) -> (String, str0m::change::SdpPendingOffer, Rtc) {
    let mut rtc = Rtc::builder().build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    (offer.to_sdp_string(), pending, rtc)
}

/// Prints a backtrace of the next block of `size` allocated in `zone`, by building one
/// more viewer and connecting it.
fn trace_one(zone: usize, size: usize, sim: &mut Sim, server: SocketAddr) {
    TRACED.store(false, Relaxed);
    TRACE_SIZE.store(size, Relaxed);
    TRACE_ZONE.store(zone, Relaxed);
    let now = sim.now;
    let addr = SocketAddr::from(([127, 0, 0, 2], sim.clients.len() as u16));
    let (offer_sdp, pending, mut rtc) = in_zone(CLIENT, || client_offer(addr, now));
    let negotiated = in_zone(ACCEPT, || {
        offer::accept(&offer_sdp, Role::Viewer, &[server], now).expect("answer")
    });
    in_zone(CLIENT, || {
        let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer).expect("sdp");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer");
    });
    let key = 1_000_000 + sim.clients.len() as u64;
    in_zone(DEMUX, || {
        sim.demux.register(
            negotiated.local_ufrag.clone(),
            &negotiated.local_pwd,
            Route { key, owner: 0 },
        )
    });
    sim.wire.now = Some(now);
    in_zone(ADD, || {
        sim.egress.add_viewer(
            now,
            key,
            negotiated.rtc,
            negotiated.srtp_keys,
            "live",
            &mut sim.wire,
        )
    });
    sim.add_client(addr, rtc, now);
    if matches!(zone, CONNECT | STEADY) {
        let until = sim.now + Duration::from_secs(3);
        sim.run(until, CONNECT);
        let until = sim.now + Duration::from_secs(6);
        sim.run(until, STEADY);
    }
    TRACE_SIZE.store(0, Relaxed);
    if !TRACED.load(Relaxed) {
        println!("    (no new block of {size} B in that phase)");
    }
}
