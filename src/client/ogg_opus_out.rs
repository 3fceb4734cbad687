//! Opus packets out of `mixcast pull` into an Ogg Opus file (RFC 7845) as they arrived:
//! no decoding, no re-encoding. The ID and comment headers first, then the packets with
//! granule positions counted from each packet's own TOC, a lost packet's 20 ms skipped in
//! the granule so the timeline stays true.
//!
//! Owns only the Ogg layout (pages by the `ogg` crate); the caller owns the file. One
//! packet is held back so that the last one carries the end-of-stream flag.

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use std::io::{self, Write};

/// The serial number of the one logical stream.
const SERIAL: u32 = 0x6d69_7863; // "mixc"
/// Samples a lost packet stood for: the server sends 20 ms packets.
const LOST_PACKET_SAMPLES: u64 = 960;
/// Pages end at least this often (in packets): a file read while it grows, or cut off by
/// a kill, loses at most about a second.
const PACKETS_PER_PAGE: u32 = 50;

/// An Ogg Opus file being written.
pub struct OggOpusWriter<W: Write> {
    pages: PacketWriter<'static, W>,
    /// The packet waiting to be written, with the granule position at its end.
    held: Option<(Vec<u8>, u64)>,
    granule: u64,
    in_page: u32,
    packets: u64,
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the ID header (stereo, 48 kHz, no pre-skip: the packets are a live stream's,
    /// already past any encoder delay) and the comment header, each on its own page.
    pub fn new(out: W) -> io::Result<OggOpusWriter<W>> {
        let mut pages = PacketWriter::new(out);
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(2); // channels
        head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
        head.extend_from_slice(&48_000u32.to_le_bytes()); // input rate, informational
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0: mono or stereo
        pages.write_packet(head, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = concat!("mixcast ", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no comments
        pages.write_packet(tags, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        Ok(OggOpusWriter {
            pages,
            held: None,
            granule: 0,
            in_page: 0,
            packets: 0,
        })
    }

    /// Appends one Opus packet, after `lost_before` packets that never came.
    pub fn write(&mut self, packet: &[u8], lost_before: u64) -> io::Result<()> {
        self.write_held(PacketWriteEndInfo::NormalPacket)?;
        self.granule += lost_before * LOST_PACKET_SAMPLES + packet_samples(packet);
        self.held = Some((packet.to_vec(), self.granule));
        Ok(())
    }

    /// Packets written (or held) so far.
    pub fn packets(&self) -> u64 {
        self.packets + u64::from(self.held.is_some())
    }

    /// Seconds of audio so far (by granule position).
    pub fn seconds(&self) -> f64 {
        self.granule as f64 / 48_000.0
    }

    /// Writes the last packet with the end-of-stream flag and flushes. With no packet at
    /// all the file holds the two headers only (a valid, empty Ogg Opus file).
    pub fn finish(mut self) -> io::Result<W> {
        if self.held.is_some() {
            self.write_held(PacketWriteEndInfo::EndStream)?;
        }
        let mut out = self.pages.into_inner();
        out.flush()?;
        Ok(out)
    }

    fn write_held(&mut self, mut end: PacketWriteEndInfo) -> io::Result<()> {
        let Some((packet, granule)) = self.held.take() else {
            return Ok(());
        };
        self.in_page += 1;
        if end == PacketWriteEndInfo::NormalPacket && self.in_page >= PACKETS_PER_PAGE {
            end = PacketWriteEndInfo::EndPage;
        }
        if end != PacketWriteEndInfo::NormalPacket {
            self.in_page = 0;
        }
        self.pages.write_packet(packet, SERIAL, end, granule)?;
        self.packets += 1;
        Ok(())
    }
}

/// Samples (at 48 kHz) one Opus packet holds, from its TOC byte (RFC 6716, section 3.1);
/// 0 for a packet too short to say.
pub fn packet_samples(packet: &[u8]) -> u64 {
    let Some(&toc) = packet.first() else {
        return 0;
    };
    let config = toc >> 3;
    let frame: u64 = match config {
        // SILK: 10, 20, 40, 60 ms
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT: 2.5, 5, 10, 20 ms
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(0, |b| u64::from(b & 0x3f)),
    };
    frame * frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_durations() {
        // CELT fullband 20 ms (config 31), one frame.
        assert_eq!(packet_samples(&[31 << 3, 0]), 960);
        // SILK 60 ms (config 3), two frames.
        assert_eq!(packet_samples(&[(3 << 3) | 1]), 5760);
        // CELT 10 ms (config 30), code 3 with 4 frames.
        assert_eq!(packet_samples(&[(30 << 3) | 3, 4]), 1920);
        assert_eq!(packet_samples(&[]), 0);
    }

    #[test]
    fn headers_then_packets_with_granules() {
        let mut w = OggOpusWriter::new(Vec::new()).unwrap();
        w.write(&[31 << 3, 1, 2, 3], 0).unwrap();
        w.write(&[31 << 3, 4, 5], 2).unwrap();
        assert_eq!(w.packets(), 2);
        assert!((w.seconds() - 4.0 * 960.0 / 48_000.0).abs() < 1e-9);
        let bytes = w.finish().unwrap();
        let mut r = ogg::reading::PacketReader::new(std::io::Cursor::new(bytes));
        let head = r.read_packet_expected().unwrap();
        assert!(head.data.starts_with(b"OpusHead"));
        let tags = r.read_packet_expected().unwrap();
        assert!(tags.data.starts_with(b"OpusTags"));
        let a = r.read_packet_expected().unwrap();
        assert_eq!(a.data, [31 << 3, 1, 2, 3]);
        let b = r.read_packet_expected().unwrap();
        assert_eq!(b.data, [31 << 3, 4, 5]);
        assert!(b.last_in_stream());
        assert_eq!(b.absgp_page(), 4 * 960);
        assert!(r.read_packet().unwrap().is_none());
    }
}
