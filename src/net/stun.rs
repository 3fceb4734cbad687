//! Just enough STUN (RFC 8489) to route a datagram and to mend one interop gap; str0m does
//! the real parsing and checks.
//!
//! Owns: recognising a STUN message, reading the local part of its USERNAME, and
//! [`add_missing_priority`], which gives FFmpeg's ICE checks the PRIORITY attribute that
//! str0m insists on. Never allocates, never panics on any input, and never turns a packet
//! that fails its MESSAGE-INTEGRITY check into one that passes.

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// Message type of a Binding request (method 0x001, class request).
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_FINGERPRINT: u16 = 0x8028;
/// Attribute type and length.
const ATTR_HEADER_LEN: usize = 4;
/// HMAC-SHA1 output, the value of MESSAGE-INTEGRITY.
const SHA1_LEN: usize = 20;
/// RFC 8489 §14.7: the CRC-32 is XORed with "STUN".
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// The PRIORITY [`add_missing_priority`] inserts: RFC 8445 §5.1.2.1 for a peer-reflexive
/// candidate (type preference 110, as §7.1.1 asks of a check's PRIORITY), local
/// preference 65535 (§5.1.2.2: the value for a single IP address) and component 1. That is
/// what str0m itself computes for a prflx IPv6 candidate (it uses 65534 for IPv4); the
/// value only orders candidate pairs, and an FFmpeg publisher has exactly one.
pub const PRFLX_PRIORITY: u32 = (110 << 24) | (65_535 << 8) | (256 - 1);

/// How many bytes [`add_missing_priority`] adds to a packet: one PRIORITY attribute. An
/// `out` buffer of the input's length plus this is always large enough.
pub const PRIORITY_GROWTH: usize = ATTR_HEADER_LEN + 4;

/// True if `data` looks like a STUN message (RFC 7983 demux: first byte 0..=3, cookie).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// True if `data` is a STUN Binding request (an ICE connectivity or consent check).
pub fn is_binding_request(data: &[u8]) -> bool {
    is_stun(data) && data[..2] == BINDING_REQUEST
}

/// The part of the USERNAME attribute before the colon: for a request sent to us, our own
/// ufrag. `None` if `data` is not STUN or has no USERNAME.
pub fn local_ufrag(data: &[u8]) -> Option<&str> {
    if !is_stun(data) {
        return None;
    }
    let msg_len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let end = (HEADER_LEN + msg_len).min(data.len());
    let mut at = HEADER_LEN;
    while at + 4 <= end {
        let typ = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        let value = data.get(at + 4..at + 4 + len)?;
        if typ == ATTR_USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            return Some(user.split(':').next().unwrap_or(user));
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Our ICE password for a session as an HMAC-SHA1 key, prepared once (at registration) so
/// that checking a request costs one HMAC and no key setup.
#[derive(Clone)]
pub struct IntegrityKey(hmac::Key);

impl IntegrityKey {
    /// The key for short-term credentials with password `local_pwd` (RFC 8489 §9.1.1: the
    /// password itself, after OpaqueString, which leaves ICE's ASCII passwords unchanged).
    pub fn new(local_pwd: &str) -> IntegrityKey {
        IntegrityKey(hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            local_pwd.as_bytes(),
        ))
    }
}

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKey(..)") // never the password
    }
}

/// True if `data` is a STUN message whose (SHA-1) MESSAGE-INTEGRITY verifies with `key`.
///
/// The same rule str0m applies before it answers: the first MESSAGE-INTEGRITY counts, over
/// the message up to it with the length adjusted (RFC 8489 §14.5); what follows it is not
/// covered. A message without one, or one whose STUN length overruns the datagram, fails.
pub fn integrity_verifies(data: &[u8], key: &IntegrityKey) -> bool {
    if !is_stun(data) {
        return false;
    }
    let msg_len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let Some(msg) = data.get(..HEADER_LEN + msg_len) else {
        return false;
    };
    let mut at = HEADER_LEN;
    while at + ATTR_HEADER_LEN <= msg.len() {
        let typ = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let len = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        if typ == ATTR_MESSAGE_INTEGRITY {
            if len != SHA1_LEN {
                return false;
            }
            let (Some(stated), Some(header), Some(body)) = (
                msg.get(at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + SHA1_LEN),
                adjusted_header(msg, at, SHA1_LEN),
                msg.get(4..at),
            ) else {
                return false;
            };
            let mut ctx = hmac::Context::with_key(&key.0);
            ctx.update(&header);
            ctx.update(body);
            return ctx.sign().as_ref().ct_eq(stated).into();
        }
        at += ATTR_HEADER_LEN + len.div_ceil(4) * 4;
    }
    false
}

