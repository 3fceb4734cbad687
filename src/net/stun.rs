//! Just enough STUN (RFC 8489) to route a datagram: recognise a STUN message and read the
//! local part of its USERNAME. Never allocates; str0m does the real parsing and checks.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// True if `data` looks like a STUN message (RFC 7983 demux: first byte 0..=3, cookie).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN && data[0] < 4 && data[4..8] == MAGIC_COOKIE
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

#[cfg(test)]
mod tests {
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
}
