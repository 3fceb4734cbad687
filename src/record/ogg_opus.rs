//! One Ogg Opus stream (RFC 7845) written packet by packet: [`OggOpusWriter`].
//!
//! Owns the headers (OpusHead: stereo, 48 kHz, the pre-skip it is given; OpusTags), the
//! granule positions (48 kHz samples, 960 per 20 ms packet) and when pages end: every
//! [`PAGE_PACKETS`] packets, flushed to the file, so a crash loses at most about a second.
//! The last packet is held back until the next one or [`OggOpusWriter::finish`], which
//! writes it on the page that carries the end-of-stream flag. The Ogg framing itself
//! (lacing, CRC) is the `ogg` crate's.

use std::io::{self, Write};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use crate::media::{CHANNELS, FRAME_SAMPLES, SAMPLE_RATE};

/// Packets per Ogg page: one second of 20 ms packets. A page is written (and flushed)
/// when it is full, so this bounds what a crash can lose.
pub const PAGE_PACKETS: u32 = 50;

/// Writes one logical Ogg Opus stream to `W`.
pub struct OggOpusWriter<W: Write> {
    ogg: PacketWriter<'static, W>,
    serial: u32,
    /// Samples (48 kHz) of the packets written so far, the pre-skip included.
    granule: u64,
    pre_skip: u16,
    in_page: u32,
    held: Option<Vec<u8>>,
    /// Packets put on pages so far (the granule also counts lost ones).
    put_packets: u64,
}

/// The OpusHead packet (RFC 7845 §5.1): version 1, stereo, `pre_skip`, 48 kHz, no gain,
/// channel mapping family 0.
pub fn opus_head(pre_skip: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1);
    h.push(CHANNELS as u8);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

