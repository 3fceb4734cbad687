//! Goodbyes on shutdown: the server binary, stopped with SIGINT while a viewer plays and a
//! publisher publishes, tells both on the wire that their sessions are over — an RTCP BYE
//! and then a DTLS close_notify — within a second, and exits 0.
//!
//! The peers are str0m `Rtc`s of the test's own on real UDP sockets on 127.0.0.1, with raw
//! packet output on so that the BYE they receive is seen (str0m itself ignores BYE), and
//! `Event::Closed` being str0m's report of the peer's close_notify. A DELETE mid-session
//! says the same goodbye to that one peer.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::RawPacket;
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The longest a peer may wait for its goodbye after the server is told to stop.
const GOODBYE_WITHIN: Duration = Duration::from_secs(1);

/// A port free on 127.0.0.1 just now (TCP or UDP as asked).
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// The server binary on 127.0.0.1, killed if the test fails before stopping it.
struct ServerProcess {
    child: Option<Child>,
    http: SocketAddr,
    /// Its stdout (where the log goes), read by a thread into this as it comes.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let http_port = free_port(false);
        let udp_port = free_port(true);
        let child = Command::new(env!("CARGO_BIN_EXE_mixcast"))
            .args(["--bind", "127.0.0.1", "--http-port"])
            .arg(http_port.to_string())
            .arg("--udp-port")
            .arg(udp_port.to_string())
            .env("RUST_LOG", "mixcast=info")
            // The log goes to stdout.
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the mixcast binary");
        let mut child = child;
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let into = std::sync::Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut l = into.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        // Signals are caught once it says "ready": a SIGINT before would end it the
        // default way, without goodbyes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !log
            .lock()
            .unwrap()
            .contains("ready; Ctrl-C or SIGTERM stops")
        {
            assert!(
                Instant::now() < deadline,
                "the server did not say it is ready: {}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            std::net::TcpStream::connect(http).is_ok(),
            "not listening on {http}"
        );
        ServerProcess {
            child: Some(child),
            http,
            log,
            reader: Some(reader),
        }
    }

    /// SIGINT, as Ctrl-C sends.
    fn interrupt(&self) {
        let pid = self.child.as_ref().unwrap().id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    }

    /// Waits for the process to exit; returns its code and everything it logged.
    fn wait(mut self, within: Duration) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join(); // ends with the process's stdout
        }
        let log = self.log.lock().unwrap().clone();
        (status.and_then(|s| s.code()), log)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One WebRTC peer of the test's: a str0m `Rtc` on its own UDP socket.
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    session_url: String,
    connected: bool,
    media_in: u32,
    /// When a BYE arrived, and when str0m reported the peer's close_notify.
    bye_at: Option<Instant>,
    closed_at: Option<Instant>,
    /// For a publisher: the next Opus frame's time.
    next_frame: Option<Instant>,
    sent_frames: u64,
}

/// An Opus frame of 20 ms of silence (TOC: SILK-only WB 20 ms, one frame; the payload
/// byte is what libopus writes for digital silence).
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

impl Peer {
    /// Offers audio in `direction` to `endpoint` (`/{stream}/whep` or `/whip`).
    fn connect(http: SocketAddr, path: &str, direction: Direction) -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let local = socket.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .enable_raw_packets(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
        let (offer, pending) = change.apply().unwrap();

        let url = format!("http://{http}{path}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut res = agent
            .post(&url)
            .header("Content-Type", "application/sdp")
            .send(offer.to_sdp_string())
            .unwrap();
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let body = res.body_mut().read_to_string().unwrap();
        assert_eq!(status, 201, "POST {url}: {body}");
        let answer = SdpAnswer::from_sdp_string(&body).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let session_url = format!("http://{http}{}", location.expect("a Location header"));
        Peer {
            rtc,
            socket,
            local,
            mid,
            session_url,
            connected: false,
            media_in: 0,
            bye_at: None,
            closed_at: None,
            next_frame: (direction == Direction::SendOnly).then(Instant::now),
            sent_frames: 0,
        }
    }

    /// Runs the peer for up to `d`, or until `done` says it has what it waits for.
    fn run(&mut self, d: Duration, mut done: impl FnMut(&Peer) -> bool) {
        let deadline = Instant::now() + d;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < deadline && !done(self) {
            self.send_media();
            let timeout = self.drain();
            let wait = timeout
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(5));
            self.socket.set_read_timeout(Some(wait)).unwrap();
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Ok(contents) = buf[..n].try_into() {
                        let input = Input::Receive(
                            Instant::now(),
                            Receive {
                                proto: Protocol::Udp,
                                source: from,
                                destination: self.local,
                                contents,
                            },
                        );
                        let _ = self.rtc.handle_input(input);
                    }
                }
                Err(_) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
            }
        }
    }

    /// A publisher writes a frame of silence every 20 ms once connected.
    fn send_media(&mut self) {
        let Some(at) = self.next_frame else { return };
        if !self.connected || Instant::now() < at || !self.rtc.is_alive() {
            return;
        }
        let Some(writer) = self.rtc.writer(self.mid) else {
            return;
        };
        let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else {
            return;
        };
        let rtp_time = MediaTime::new(
            self.sent_frames * 960,
            str0m::media::Frequency::FORTY_EIGHT_KHZ,
        );
        if writer
            .write(pt, Instant::now(), rtp_time, OPUS_SILENCE.to_vec())
            .is_ok()
        {
            self.sent_frames += 1;
        }
        self.next_frame = Some(at + Duration::from_millis(20));
    }

    /// Polls the `Rtc` until it waits; sends what it says; notes events. Returns when it
    /// wants the next timeout.
    fn drain(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(_) => return Instant::now() + Duration::from_millis(5),
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::MediaData(_) => self.media_in += 1,
            Event::Closed => {
                self.closed_at.get_or_insert_with(Instant::now);
            }
            Event::RawPacket(raw) => {
                if let RawPacket::RtcpRx(Rtcp::Goodbye(_)) = *raw {
                    self.bye_at.get_or_insert_with(Instant::now);
                }
            }
            _ => {}
        }
    }
}

