//! The HTTP limits against real sockets on loopback: connections whose headers never
//! finish are closed after `--header-timeout`; the per-address cap refuses the N+1th
//! connection while another address (127.0.0.2) is served; and a server out of file
//! descriptors (the binary under a low RLIMIT_NOFILE) logs it once and recovers once the
//! stalled connections close.

#[path = "common/raw_http.rs"]
mod raw_http;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mixcast::config::Config;
use mixcast::server::Server;
use mixcast::signal::listen::HttpLimits;
use raw_http::{exchange, request, wait_closed};

fn server(limits: HttpLimits) -> Server {
    Server::start(Config {
        http: limits,
        ..Config::loopback_ephemeral()
    })
    .expect("server starts on loopback")
}

fn get_streams(addr: SocketAddr) -> Result<u16, String> {
    let r = exchange(
        addr,
        &request("GET", "/api/streams", &addr.to_string(), &[], b""),
        Duration::from_secs(5),
    )?;
    Ok(r.status)
}

#[test]
fn two_hundred_unfinished_headers_are_closed_after_the_timeout() {
    let s = server(HttpLimits {
        header_timeout: Duration::from_secs(1),
        max_connections_per_ip: 1000,
        ..HttpLimits::default()
    });
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut c = TcpStream::connect(s.http_addr()).unwrap();
            c.write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        wait_closed(c, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connection {i} with unfinished headers: {e}"));
    }
    assert_eq!(get_streams(s.http_addr()), Ok(200));
}

#[test]
fn the_per_address_cap_refuses_one_more_and_serves_other_addresses() {
    let s = server(HttpLimits {
        header_timeout: Duration::from_secs(30),
        max_connections_per_ip: 4,
        ..HttpLimits::default()
    });
    let addr = s.http_addr();
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200)); // accepted and counted
    let mut fifth = TcpStream::connect(addr).unwrap();
    fifth
        .write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok();
    wait_closed(&mut fifth, Duration::from_secs(2)).expect("the 5th connection is closed");

    // 127.0.0.2 is another client: served.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    other.connect(&addr.into()).unwrap();
    let mut other: TcpStream = other.into();
    other
        .write_all(&request("GET", "/api/streams", "x", &[], b""))
        .unwrap();
    let r = raw_http::read_reply(
        &mut other,
        std::time::Instant::now(),
        Duration::from_secs(5),
    )
    .expect("127.0.0.2 is answered");
    assert_eq!(r.status, 200);

    // One of 127.0.0.1's closes: it may connect again.
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get_streams(addr), Ok(200));
}

#[test]
fn out_of_file_descriptors_logs_once_and_recovers() {
    const FDS: libc::rlim_t = 64;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mixcast"));
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--http-port",
        "0",
        "--udp-port",
        "0",
        "--header-timeout",
        "60",
        "--max-connections-per-ip",
        "1000",
    ])
    .env("RUST_LOG", "mixcast=info")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: FDS,
                rlim_max: FDS,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("mixcast starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (lines, tx) = (lines.clone(), tx.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = l.split("signalling on http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
                }
                lines.lock().unwrap().push(l);
            }
        });
    }
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server says where it listens")
        .parse()
        .unwrap();
    let result = (|| -> Result<(), String> {
        // More stalled connections than descriptors: the rest wait in the accept queue.
        let stalled: Vec<TcpStream> = (0..FDS as usize + 20)
            .map(|_| TcpStream::connect(addr).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        std::thread::sleep(Duration::from_millis(500));
        if get_streams(addr).is_ok() {
            return Err("answered with every descriptor taken: the test proves nothing".into());
        }
        drop(stalled);
        // Recovered: a request is answered again.
        let mut last = Err(String::new());
        for _ in 0..10 {
            last = get_streams(addr);
            if last == Ok(200) {
                break;
            }
        }
        if last != Ok(200) {
            return Err(format!(
                "not answered after the connections closed: {last:?}"
            ));
        }
        Ok(())
    })();
    std::thread::sleep(Duration::from_millis(200));
    let _ = child.kill(); // our own child, by its handle
    let _ = child.wait();
    let lines = lines.lock().unwrap().clone();
    result.unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", lines.join("\n")));
    let errors = lines
        .iter()
        .filter(|l| l.contains("cannot accept connections"))
        .count();
    assert_eq!(errors, 1, "accept errors logged:\n{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("accepting connections again")),
        "{}",
        lines.join("\n")
    );
    assert!(!lines.iter().any(|l| l.contains("panicked")));
}
