//! Decoded audio out of `mixcast pull`: a 16-bit stereo 48 kHz WAV file whose header sizes
//! are fixed up when it is finished, and the same samples as raw s16le for a pipe.
//!
//! Owns only the byte layout (RIFF/WAVE, PCM format 1); the caller owns the file.

use crate::media::SAMPLE_RATE;
use std::io::{self, Seek, SeekFrom, Write};

const CHANNELS: u16 = 2;
const BITS: u16 = 16;
/// Bytes before the samples: RIFF header (12), `fmt ` chunk (24), `data` chunk header (8).
const HEADER_LEN: u32 = 44;

/// Float samples (nominally -1..1) as signed 16-bit little endian, clipped.
pub fn s16le(pcm: &[f32], out: &mut Vec<u8>) {
    out.reserve(pcm.len() * 2);
    for &x in pcm {
        let v = (x.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A WAV file being written: the header first with sizes of zero (a player reading it
/// early sees an empty file, not a wrong one), the real sizes by [`finish`](Self::finish).
pub struct WavWriter<W: Write + Seek> {
    out: W,
    data_bytes: u64,
    buf: Vec<u8>,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes the header.
    pub fn new(mut out: W) -> io::Result<WavWriter<W>> {
        out.write_all(&header(0))?;
        Ok(WavWriter {
            out,
            data_bytes: 0,
            buf: Vec::new(),
        })
    }

    /// Appends interleaved stereo samples.
    pub fn write(&mut self, pcm: &[f32]) -> io::Result<()> {
        self.buf.clear();
        s16le(pcm, &mut self.buf);
        self.out.write_all(&self.buf)?;
        self.data_bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Seconds of audio written so far.
    pub fn seconds(&self) -> f64 {
        self.data_bytes as f64 / f64::from(SAMPLE_RATE * u32::from(CHANNELS * BITS / 8))
    }

    /// Writes the real sizes into the header and flushes. A file over 4 GiB (about 6 hours)
    /// keeps the largest sizes the format can say.
    pub fn finish(mut self) -> io::Result<W> {
        let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX - HEADER_LEN);
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&header(data))?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn header(data_bytes: u32) -> Vec<u8> {
    let block_align = CHANNELS * BITS / 8;
    let byte_rate = SAMPLE_RATE * u32::from(block_align);
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(HEADER_LEN - 8 + data_bytes).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&CHANNELS.to_le_bytes());
    h.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    h.extend_from_slice(&byte_rate.to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&BITS.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_bytes.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_fixed_up() {
        let mut w = WavWriter::new(io::Cursor::new(Vec::new())).unwrap();
        w.write(&[0.0, 1.0, -1.0, 2.0]).unwrap();
        assert!((w.seconds() - 2.0 / 48_000.0).abs() < 1e-9);
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(bytes.len(), 44 + 8);
        assert_eq!(&bytes[4..8], &(36u32 + 8).to_le_bytes());
        assert_eq!(&bytes[40..44], &8u32.to_le_bytes());
        assert_eq!(&bytes[44..], &[0, 0, 0xff, 0x7f, 0x01, 0x80, 0xff, 0x7f]);
    }
}