/// The OpusTags packet (RFC 7845 §5.2): our vendor string and `KEY=value` comments.
pub fn opus_tags(comments: &[(&str, &str)]) -> Vec<u8> {
    let vendor = concat!("mixcast ", env!("CARGO_PKG_VERSION"));
    let mut t = Vec::new();
    t.extend_from_slice(b"OpusTags");
    t.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    t.extend_from_slice(vendor.as_bytes());
    t.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for (k, v) in comments {
        let c = format!("{k}={v}");
        t.extend_from_slice(&(c.len() as u32).to_le_bytes());
        t.extend_from_slice(c.as_bytes());
    }
    t
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the two header pages to `out`. `pre_skip`: samples the player drops at the
    /// start (the encoder's delay for a stream's first file, 0 for the files that go on
    /// from an earlier one). `serial`: the Ogg stream's serial number.
    pub fn new(out: W, serial: u32, pre_skip: u16, comments: &[(&str, &str)]) -> io::Result<Self> {
        let mut ogg = PacketWriter::new(out);
        // Each header ends its own page, granule position 0 (RFC 7845 §3).
        ogg.write_packet(opus_head(pre_skip), serial, PacketWriteEndInfo::EndPage, 0)?;
        ogg.write_packet(opus_tags(comments), serial, PacketWriteEndInfo::EndPage, 0)?;
        ogg.inner_mut().flush()?;
        Ok(OggOpusWriter {
            ogg,
            serial,
            granule: 0,
            pre_skip,
            in_page: 0,
            held: None,
            put_packets: 0,
        })
    }

    /// Adds one 20 ms packet.
    pub fn write(&mut self, packet: &[u8]) -> io::Result<()> {
        if let Some(prev) = self.held.replace(packet.to_vec()) {
            self.put(prev, false)?;
        }
        Ok(())
    }

    /// Adds one 20 ms packet that came after `lost` packets that never did (a WHEP
    /// client's gaps, `mixcast pull`): their 20 ms each are skipped in the granule
    /// position, so the file's timeline stays the stream's.
    pub fn write_after_loss(&mut self, packet: &[u8], lost: u64) -> io::Result<()> {
        if let Some(prev) = self.held.take() {
            self.put(prev, false)?;
        }
        self.granule += lost * FRAME_SAMPLES as u64;
        self.held = Some(packet.to_vec());
        Ok(())
    }

    fn put(&mut self, packet: Vec<u8>, last: bool) -> io::Result<()> {
        self.granule += FRAME_SAMPLES as u64;
        self.put_packets += 1;
        self.in_page += 1;
        let end = if last {
            PacketWriteEndInfo::EndStream
        } else if self.in_page >= PAGE_PACKETS {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        let page_ends = end != PacketWriteEndInfo::NormalPacket;
        self.ogg
            .write_packet(packet, self.serial, end, self.granule)?;
        if page_ends {
            self.in_page = 0;
            self.ogg.inner_mut().flush()?;
        }
        Ok(())
    }

    /// Seconds of audio a player gets from the packets written so far (pre-skip removed).
    pub fn seconds(&self) -> f64 {
        let held = u64::from(self.held.is_some()) * FRAME_SAMPLES as u64;
        (self.granule + held).saturating_sub(u64::from(self.pre_skip)) as f64
            / f64::from(SAMPLE_RATE)
    }

    /// Packets written (the one held back included).
    pub fn packets(&self) -> u64 {
        self.put_packets + u64::from(self.held.is_some())
    }

    /// The output.
    pub fn inner(&self) -> &W {
        self.ogg.inner()
    }

    /// Writes the held packet on the last page (end of stream) and hands back the output,
    /// flushed. A stream without any packet gets none (its headers alone).
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(last) = self.held.take() {
            self.put(last, true)?;
        }
        let mut out = self.ogg.into_inner();
        out.flush()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One page: header type flags, granule position, serial, sequence, packets' bytes.
    type Page = (u8, u64, u32, u32, Vec<Vec<u8>>);

    /// The pages of an Ogg stream, CRC checked. Our own reader, so the test does not trust
    /// the writer.
    fn pages(mut b: &[u8]) -> Vec<Page> {
        let mut out = Vec::new();
        let mut partial: Vec<u8> = Vec::new();
        while !b.is_empty() {
            assert_eq!(&b[..4], b"OggS");
            let flags = b[5];
            let granule = u64::from_le_bytes(b[6..14].try_into().unwrap());
            let serial = u32::from_le_bytes(b[14..18].try_into().unwrap());
            let seq = u32::from_le_bytes(b[18..22].try_into().unwrap());
            let crc = u32::from_le_bytes(b[22..26].try_into().unwrap());
            let n = b[26] as usize;
            let lacing = &b[27..27 + n];
            let body_len: usize = lacing.iter().map(|&l| l as usize).sum();
            let total = 27 + n + body_len;
            let mut copy = b[..total].to_vec();
            copy[22..26].fill(0);
            assert_eq!(ogg_crc(&copy), crc, "page {seq} CRC");
            let mut body = &b[27 + n..total];
            let mut packets = Vec::new();
            for &l in lacing {
                partial.extend_from_slice(&body[..l as usize]);
                body = &body[l as usize..];
                if l < 255 {
                    packets.push(std::mem::take(&mut partial));
                }
            }
            out.push((flags, granule, serial, seq, packets));
            b = &b[total..];
        }
        out
    }

    fn ogg_crc(data: &[u8]) -> u32 {
        let mut crc = 0u32;
        for &byte in data {
            crc ^= u32::from(byte) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04c1_1db7
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn lost_packets_are_skipped_in_the_granule() {
        let mut w = OggOpusWriter::new(Vec::new(), 7, 0, &[]).unwrap();
        w.write_after_loss(&[1], 0).unwrap();
        w.write_after_loss(&[2], 3).unwrap();
        assert_eq!(w.packets(), 2);
        assert!((w.seconds() - 5.0 * 0.02).abs() < 1e-9);
        let bytes = w.finish().unwrap();
        let p = pages(&bytes);
        let last = p.last().unwrap();
        assert_eq!(last.1, 5 * FRAME_SAMPLES as u64, "granule of the last page");
        assert_eq!(last.4, vec![vec![1], vec![2]]);
    }

    #[test]
    fn headers_granules_pages_and_end_of_stream() {
        let mut w = OggOpusWriter::new(Vec::new(), 0x1234, 312, &[("TITLE", "live")]).unwrap();
        // 120 packets of varied sizes, some over 255 bytes (two lacing values).
        let packets: Vec<Vec<u8>> = (0..120u32)
            .map(|i| vec![0xfc; 3 + (i as usize * 7) % 400])
            .collect();
        for p in &packets {
            w.write(p).unwrap();
        }
        assert_eq!(w.packets(), 120);
        assert!((w.seconds() - (120.0 * 960.0 - 312.0) / 48_000.0).abs() < 1e-9);
        let bytes = w.finish().unwrap();
        let pages = pages(&bytes);
        // OpusHead alone, beginning of stream, granule 0.
        let (flags, granule, serial, seq, ref pk) = pages[0];
        assert_eq!((flags, granule, serial, seq), (0x02, 0, 0x1234, 0));
        assert_eq!(pk.len(), 1);
        let head = &pk[0];
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[8], 1, "version");
        assert_eq!(head[9], 2, "stereo");
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), 312, "pre-skip");
        assert_eq!(u32::from_le_bytes(head[12..16].try_into().unwrap()), 48_000);
        assert_eq!(head[18], 0, "mapping family 0");
        // OpusTags alone on page 1.
        assert_eq!(pages[1].1, 0);
        assert_eq!(&pages[1].4[0][..8], b"OpusTags");
        let tags = String::from_utf8_lossy(&pages[1].4[0]);
        assert!(tags.contains("TITLE=live"), "{tags}");
        // Then pages of 50 packets, granules counting 960 per packet, EOS on the last.
        let audio = &pages[2..];
        assert_eq!(audio.len(), 3, "120 packets: 50 + 50 + 20");
        let mut n = 0;
        for (i, (flags, granule, _, seq, pk)) in audio.iter().enumerate() {
            n += pk.len();
            assert_eq!(*granule, n as u64 * 960);
            assert_eq!(*seq as usize, i + 2);
            let last = i + 1 == audio.len();
            assert_eq!(*flags, if last { 0x04 } else { 0 }, "page {seq} flags");
        }
        let got: Vec<Vec<u8>> = audio.iter().flat_map(|p| p.4.clone()).collect();
        assert_eq!(got, packets, "every packet, unchanged, in order");
    }

    #[test]
    fn a_page_is_flushed_every_second() {
        // What is on disk before the file is finished: every full page.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.opus");
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut w = OggOpusWriter::new(file, 1, 312, &[]).unwrap();
        for _ in 0..PAGE_PACKETS + 2 {
            w.write(&[0xfc, 1, 2]).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap();
        let p = pages(&on_disk);
        assert_eq!(p.len(), 3, "headers and one full page");
        assert_eq!(p[2].1, u64::from(PAGE_PACKETS) * 960);
        drop(w.finish().unwrap());
        let p = pages(&std::fs::read(&path).unwrap());
        assert_eq!(p.last().unwrap().1, u64::from(PAGE_PACKETS + 2) * 960);
        assert_eq!(p.last().unwrap().0, 0x04);
    }
}
