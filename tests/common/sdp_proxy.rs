//! An HTTP/1.1 proxy in front of a WHIP/WHEP server that rewrites each POSTed offer and
//! each answer on the way: a stand-in for a middlebox or a buggy client that makes a
//! session's DTLS handshake fail (e.g. a fingerprint that is not the client's
//! certificate's), or that sends the client's media another way (through `udp_relay`).
//! Plain HTTP on 127.0.0.1, one request per connection (`Connection: close`), enough for
//! FFmpeg's, aiortc's, curl's and our own clients.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running proxy; it stops when dropped (its thread ends at the next connection).
pub struct SdpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// When the proxy handed the client an answer (a 201 to a POST), the latest.
    pub answered: Arc<Mutex<Option<Instant>>>,
    /// While set, a DELETE is answered `200` here and never reaches the server: a client
    /// whose goodbye is lost, so only the server's own timers can end its session.
    pub swallow_deletes: Arc<AtomicBool>,
}

/// A rewrite of an SDP body.
pub type Rewrite = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Starts a proxy to the server at `upstream` that passes each POST body through
/// `rewrite` and everything else unchanged.
pub fn start(upstream: SocketAddr, rewrite: fn(&str) -> String) -> SdpProxy {
    start_with(upstream, Arc::new(rewrite), Arc::new(str::to_string))
}

/// Starts a proxy to the server at `upstream` that passes each POSTed offer through
/// `offer` and the body of each 201 answer through `answer`.
pub fn start_with(upstream: SocketAddr, offer: Rewrite, answer: Rewrite) -> SdpProxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(Mutex::new(None));
    let noted = Arc::clone(&answered);
    let swallow_deletes = Arc::new(AtomicBool::new(false));
    let swallow = Arc::clone(&swallow_deletes);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let noted = Arc::clone(&noted);
            let (offer, answer) = (Arc::clone(&offer), Arc::clone(&answer));
            let swallow = Arc::clone(&swallow);
            std::thread::spawn(move || {
                let swallow = swallow.load(Ordering::Relaxed);
                if let Err(e) = relay(conn, upstream, &*offer, &*answer, &noted, swallow) {
                    eprintln!("sdp_proxy: {e}");
                }
            });
        }
    });
    SdpProxy {
        addr,
        answered,
        swallow_deletes,
    }
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    rewrite: &(dyn Fn(&str) -> String + Send + Sync),
    rewrite_answer: &(dyn Fn(&str) -> String + Send + Sync),
    answered: &Mutex<Option<Instant>>,
    swallow_deletes: bool,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("/").to_string(),
    );
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mut body = String::from_utf8_lossy(&body).into_owned();
    if method == "POST" {
        body = rewrite(&body);
    }
    if method == "DELETE" && swallow_deletes {
        let mut client = client;
        client.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
        return client.flush();
    }

    let mut up = TcpStream::connect(upstream)?;
    let mut forwarded = format!("{method} {target} HTTP/1.1\r\nhost: {upstream}\r\n");
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            forwarded.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    forwarded.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    up.write_all(forwarded.as_bytes())?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    if method == "POST" && response.starts_with(b"HTTP/1.1 201") {
        response = with_body_rewritten(&response, rewrite_answer);
        *answered.lock().unwrap() = Some(Instant::now());
    }
    let mut client = client;
    client.write_all(&response)?;
    client.flush()
}

/// An HTTP/1.1 response (with a Content-Length, as the server sends) with its body
/// passed through `rewrite` and the Content-Length set to match.
fn with_body_rewritten(
    response: &[u8],
    rewrite: &(dyn Fn(&str) -> String + Send + Sync),
) -> Vec<u8> {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return response.to_vec();
    };
    let body = rewrite(body);
    let mut out = String::new();
    for line in head.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// An offer whose every `a=fingerprint` names another certificate: the same hash
/// function, each byte's bits flipped.
pub fn wrong_fingerprint(offer: &str) -> String {
    offer
        .split("\r\n")
        .map(|line| match line.strip_prefix("a=fingerprint:") {
            Some(rest) => {
                let (hash, hex) = rest.split_once(' ').unwrap_or((rest, ""));
                let flipped: Vec<String> = hex
                    .split(':')
                    .map(|b| format!("{:02X}", !u8::from_str_radix(b, 16).unwrap_or(0)))
                    .collect();
                format!("a=fingerprint:{hash} {}", flipped.join(":"))
            }
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}