/// Gives an authenticated Binding request that lacks PRIORITY one, for str0m.
///
/// FFmpeg's WHIP muxer (libavformat/whip.c, `ice_create_request`) sends its connectivity
/// checks as USERNAME, USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT: no PRIORITY, which
/// RFC 8445 §7.1.1 requires and str0m's parser therefore refuses ("STUN packet missing
/// priority"). This writes into `out` the same request with a PRIORITY of
/// [`PRFLX_PRIORITY`] just before MESSAGE-INTEGRITY, then MESSAGE-INTEGRITY recomputed
/// with `local_pwd` (short-term credentials: a request is keyed with the password of the
/// agent it is sent to, ours), MESSAGE-INTEGRITY-SHA256 recomputed if the request had one
/// after MESSAGE-INTEGRITY, and FINGERPRINT if it had one. Returns the new length.
///
/// `None` means "pass the packet on unchanged": it is not a well-formed Binding request,
/// it already has PRIORITY, it has no (SHA-1) MESSAGE-INTEGRITY, something other than
/// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT follows MESSAGE-INTEGRITY (RFC 8489 §14.5 says
/// to ignore such attributes; we decline rather than silently drop them), any of its
/// integrity attributes or its FINGERPRINT does not verify (with `local_pwd`), or `out` is
/// shorter than `packet.len() +` [`PRIORITY_GROWTH`].
pub fn add_missing_priority(packet: &[u8], local_pwd: &str, out: &mut [u8]) -> Option<usize> {
    let layout = Layout::of(packet)?;
    let key = local_pwd.as_bytes();
    if layout.priority || !layout.verifies(packet, key) {
        return None;
    }

    // New layout: attributes before MI, PRIORITY, MI, [MI-SHA256], [FINGERPRINT].
    let priority_at = layout.integrity;
    let integrity_at = priority_at + PRIORITY_GROWTH;
    let sha256_at = integrity_at + ATTR_HEADER_LEN + SHA1_LEN;
    let sha256_len = layout.sha256.map_or(0, |(_, n)| ATTR_HEADER_LEN + n);
    let fingerprint_at = sha256_at + sha256_len;
    let total = fingerprint_at + layout.fingerprint.map_or(0, |_| ATTR_HEADER_LEN + 4);
    let msg_len = u16::try_from(total - HEADER_LEN).ok()?;
    let out = out.get_mut(..total)?;

    out[..priority_at].copy_from_slice(&packet[..priority_at]);
    put_attr_header(out, priority_at, ATTR_PRIORITY, 4);
    out[priority_at + 4..integrity_at].copy_from_slice(&PRFLX_PRIORITY.to_be_bytes());

    put_attr_header(out, integrity_at, ATTR_MESSAGE_INTEGRITY, SHA1_LEN);
    let mac = integrity_tag(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        key,
        out,
        integrity_at,
        SHA1_LEN,
    )?;
    out[integrity_at + 4..sha256_at].copy_from_slice(&mac.as_ref()[..SHA1_LEN]);

    if let Some((_, n)) = layout.sha256 {
        put_attr_header(out, sha256_at, ATTR_MESSAGE_INTEGRITY_SHA256, n);
        let mac = integrity_tag(hmac::HMAC_SHA256, key, out, sha256_at, n)?;
        out[sha256_at + 4..fingerprint_at].copy_from_slice(mac.as_ref().get(..n)?);
    }

    if layout.fingerprint.is_some() {
        put_attr_header(out, fingerprint_at, ATTR_FINGERPRINT, 4);
        let crc = fingerprint(out, fingerprint_at)?;
        out[fingerprint_at + 4..total].copy_from_slice(&crc.to_be_bytes());
    }

    out[2..4].copy_from_slice(&msg_len.to_be_bytes());
    Some(total)
}

/// Where the attributes [`add_missing_priority`] cares about sit in a Binding request
/// that has MESSAGE-INTEGRITY.
#[derive(Debug, PartialEq)]
struct Layout {
    /// Whether a PRIORITY comes before MESSAGE-INTEGRITY (str0m ignores one after it).
    priority: bool,
    /// Offset of the MESSAGE-INTEGRITY attribute (its header).
    integrity: usize,
    /// Offset and value length of a MESSAGE-INTEGRITY-SHA256 after it.
    sha256: Option<(usize, usize)>,
    /// Offset of the FINGERPRINT attribute, the last one.
    fingerprint: Option<usize>,
}

