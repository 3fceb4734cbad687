//! The fan-out's send order, in virtual time: every tick sends each connected viewer
//! exactly one RTP packet, in the same viewer order from tick to tick (so each listener
//! sees a constant offset from the tick, not jitter), in every `--fanout` mode.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mixcast::config::Fanout;
use mixcast::engine::egress::{Egress, StreamMix};
use mixcast::engine::offer::{self, Role};
use mixcast::engine::Transmitter;
use mixcast::media::mixer::Mixer;
use mixcast::media::opus::Encoder;
use mixcast::media::sources::{self, SourceSpec};
use mixcast::media::FRAME_DURATION;
use mixcast::metrics::Metrics;
use mixcast::streams::StreamDirectory;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const VIEWERS: usize = 6;

#[derive(Default)]
struct Wire(Vec<(SocketAddr, SocketAddr, Vec<u8>)>);

impl Transmitter for Wire {
    fn send(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        self.0.push((source, destination, data.to_vec()));
    }
}

fn is_rtp(data: &[u8]) -> bool {
    data.len() > 1 && (128..192).contains(&data[0]) && !(192..224).contains(&data[1])
}

struct Client {
    rtc: Rtc,
    timeout: Instant,
    connected: bool,
}

struct Net {
    egress: Egress,
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, usize>,
    server: SocketAddr,
    now: Instant,
}

impl Net {
    fn new() -> Net {
        let server: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let now = Instant::now();
        let mut mixer = Mixer::new();
        mixer.add(sources::open(&SourceSpec::Tone).unwrap(), 1.0);
        let stream = StreamMix::new("live".into(), mixer, Encoder::new(128_000).unwrap());
        let directory = Arc::new(StreamDirectory::new([("live".to_string(), vec![])]));
        let egress = Egress::new(
            vec![stream],
            directory,
            128_000,
            Arc::new(Metrics::default()),
        );
        let mut net = Net {
            egress,
            clients: Vec::new(),
            by_addr: HashMap::new(),
            server,
            now,
        };
        let mut wire = Wire::default();
        for i in 0..VIEWERS {
            let addr = SocketAddr::from(([127, 0, 0, 1], 40_000 + i as u16));
            let mut rtc = Rtc::builder().build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
            let mut api = rtc.sdp_api();
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            let (offer_sdp, pending) = api.apply().unwrap();
            let negotiated =
                offer::accept(&offer_sdp.to_sdp_string(), Role::Viewer, &[server], now).unwrap();
            let answer = str0m::change::SdpAnswer::from_sdp_string(&negotiated.answer).unwrap();
            rtc.sdp_api().accept_answer(pending, answer).unwrap();
            // Keys out of order, so that an order by key would differ from the viewers'.
            let key = (VIEWERS - i) as u64 * 7;
            net.egress.add_viewer(
                now,
                key,
                negotiated.rtc,
                negotiated.srtp_keys,
                "live",
                &mut wire,
            );
            net.clients.push(Client {
                rtc,
                timeout: now,
                connected: false,
            });
            net.by_addr.insert(addr, i);
        }
        let limit = now + Duration::from_secs(20);
        while net.clients.iter().any(|c| !c.connected) {
            assert!(net.now < limit, "viewers did not connect");
            net.now += Duration::from_millis(1);
            net.step(&mut wire);
        }
        for _ in 0..50 {
            net.now += Duration::from_millis(5);
            net.step(&mut wire);
        }
        net
    }

    fn key_of(&self, i: usize) -> u64 {
        (VIEWERS - i) as u64 * 7
    }

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
        while !wire.0.is_empty() {
            for (src, dst, data) in std::mem::take(&mut wire.0) {
                if dst == self.server {
                    let key = self.key_of(self.by_addr[&src]);
                    self.egress.handle_receive(now, key, src, dst, &data, wire);
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

    /// One TX-thread tick (tick, then the timeouts due): the RTP destinations, in order.
    fn tick(&mut self) -> Vec<SocketAddr> {
        self.now += FRAME_DURATION;
        let mut out = Wire::default();
        self.egress.tick(self.now, &mut out);
        self.egress.handle_timeouts(self.now, &mut out);
        let order = out.0.iter().filter(|p| is_rtp(&p.2)).map(|p| p.1).collect();
        // The clients get everything (RTP too), then answer.
        self.step(&mut out);
        order
    }
}

#[test]
fn each_viewer_once_per_tick_in_a_constant_order() {
    let mut net = Net::new();
    for mode in [Fanout::Batched, Fanout::Naive, Fanout::Direct] {
        net.egress.set_fanout(mode);
        net.tick(); // the switch itself
        let first = net.tick();
        assert_eq!(first.len(), VIEWERS, "{mode:?}: one packet per viewer");
        let mut unique = first.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), VIEWERS, "{mode:?}: nobody twice");
        for _ in 0..100 {
            assert_eq!(net.tick(), first, "{mode:?}: the same order every tick");
        }
        if mode != Fanout::Naive {
            // Batched and direct send in the viewers' own order (the order they joined).
            let joined: Vec<SocketAddr> = (0..VIEWERS)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 40_000 + i as u16)))
                .collect();
            assert_eq!(first, joined);
        }
    }
}

/// Every mode end to end over real UDP on 127.0.0.1: three viewers each get the stream
/// without loss, and the batched sender made fewer system calls than datagrams.
#[test]
fn both_modes_deliver_over_loopback() {
    use mixcast::client::whep::{play, PlayOptions};
    use mixcast::config::Config;
    use mixcast::server::Server;
    use std::net::{IpAddr, Ipv4Addr};

    for mode in [Fanout::Naive, Fanout::Batched, Fanout::Direct] {
        let config = Config {
            fanout: mode,
            ..Config::loopback_ephemeral()
        };
        let server = Server::start(config).expect("server starts");
        let url = format!("http://{}/live/whep", server.http_addr());
        let viewers: Vec<_> = (0..3)
            .map(|_| {
                let options = PlayOptions {
                    url: url.clone(),
                    token: None,
                    duration: Duration::from_secs(2),
                    bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    decode: false,
                };
                std::thread::spawn(move || play(&options))
            })
            .collect();
        for v in viewers {
            let report = v.join().unwrap().expect("viewer plays");
            assert!(report.packets >= 60, "{mode:?}: {} packets", report.packets);
            assert_eq!(report.lost_packets, 0, "{mode:?}: no loss on loopback");
        }
        let text = server.metrics().render();
        let counter = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        let calls = counter("mixcast_udp_send_calls_total ");
        let sent = counter("mixcast_packets_sent_total ");
        match mode {
            Fanout::Naive => assert_eq!(calls, 0, "the naive path makes no sendmmsg"),
            Fanout::Batched | Fanout::Direct => {
                assert!(calls > 0 && calls < sent, "{calls} calls, {sent} sent")
            }
        }
        assert_eq!(counter("mixcast_udp_send_dropped_total "), 0);
        server.shutdown();
    }
}
