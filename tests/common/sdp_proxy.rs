//! An HTTP/1.1 proxy in front of a WHIP/WHEP server that rewrites each POSTed offer on the
//! way: a stand-in for a middlebox or a buggy client that makes a session's DTLS
//! handshake fail (e.g. a fingerprint that is not the client's certificate's). Plain
//! HTTP on 127.0.0.1, one request per connection (`Connection: close`), enough for
//! FFmpeg's and curl's WHIP clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running proxy; it stops when dropped (its thread ends at the next connection).
pub struct SdpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// When the proxy handed the client an answer (a 201 to a POST), the latest.
    pub answered: Arc<Mutex<Option<Instant>>>,
}

/// Starts a proxy to the server at `upstream` that passes each POST body through
/// `rewrite` and everything else unchanged.
pub fn start(upstream: SocketAddr, rewrite: fn(&str) -> String) -> SdpProxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(Mutex::new(None));
    let noted = Arc::clone(&answered);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let noted = Arc::clone(&noted);
            std::thread::spawn(move || {
                if let Err(e) = relay(conn, upstream, rewrite, &noted) {
                    eprintln!("sdp_proxy: {e}");
                }
            });
        }
    });
    SdpProxy { addr, answered }
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    rewrite: fn(&str) -> String,
    answered: &Mutex<Option<Instant>>,
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
        *answered.lock().unwrap() = Some(Instant::now());
    }
    let mut client = client;
    client.write_all(&response)?;
    client.flush()
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