impl Layout {
    /// `None` unless `packet` is exactly one well-formed Binding request (str0m wants the
    /// STUN length to match the datagram) with MESSAGE-INTEGRITY, followed by nothing but
    /// an optional MESSAGE-INTEGRITY-SHA256 and an optional FINGERPRINT.
    fn of(packet: &[u8]) -> Option<Layout> {
        if !is_stun(packet) || packet[..2] != BINDING_REQUEST {
            return None;
        }
        let msg_len = u16::from_be_bytes([packet[2], packet[3]]) as usize;
        if !msg_len.is_multiple_of(4) || HEADER_LEN + msg_len != packet.len() {
            return None;
        }
        let mut priority = false;
        let mut integrity = None;
        let mut sha256 = None;
        let mut fingerprint = None;
        let mut at = HEADER_LEN;
        while at < packet.len() {
            if fingerprint.is_some() {
                return None; // RFC 8489 §14.7: FINGERPRINT is the last attribute
            }
            let head = packet.get(at..at + ATTR_HEADER_LEN)?;
            let typ = u16::from_be_bytes([head[0], head[1]]);
            let len = u16::from_be_bytes([head[2], head[3]]) as usize;
            let next = at + ATTR_HEADER_LEN + len.div_ceil(4) * 4;
            if next > packet.len() {
                return None;
            }
            match (typ, integrity) {
                (ATTR_FINGERPRINT, _) if len == 4 => fingerprint = Some(at),
                (ATTR_FINGERPRINT, _) => return None,
                (ATTR_PRIORITY, None) if len == 4 => priority = true,
                (ATTR_PRIORITY, None) => return None, // str0m refuses it; not ours to fix
                (ATTR_MESSAGE_INTEGRITY, None) if len == SHA1_LEN => integrity = Some(at),
                (ATTR_MESSAGE_INTEGRITY, None) => return None,
                // RFC 8489 §14.6: 16 to 32 bytes in steps of 4, after MESSAGE-INTEGRITY.
                // Before it (or alone) str0m could not check it anyway.
                (ATTR_MESSAGE_INTEGRITY_SHA256, Some(_))
                    if sha256.is_none() && (16..=32).contains(&len) && len.is_multiple_of(4) =>
                {
                    sha256 = Some((at, len))
                }
                (ATTR_MESSAGE_INTEGRITY_SHA256, _) => return None,
                (_, None) => {}
                (_, Some(_)) => return None,
            }
            at = next;
        }
        Some(Layout {
            priority,
            integrity: integrity?,
            sha256,
            fingerprint,
        })
    }

    /// Whether every integrity attribute and the FINGERPRINT check out, MACs keyed by `key`.
    fn verifies(&self, packet: &[u8], key: &[u8]) -> bool {
        let sha1_ok = verify_integrity(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            key,
            packet,
            self.integrity,
            SHA1_LEN,
        );
        let sha256_ok = self
            .sha256
            .is_none_or(|(at, n)| verify_integrity(hmac::HMAC_SHA256, key, packet, at, n));
        let fingerprint_ok = self.fingerprint.is_none_or(|at| {
            let stated = packet
                .get(at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + 4)
                .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            stated.is_some() && stated == fingerprint(packet, at)
        });
        sha1_ok & sha256_ok & fingerprint_ok
    }
}

