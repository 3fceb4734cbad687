//! HTTP/1.1 by hand over a raw TCP socket, for requests no client library would send
//! (malformed lines, lying Content-Length, stalled headers) and for reading exactly what
//! the server answered.
//!
//! Owns no state. Every read is bounded by a deadline: a server that hangs makes the
//! helper return an error, never the test hang.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An answer as read off the socket.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// From the first byte sent to the end of the answer.
    pub elapsed: Duration,
}

impl Reply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request's bytes: `Host`, `Content-Length` (unless `headers` has one, or a
/// `Transfer-Encoding`) and `Connection: close` are added.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    let has = |n: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !has("content-length") && !has("transfer-encoding") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends `bytes` on a new connection and reads one answer (until the server closes, or the
/// answer's Content-Length is in), within `limit`.
pub fn exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Result<Reply, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(limit)).ok();
    // A server may close before reading everything (413 on a huge body): keep what it said.
    let _ = s.write_all(bytes);
    read_reply(&mut s, start, limit)
}

/// Reads one answer from `s` within `limit` of `start`.
pub fn read_reply(s: &mut TcpStream, start: Instant, limit: Duration) -> Result<Reply, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(reply) = parse(&buf, start) {
            return Ok(reply);
        }
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "no complete answer within {limit:?} ({} bytes: {:?})",
                buf.len(),
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ));
        }
        s.set_read_timeout(Some(left)).ok();
        match s.read(&mut chunk) {
            Ok(0) => {
                return parse_closed(&buf, start).ok_or_else(|| {
                    format!(
                        "closed after {} bytes: {:?}",
                        buf.len(),
                        String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    )
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return parse_closed(&buf, start).ok_or_else(|| "connection reset".to_string())
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Waits up to `limit` for the server to close `s` (EOF or reset). The time it took, or
/// an error if bytes came or it stayed open.
pub fn wait_closed(s: &mut TcpStream, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!("still open after {limit:?}"));
        }
        s.set_read_timeout(Some(left)).ok();
        match s.read(&mut chunk) {
            Ok(0) => return Ok(start.elapsed()),
            // An answer before closing (hyper may say 408): still closed by the server.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(start.elapsed()),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Header names (lower case) and values, in order.
type Headers = Vec<(String, String)>;

/// The status, headers and where the body starts, once the head is complete.
fn head(buf: &[u8]) -> Option<(u16, Headers, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, end + 4))
}

fn parse(buf: &[u8], start: Instant) -> Option<Reply> {
    let (status, headers, at) = head(buf)?;
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())?;
    (buf.len() >= at + len).then(|| Reply {
        status,
        headers,
        body: buf[at..at + len].to_vec(),
        elapsed: start.elapsed(),
    })
}

fn parse_closed(buf: &[u8], start: Instant) -> Option<Reply> {
    let (status, headers, at) = head(buf)?;
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(&buf[at..])
    } else {
        buf[at..].to_vec()
    };
    Some(Reply {
        status,
        headers,
        body,
        elapsed: start.elapsed(),
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}
