//! The datagrams between one OpenSSL DTLS session and str0m: OpenSSL reads the peer's
//! datagrams from here and writes its own here, one `write` per datagram (the openssl
//! crate's stream BIO calls `write` once per flushed record batch, which OpenSSL's DTLS
//! keeps within the MTU).

use std::collections::VecDeque;
use std::io;

/// Datagrams waiting for OpenSSL (`incoming`) and for the socket (`outgoing`).
#[derive(Debug, Default)]
pub struct Wire {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

/// A peer cannot make us hold more than this many datagrams OpenSSL has not read yet;
/// OpenSSL reads every datagram it is given before we return, so more is a bug upstream.
const MAX_INCOMING: usize = 64;

impl Wire {
    /// Queues a datagram from the peer; refused (false) when too many wait.
    pub fn push_incoming(&mut self, datagram: &[u8]) -> bool {
        if self.incoming.len() >= MAX_INCOMING {
            return false;
        }
        self.incoming.push_back(datagram.to_vec());
        true
    }

    /// The next datagram for the peer.
    pub fn pop_outgoing(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    /// Length of the next datagram for the peer.
    pub fn next_outgoing_len(&self) -> Option<usize> {
        self.outgoing.front().map(Vec::len)
    }

    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }
}

impl io::Read for Wire {
    /// One whole datagram per read, as DTLS wants (a datagram longer than `buf` is cut,
    /// as a datagram socket would; OpenSSL's buffer is larger than any record).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn datagrams_keep_their_boundaries() {
        let mut w = Wire::default();
        assert!(w.push_incoming(b"one"));
        assert!(w.push_incoming(b"three"));
        let mut buf = [0u8; 16];
        assert_eq!(w.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        let mut small = [0u8; 2];
        assert_eq!(w.read(&mut small).unwrap(), 2);
        assert_eq!(
            w.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        w.write_all(b"ab").unwrap();
        w.write_all(b"cde").unwrap();
        assert_eq!(w.next_outgoing_len(), Some(2));
        assert_eq!(w.pop_outgoing().unwrap(), b"ab");
        assert_eq!(w.pop_outgoing().unwrap(), b"cde");
        assert!(!w.has_outgoing());
    }

    #[test]
    fn a_flood_of_datagrams_is_refused_not_stored() {
        let mut w = Wire::default();
        for _ in 0..MAX_INCOMING {
            assert!(w.push_incoming(b"x"));
        }
        assert!(!w.push_incoming(b"x"));
    }
}