/// Writes an attribute's type and length at `at`.
fn put_attr_header(out: &mut [u8], at: usize, typ: u16, len: usize) {
    out[at..at + 2].copy_from_slice(&typ.to_be_bytes());
    // Callers pass lengths of at most 32 bytes.
    out[at + 2..at + 4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// The first two header bytes and the length field as an integrity attribute (or
/// FINGERPRINT) at `at`, with `value_len` bytes of value, sees them: RFC 8489 §14.5, the
/// length counts attributes up to and including that one and nothing after it.
fn adjusted_header(msg: &[u8], at: usize, value_len: usize) -> Option<[u8; 4]> {
    let len = (at + ATTR_HEADER_LEN + value_len).checked_sub(HEADER_LEN)?;
    let [hi, lo] = u16::try_from(len).ok()?.to_be_bytes();
    Some([*msg.first()?, *msg.get(1)?, hi, lo])
}

/// The HMAC (`algorithm`, keyed by `key`) for an integrity attribute at `at` with
/// `value_len` bytes of value, over the message before it (RFC 8489 §14.5, §14.6).
fn integrity_tag(
    algorithm: hmac::Algorithm,
    key: &[u8],
    msg: &[u8],
    at: usize,
    value_len: usize,
) -> Option<hmac::Tag> {
    let header = adjusted_header(msg, at, value_len)?;
    let body = msg.get(4..at)?;
    // Key::new fails only if AWS-LC cannot set up an HMAC context (out of memory); any
    // key length is valid for HMAC.
    let key = hmac::Key::new(algorithm, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&header);
    ctx.update(body);
    Some(ctx.sign())
}

/// Whether the integrity attribute at `at` holds the right (possibly truncated) HMAC.
fn verify_integrity(
    algorithm: hmac::Algorithm,
    key: &[u8],
    msg: &[u8],
    at: usize,
    value_len: usize,
) -> bool {
    let stated = msg.get(at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + value_len);
    let tag = integrity_tag(algorithm, key, msg, at, value_len);
    match (stated, tag) {
        (Some(stated), Some(tag)) => match tag.as_ref().get(..value_len) {
            Some(computed) => computed.ct_eq(stated).into(),
            None => false,
        },
        _ => false,
    }
}

/// The FINGERPRINT value for a FINGERPRINT attribute at `at` (RFC 8489 §14.7).
fn fingerprint(msg: &[u8], at: usize) -> Option<u32> {
    let header = adjusted_header(msg, at, 4)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(msg.get(4..at)?);
    Some(crc.finalize() ^ FINGERPRINT_XOR)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::time::{Duration, Instant};

    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};

    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        // a PRIORITY attribute first, so the walk has to skip one
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn reads_local_ufrag() {
        let m = binding_request(b"srvU:cliU");
        assert_eq!(local_ufrag(&m), Some("srvU"));
    }

    #[test]
    fn refuses_non_stun_and_truncated() {
        assert_eq!(local_ufrag(&[0x80; 40]), None); // RTP
        assert_eq!(local_ufrag(&[22, 254, 253]), None); // DTLS
        let m = binding_request(b"abcd:efgh");
        for cut in 0..m.len() {
            let _ = local_ufrag(&m[..cut]); // must not panic
        }
        assert_eq!(local_ufrag(&m[..24]), None);
    }

    /// RFC 5769 §2.1, "Sample Request": SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME
    /// "evtj:h6vY", MESSAGE-INTEGRITY, FINGERPRINT; password "VOkJxbRl1RmTxUk/WvJxBt".
    #[rustfmt::skip]
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42,
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        0x80, 0x22, 0x00, 0x10, // SOFTWARE
        0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
        0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74,
        0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, // PRIORITY
        0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, // ICE-CONTROLLED
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20,
        0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY at 76
        0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2,
        0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf, // FINGERPRINT at 100
    ];
    const RFC5769_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

    const SHA1: hmac::Algorithm = hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY;
    const ATTR_USE_CANDIDATE: u16 = 0x0025;
    const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

    /// Appends an attribute, zero-padded to 4 bytes.
    fn push_attr(m: &mut Vec<u8>, typ: u16, value: &[u8]) {
        m.extend_from_slice(&typ.to_be_bytes());
        m.extend_from_slice(&(value.len() as u16).to_be_bytes());
        m.extend_from_slice(value);
        m.resize(m.len().next_multiple_of(4), 0);
    }

    /// A Binding request: `attrs`, then MESSAGE-INTEGRITY keyed by `pwd`, then (if `sha256`
    /// is set) a MESSAGE-INTEGRITY-SHA256 of that many bytes, then FINGERPRINT if `fp`.
    fn request(attrs: &[(u16, &[u8])], pwd: &str, sha256: Option<usize>, fp: bool) -> Vec<u8> {
        let mut m = BINDING_REQUEST.to_vec();
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[0x5a, 0x11, 0x0c, 0x9e, 1, 2, 3, 4, 5, 6, 7, 8]);
        for (typ, value) in attrs {
            push_attr(&mut m, *typ, value);
        }
        let at = m.len();
        push_attr(&mut m, ATTR_MESSAGE_INTEGRITY, &[0; 20]);
        let mac = integrity_tag(SHA1, pwd.as_bytes(), &m, at, 20).unwrap();
        m[at + 4..].copy_from_slice(mac.as_ref());
        if let Some(n) = sha256 {
            let at = m.len();
            push_attr(&mut m, ATTR_MESSAGE_INTEGRITY_SHA256, &vec![0; n]);
            let mac = integrity_tag(hmac::HMAC_SHA256, pwd.as_bytes(), &m, at, n).unwrap();
            m[at + 4..].copy_from_slice(&mac.as_ref()[..n]);
        }
        if fp {
            let at = m.len();
            push_attr(&mut m, ATTR_FINGERPRINT, &[0; 4]);
            let crc = fingerprint(&m, at).unwrap();
            m[at + 4..].copy_from_slice(&crc.to_be_bytes());
        }
        let len = (m.len() - HEADER_LEN) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    }

    /// A check laid out as FFmpeg's WHIP muxer writes it (libavformat/whip.c,
    /// `ice_create_request`): USERNAME "<server ufrag>:<ffmpeg ufrag>", USE-CANDIDATE,
    /// MESSAGE-INTEGRITY keyed with the server's password, FINGERPRINT.
    fn ffmpeg_request(username: &str, server_pwd: &str) -> Vec<u8> {
        let attrs: [(u16, &[u8]); 2] = [
            (ATTR_USERNAME, username.as_bytes()),
            (ATTR_USE_CANDIDATE, &[]),
        ];
        request(&attrs, server_pwd, None, true)
    }

    /// Each attribute as (offset, type, value), for a well-formed message.
    fn attrs(m: &[u8]) -> Vec<(usize, u16, &[u8])> {
        let mut v = Vec::new();
        let mut at = HEADER_LEN;
        while at < m.len() {
            let typ = u16::from_be_bytes([m[at], m[at + 1]]);
            let len = u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize;
            v.push((at, typ, &m[at + 4..at + 4 + len]));
            at += 4 + len.next_multiple_of(4);
        }
        v
    }

    fn str0m_parses(m: &[u8]) -> Result<(), String> {
        str0m::net::DatagramRecv::try_from(m)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integrity_and_fingerprint_match_rfc5769() {
        let m = &RFC5769_REQUEST;
        let mac = integrity_tag(SHA1, RFC5769_PASSWORD.as_bytes(), m, 76, 20).unwrap();
        assert_eq!(mac.as_ref(), &m[80..100]);
        assert_eq!(fingerprint(m, 100), Some(0xe57a_3bcf));

        let layout = Layout::of(m).unwrap();
        assert_eq!(
            layout,
            Layout {
                priority: true,
                integrity: 76,
                sha256: None,
                fingerprint: Some(100)
            }
        );
        assert!(layout.verifies(m, RFC5769_PASSWORD.as_bytes()));
        assert!(!layout.verifies(m, b"VOkJxbRl1RmTxUk/WvJxBT"));
        // It has a PRIORITY: nothing to do, and str0m takes it as it is.
        let mut out = [0u8; 200];
        assert_eq!(add_missing_priority(m, RFC5769_PASSWORD, &mut out), None);
        assert_eq!(str0m_parses(m), Ok(()));
    }

    #[test]
    fn integrity_is_verified_as_str0m_does() {
        let key = IntegrityKey::new(RFC5769_PASSWORD);
        assert!(integrity_verifies(&RFC5769_REQUEST, &key));
        assert!(!integrity_verifies(
            &RFC5769_REQUEST,
            &IntegrityKey::new("VOkJxbRl1RmTxUk/WvJxBT")
        ));
        assert!(!integrity_verifies(
            &RFC5769_REQUEST,
            &IntegrityKey::new("")
        ));
        // Every byte up to the end of MESSAGE-INTEGRITY is covered (the cookie and the
        // length included); FINGERPRINT, after it, is not.
        for i in 0..100 {
            let mut bad = RFC5769_REQUEST;
            bad[i] ^= 0x01;
            assert!(!integrity_verifies(&bad, &key), "byte {i}");
        }
        // FFmpeg's checks (no PRIORITY) verify: the demux must not refuse what we mend.
        let pwd = "server-password-0123456789";
        let m = ffmpeg_request("srvU:ffU1", pwd);
        assert!(integrity_verifies(&m, &IntegrityKey::new(pwd)));
        assert!(!integrity_verifies(&m, &IntegrityKey::new("another")));
        // No MESSAGE-INTEGRITY: refused.
        assert!(!integrity_verifies(&binding_request(b"srvU:x"), &key));
        // A STUN length beyond the datagram, and every truncation: refused, no panic.
        for cut in 0..RFC5769_REQUEST.len() {
            assert!(
                !integrity_verifies(&RFC5769_REQUEST[..cut], &key),
                "cut {cut}"
            );
        }
        // A wrong-length MESSAGE-INTEGRITY: refused.
        let mut short = RFC5769_REQUEST;
        short[79] = 0x10;
        assert!(!integrity_verifies(&short, &key));
        // Random bytes behind a STUN header never verify.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.gen_range(20..200);
            let mut p: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            p[0] &= 0x03;
            p[4..8].copy_from_slice(&MAGIC_COOKIE);
            if rng.gen_bool(0.5) {
                p[2..4].copy_from_slice(&((n - HEADER_LEN) as u16).to_be_bytes());
            }
            assert!(!integrity_verifies(&p, &key));
        }
    }

    #[test]
    fn prflx_priority_is_rfc8445_formula() {
        assert_eq!(PRFLX_PRIORITY, 0x6EFF_FFFF);
        assert_eq!(PRFLX_PRIORITY >> 24, 110);
    }

    #[test]
    fn ffmpeg_request_gets_priority_and_stays_authentic() {
        let pwd = "server-password-0123456789";
        let m = ffmpeg_request("srvU:ffU1", pwd);
        let err = str0m_parses(&m).unwrap_err();
        assert!(err.contains("missing priority"), "{err}");

        let mut out = [0u8; 256];
        let n = add_missing_priority(&m, pwd, &mut out).unwrap();
        assert_eq!(n, m.len() + PRIORITY_GROWTH);
        let fixed = &out[..n];
        assert_eq!(str0m_parses(fixed), Ok(()));
        assert_eq!(fixed[..2], m[..2]);
        assert_eq!(fixed[4..20], m[4..20]); // cookie and transaction id kept
        let found: Vec<(u16, &[u8])> = attrs(fixed).iter().map(|a| (a.1, a.2)).collect();
        assert_eq!(found[0], (ATTR_USERNAME, &b"srvU:ffU1"[..]));
        assert_eq!(found[1], (ATTR_USE_CANDIDATE, &[][..]));
        assert_eq!(found[2], (ATTR_PRIORITY, &PRFLX_PRIORITY.to_be_bytes()[..]));
        assert_eq!(found[3].0, ATTR_MESSAGE_INTEGRITY);
        assert_eq!(found[4].0, ATTR_FINGERPRINT);
        assert_eq!(found.len(), 5);
        let layout = Layout::of(fixed).unwrap();
        assert!(layout.priority);
        assert!(layout.verifies(fixed, pwd.as_bytes()));
        assert!(!layout.verifies(fixed, b"another password"));
        // Once mended there is nothing more to do.
        assert_eq!(add_missing_priority(fixed, pwd, &mut [0u8; 256]), None);
        assert_eq!(local_ufrag(fixed), Some("srvU"));

        // Without FINGERPRINT in, none out.
        let bare = request(&[(ATTR_USERNAME, b"srvU:ffU1")], pwd, None, false);
        let n = add_missing_priority(&bare, pwd, &mut out).unwrap();
        assert_eq!(n, bare.len() + PRIORITY_GROWTH);
        assert!(attrs(&out[..n]).iter().all(|a| a.1 != ATTR_FINGERPRINT));
        assert_eq!(str0m_parses(&out[..n]), Ok(()));
    }

    #[test]
    fn sha256_integrity_is_checked_and_recomputed() {
        let pwd = "pw-for-sha256";
        let user: [(u16, &[u8]); 1] = [(ATTR_USERNAME, b"a:b")];
        for n in [16, 20, 32] {
            let m = request(&user, pwd, Some(n), true);
            let mut out = [0u8; 256];
            let len = add_missing_priority(&m, pwd, &mut out).unwrap();
            let fixed = &out[..len];
            let layout = Layout::of(fixed).unwrap();
            assert_eq!(layout.sha256.map(|s| s.1), Some(n));
            assert!(layout.verifies(fixed, pwd.as_bytes()));
            assert_eq!(str0m_parses(fixed), Ok(()));

            // A forged SHA-256 value under a valid SHA-1 one: refused.
            let mut forged = m.clone();
            let at = Layout::of(&m).unwrap().sha256.unwrap().0;
            forged[at + 4] ^= 1;
            let at = forged.len() - 8;
            let crc = fingerprint(&forged, at).unwrap();
            forged[at + 4..].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(add_missing_priority(&forged, pwd, &mut out), None);
        }
        // MESSAGE-INTEGRITY-SHA256 alone (str0m needs the SHA-1 one): left alone.
        let mut only256 = BINDING_REQUEST.to_vec();
        only256.extend_from_slice(&[0, 0]);
        only256.extend_from_slice(&MAGIC_COOKIE);
        only256.extend_from_slice(&[9; 12]);
        push_attr(&mut only256, ATTR_USERNAME, b"a:b");
        push_attr(&mut only256, ATTR_MESSAGE_INTEGRITY_SHA256, &[0; 32]);
        let len = (only256.len() - HEADER_LEN) as u16;
        only256[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(add_missing_priority(&only256, pwd, &mut [0u8; 256]), None);
    }

    #[test]
    fn forged_and_foreign_packets_are_left_alone() {
        let pwd = "the-right-password";
        let m = ffmpeg_request("srvU:ffU1", pwd);
        let mut out = [0u8; 256];
        assert!(add_missing_priority(&m, pwd, &mut out).is_some());
        assert_eq!(
            add_missing_priority(&m, "the-wrong-password", &mut out),
            None
        );
        assert_eq!(add_missing_priority(&m, "", &mut out), None);

        // Every single-byte change to a valid request breaks its integrity, its
        // fingerprint or its shape: none may come out mended.
        for i in 0..m.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = m.clone();
                bad[i] ^= flip;
                assert_eq!(add_missing_priority(&bad, pwd, &mut out), None, "byte {i}");
            }
        }

        // No MESSAGE-INTEGRITY at all.
        let mut unsigned = BINDING_REQUEST.to_vec();
        unsigned.extend_from_slice(&[0, 0]);
        unsigned.extend_from_slice(&MAGIC_COOKIE);
        unsigned.extend_from_slice(&[9; 12]);
        push_attr(&mut unsigned, ATTR_USERNAME, b"srvU:ffU1");
        let len = (unsigned.len() - HEADER_LEN) as u16;
        unsigned[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(add_missing_priority(&unsigned, pwd, &mut out), None);

        // Not a request: a success response with the same body.
        let mut response = m.clone();
        response[..2].copy_from_slice(&[0x01, 0x01]);
        assert_eq!(add_missing_priority(&response, pwd, &mut out), None);

        // Trailing bytes after the STUN message.
        let mut long = m.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(add_missing_priority(&long, pwd, &mut out), None);

        // An output buffer one byte short; exactly long enough works.
        let need = m.len() + PRIORITY_GROWTH;
        assert_eq!(add_missing_priority(&m, pwd, &mut out[..need - 1]), None);
        assert_eq!(add_missing_priority(&m, pwd, &mut out[..need]), Some(need));

        // Not STUN at all.
        assert_eq!(add_missing_priority(&[0x80; 100], pwd, &mut out), None);
        assert_eq!(
            add_missing_priority(&[22, 254, 253, 0, 0], pwd, &mut out),
            None
        );
    }

    #[test]
    fn truncated_and_random_input_never_panics() {
        use rand::{Rng, SeedableRng};

        let pwd = "pw";
        let m = ffmpeg_request("srvU:ffU1", pwd);
        let mut out = [0u8; 256];
        for source in [&m[..], &RFC5769_REQUEST[..]] {
            for cut in 0..source.len() {
                assert_eq!(add_missing_priority(&source[..cut], pwd, &mut out), None);
                // The same prefix claiming to be a whole message.
                let mut lying = source[..cut].to_vec();
                if lying.len() >= 4 {
                    let len = lying.len().saturating_sub(HEADER_LEN) as u16;
                    lying[2..4].copy_from_slice(&len.to_be_bytes());
                }
                let _ = add_missing_priority(&lying, pwd, &mut out);
            }
        }
        // Random attribute soup behind a valid Binding request header.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5354_554e);
        let types = [
            ATTR_USERNAME,
            ATTR_PRIORITY,
            ATTR_MESSAGE_INTEGRITY,
            ATTR_MESSAGE_INTEGRITY_SHA256,
            ATTR_FINGERPRINT,
            ATTR_USE_CANDIDATE,
            0x8029,
            0xffff,
        ];
        for _ in 0..20_000 {
            let mut p = BINDING_REQUEST.to_vec();
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&MAGIC_COOKIE);
            p.extend_from_slice(&[3; 12]);
            for _ in 0..rng.gen_range(0..6) {
                let typ = types[rng.gen_range(0..types.len())];
                let len: u16 = match rng.gen_range(0..4) {
                    0 => rng.gen(),
                    1 => rng.gen_range(0..40),
                    _ => [0, 4, 16, 20, 32][rng.gen_range(0..5)],
                };
                p.extend_from_slice(&typ.to_be_bytes());
                p.extend_from_slice(&len.to_be_bytes());
                let body = (len as usize).min(rng.gen_range(0..48));
                p.extend((0..body).map(|_| rng.gen::<u8>()));
            }
            if rng.gen_bool(0.8) {
                let len = (p.len() - HEADER_LEN) as u16;
                p[2..4].copy_from_slice(&len.to_be_bytes());
            }
            let size = rng.gen_range(0..out.len());
            if let Some(n) = add_missing_priority(&p, pwd, &mut out[..size]) {
                panic!("random bytes passed as a signed request: {n} from {p:02x?}");
            }
        }
    }

    /// An answerer `Rtc` as the WHIP ingress would hold one: our credentials, the
    /// publisher's, one host candidate, ICE-controlled.
    fn answerer(local: &IceCreds, remote: &IceCreds, at: SocketAddr, lite: bool) -> Rtc {
        let mut rtc = Rtc::builder()
            .set_local_ice_credentials(local.clone())
            .set_ice_lite(lite)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(at, "udp").unwrap());
        let mut api = rtc.direct_api();
        api.set_remote_ice_credentials(remote.clone());
        api.set_ice_controlling(false);
        rtc
    }

    /// Feeds one datagram, then drains to the timeout: what went out, which ICE states.
    fn feed(
        rtc: &mut Rtc,
        data: &[u8],
        from: SocketAddr,
        to: SocketAddr,
        now: Instant,
    ) -> (Vec<(SocketAddr, Vec<u8>)>, Vec<IceConnectionState>) {
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
                contents: data.try_into().unwrap(),
            },
        );
        rtc.handle_input(input).unwrap();
        let (mut sent, mut states) = (Vec::new(), Vec::new());
        loop {
            match rtc.poll_output().unwrap() {
                Output::Timeout(_) => return (sent, states),
                Output::Transmit(t) => sent.push((t.destination, t.contents.to_vec())),
                Output::Event(Event::IceConnectionStateChange(s)) => states.push(s),
                Output::Event(_) => {}
            }
        }
    }

    /// The XOR-MAPPED-ADDRESS of an IPv4 Binding response.
    fn xor_mapped_v4(m: &[u8]) -> Option<SocketAddr> {
        let (_, _, v) = attrs(m)
            .into_iter()
            .find(|a| a.1 == ATTR_XOR_MAPPED_ADDRESS)?;
        let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
        let ip: [u8; 4] = std::array::from_fn(|i| v[4 + i] ^ MAGIC_COOKIE[i]);
        (v[1] == 1).then(|| SocketAddr::new(IpAddr::from(ip), port))
    }

    #[test]
    fn str0m_answers_the_mended_ffmpeg_check() {
        let server: SocketAddr = "127.0.0.1:8189".parse().unwrap();
        let ffmpeg: SocketAddr = "127.0.0.1:53000".parse().unwrap();
        let local = IceCreds {
            ufrag: "srvU".into(),
            pass: "0123456789abcdef01234567".into(),
        };
        let remote = IceCreds {
            ufrag: "1a2b3c4d".into(),
            pass: "00112233445566778899aabbccddeeff".into(),
        };
        let check = ffmpeg_request("srvU:1a2b3c4d", &local.pass);

        // Unmended, str0m cannot even take it as input: nothing can answer it.
        assert!(str0m::net::DatagramRecv::try_from(&check[..]).is_err());

        for lite in [false, true] {
            let mut rtc = answerer(&local, &remote, server, lite);
            let mut out = [0u8; 256];
            let n = add_missing_priority(&check, &local.pass, &mut out).unwrap();
            let (sent, states) = feed(&mut rtc, &out[..n], ffmpeg, server, Instant::now());

            let reply = sent
                .iter()
                .map(|(to, m)| (*to, &m[..]))
                .find(|(_, m)| m[..2] == [0x01, 0x01] && m[8..20] == check[8..20]);
            let (to, reply) = reply.expect("a Binding success response to the check");
            assert_eq!(to, ffmpeg);
            assert_eq!(xor_mapped_v4(reply), Some(ffmpeg));
            // str0m signs its answer with our password, as FFmpeg expects.
            let mi = attrs(reply)
                .into_iter()
                .find(|a| a.1 == ATTR_MESSAGE_INTEGRITY)
                .unwrap()
                .0;
            assert!(verify_integrity(SHA1, local.pass.as_bytes(), reply, mi, 20));

            if !lite {
                // A full agent also checks the pair itself, but FFmpeg answers checks the
                // way `ice_create_response` writes them: MESSAGE-INTEGRITY and FINGERPRINT
                // only, no XOR-MAPPED-ADDRESS, which str0m refuses. So a full-ICE ingress
                // never connects to FFmpeg; the ingress `Rtc` must be ice-lite.
                let (_, own_check) = sent
                    .iter()
                    .find(|(_, m)| m[..2] == BINDING_REQUEST)
                    .expect("a triggered check of its own");
                let mut ffmpeg_reply = vec![0x01, 0x01, 0, 0];
                ffmpeg_reply.extend_from_slice(&own_check[4..20]);
                let at = ffmpeg_reply.len();
                push_attr(&mut ffmpeg_reply, ATTR_MESSAGE_INTEGRITY, &[0; 20]);
                let mac = integrity_tag(SHA1, remote.pass.as_bytes(), &ffmpeg_reply, at, 20);
                ffmpeg_reply[at + 4..].copy_from_slice(mac.unwrap().as_ref());
                let at = ffmpeg_reply.len();
                push_attr(&mut ffmpeg_reply, ATTR_FINGERPRINT, &[0; 4]);
                let crc = fingerprint(&ffmpeg_reply, at).unwrap();
                ffmpeg_reply[at + 4..].copy_from_slice(&crc.to_be_bytes());
                let len = (ffmpeg_reply.len() - HEADER_LEN) as u16;
                ffmpeg_reply[2..4].copy_from_slice(&len.to_be_bytes());
                let err = str0m_parses(&ffmpeg_reply).unwrap_err();
                assert!(err.contains("mapped addr"), "{err}");
            } else {
                // An ice-lite answerer takes USE-CANDIDATE as the end of ICE (str0m
                // reports Completed for a lite agent).
                let later = Instant::now() + Duration::from_millis(50);
                rtc.handle_input(Input::Timeout(later)).unwrap();
                let mut all = states.clone();
                loop {
                    match rtc.poll_output().unwrap() {
                        Output::Timeout(_) => break,
                        Output::Event(Event::IceConnectionStateChange(s)) => all.push(s),
                        _ => {}
                    }
                }
                assert!(
                    all.iter().any(|s| matches!(
                        s,
                        IceConnectionState::Connected | IceConnectionState::Completed
                    )),
                    "{all:?}"
                );
            }
        }
    }
}