/// Both kinds of peer, playing and publishing, then SIGINT: each gets a BYE and then a
/// close_notify within a second, and the server exits 0 and logs what it sent.
#[test]
fn sigint_sends_bye_and_close_notify_to_every_peer() {
    let server = ServerProcess::start();
    let mut viewer = Peer::connect(server.http, "/live/whep", Direction::RecvOnly);
    let mut publisher = Peer::connect(server.http, "/studio/whip", Direction::SendOnly);

    // Until the viewer hears the tone (Opus packets arrive) and the publisher is connected.
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && (viewer.media_in < 25 || !publisher.connected) {
        viewer.run(Duration::from_millis(20), |_| false);
        publisher.run(Duration::from_millis(20), |_| false);
    }
    assert!(
        viewer.media_in >= 25 && publisher.connected,
        "no session: viewer got {} packets, publisher connected: {}",
        viewer.media_in,
        publisher.connected
    );
    assert!(viewer.bye_at.is_none() && viewer.closed_at.is_none());

    let stopped = Instant::now();
    server.interrupt();
    let until = stopped + GOODBYE_WITHIN + Duration::from_millis(500);
    while Instant::now() < until && (viewer.closed_at.is_none() || publisher.closed_at.is_none()) {
        viewer.run(Duration::from_millis(10), |p| p.closed_at.is_some());
        publisher.run(Duration::from_millis(10), |p| p.closed_at.is_some());
    }
    for (who, p) in [("viewer", &viewer), ("publisher", &publisher)] {
        let bye = p
            .bye_at
            .unwrap_or_else(|| panic!("the {who} got no RTCP BYE after SIGINT"));
        let closed = p
            .closed_at
            .unwrap_or_else(|| panic!("the {who} got no DTLS close_notify after SIGINT"));
        let took = closed - stopped;
        eprintln!(
            "{who}: BYE after {:?}, close_notify after {took:?}",
            bye - stopped
        );
        assert!(took <= GOODBYE_WITHIN, "the {who}'s goodbye took {took:?}");
        assert!(bye <= closed, "the {who} got close_notify before the BYE");
    }

    let (code, log) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "the server's exit; its log:\n{log}");
    assert!(
        log.contains("sent goodbyes") && log.contains("to 1 viewers and 1 publishers"),
        "the server's log says whom it said goodbye to:\n{log}"
    );
}

/// A DELETE ends that one session with the same goodbye; the other plays on.
#[test]
fn delete_says_goodbye_to_that_peer_only() {
    let server = ServerProcess::start();
    let mut leaving = Peer::connect(server.http, "/live/whep", Direction::RecvOnly);
    let mut staying = Peer::connect(server.http, "/live/whep", Direction::RecvOnly);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && (leaving.media_in < 25 || staying.media_in < 25) {
        leaving.run(Duration::from_millis(20), |_| false);
        staying.run(Duration::from_millis(20), |_| false);
    }
    assert!(leaving.media_in >= 25 && staying.media_in >= 25);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let asked = Instant::now();
    let status = agent
        .delete(&leaving.session_url)
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200, "DELETE {}", leaving.session_url);
    leaving.run(GOODBYE_WITHIN, |p| p.closed_at.is_some());
    let closed = leaving.closed_at.expect("no close_notify after DELETE");
    assert!(
        leaving.bye_at.is_some_and(|b| b <= closed),
        "no BYE before close_notify"
    );
    eprintln!("DELETE: close_notify after {:?}", closed - asked);

    let before = staying.media_in;
    staying.run(Duration::from_secs(1), |_| false);
    assert!(
        staying.media_in >= before + 25 && staying.closed_at.is_none(),
        "the other viewer stopped hearing the stream ({} → {})",
        before,
        staying.media_in
    );
}
