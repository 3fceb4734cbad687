//! A recorded stream's video, its frames as the source sent them (depacketized by str0m,
//! never decoded or encoded): [`VideoFile`]. VP8 and VP9 go into IVF (the 32-byte `DKIF`
//! header, then each frame with its size and a 90 kHz timestamp); H264 and H265 into a
//! raw Annex B elementary stream (str0m's depacketizer writes the start codes), which has
//! no timestamps: players assume a frame rate. AV1 and other codecs are not recorded.

use std::io::{self, Seek, SeekFrom, Write};

/// Video codecs a recording can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8, in IVF.
    Vp8,
    /// VP9, in IVF.
    Vp9,
    /// H264, Annex B.
    H264,
    /// H265, Annex B.
    H265,
}

impl VideoCodec {
    /// The codec of str0m's payload, if a recording can hold it.
    pub fn from_str0m(codec: str0m::format::Codec) -> Option<VideoCodec> {
        use str0m::format::Codec;
        match codec {
            Codec::Vp8 => Some(VideoCodec::Vp8),
            Codec::Vp9 => Some(VideoCodec::Vp9),
            Codec::H264 => Some(VideoCodec::H264),
            Codec::H265 => Some(VideoCodec::H265),
            _ => None,
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            VideoCodec::Vp8 | VideoCodec::Vp9 => "ivf",
            VideoCodec::H264 => "h264",
            VideoCodec::H265 => "h265",
        }
    }

    fn fourcc(self) -> Option<&'static [u8; 4]> {
        match self {
            VideoCodec::Vp8 => Some(b"VP80"),
            VideoCodec::Vp9 => Some(b"VP90"),
            VideoCodec::H264 | VideoCodec::H265 => None,
        }
    }
}

/// The 90 kHz clock of video RTP, and of our IVF timestamps.
const VIDEO_CLOCK: u32 = 90_000;

/// One video file. Starts at a keyframe (frames before the first one are not written).
pub struct VideoFile<W: Write + Seek> {
    out: W,
    codec: VideoCodec,
    first_time: Option<u64>,
    last_time: u64,
    frames: u32,
    bytes: u64,
}

impl<W: Write + Seek> VideoFile<W> {
    /// A file for `codec` (its IVF header written now, for VP8 and VP9).
    pub fn new(mut out: W, codec: VideoCodec) -> io::Result<Self> {
        let mut bytes = 0;
        if let Some(fourcc) = codec.fourcc() {
            out.write_all(&ivf_header(fourcc, 0, 0, 0))?;
            bytes = 32;
        }
        Ok(VideoFile {
            out,
            codec,
            first_time: None,
            last_time: 0,
            frames: 0,
            bytes,
        })
    }

    /// The codec.
    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Adds a frame with its RTP time (90 kHz, extended). False if it was not written:
    /// the file has not had its first keyframe yet.
    pub fn write(&mut self, frame: &[u8], time: u64, keyframe: bool) -> io::Result<bool> {
        let first = match self.first_time {
            Some(t) => t,
            None if keyframe => {
                self.first_time = Some(time);
                if self.codec == VideoCodec::Vp8 {
                    // The IVF header's size, from the keyframe's own header.
                    if let Some((w, h)) = vp8_size(frame) {
                        let pos = self.out.stream_position()?;
                        self.out.seek(SeekFrom::Start(12))?;
                        self.out.write_all(&w.to_le_bytes())?;
                        self.out.write_all(&h.to_le_bytes())?;
                        self.out.seek(SeekFrom::Start(pos))?;
                    }
                }
                time
            }
            None => return Ok(false),
        };
        let pts = time.saturating_sub(first);
        if self.codec.fourcc().is_some() {
            self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
            self.out.write_all(&pts.to_le_bytes())?;
            self.bytes += 12;
        }
        self.out.write_all(frame)?;
        self.bytes += frame.len() as u64;
        self.last_time = pts;
        self.frames += 1;
        Ok(true)
    }

    /// Frames written.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Bytes written.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Seconds from the first frame to the last.
    pub fn seconds(&self) -> f64 {
        self.last_time as f64 / f64::from(VIDEO_CLOCK)
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the IVF frame count and hands back the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        if self.codec.fourcc().is_some() {
            self.out.seek(SeekFrom::Start(24))?;
            self.out.write_all(&self.frames.to_le_bytes())?;
            self.out.seek(SeekFrom::End(0))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// An IVF file header: `DKIF`, version 0, header size 32, the codec, the size, a 90 kHz
/// time base, the frame count.
fn ivf_header(fourcc: &[u8; 4], width: u16, height: u16, frames: u32) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..4].copy_from_slice(b"DKIF");
    h[6..8].copy_from_slice(&32u16.to_le_bytes());
    h[8..12].copy_from_slice(fourcc);
    h[12..14].copy_from_slice(&width.to_le_bytes());
    h[14..16].copy_from_slice(&height.to_le_bytes());
    h[16..20].copy_from_slice(&VIDEO_CLOCK.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[24..28].copy_from_slice(&frames.to_le_bytes());
    h
}

/// A VP8 keyframe's width and height (RFC 6386 §9.1: the 3-byte frame tag, the start code
/// 9d 01 2a, then 14-bit width and height).
fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    let keyframe = frame.first()? & 1 == 0;
    if !keyframe || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn ivf_from_the_first_keyframe_with_size_count_and_times() {
        let mut f = VideoFile::new(Cursor::new(Vec::new()), VideoCodec::Vp8).unwrap();
        let key = [
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 7, 7,
        ];
        assert!(
            !f.write(&[0x01, 5, 5], 1000, false).unwrap(),
            "before a keyframe"
        );
        assert!(f.write(&key, 9000, true).unwrap());
        assert!(f.write(&[0x01, 6], 12_000, false).unwrap());
        assert_eq!(f.frames(), 2);
        assert!((f.seconds() - 3000.0 / 90_000.0).abs() < 1e-12);
        let b = f.finish().unwrap().into_inner();
        assert_eq!(&b[..4], b"DKIF");
        assert_eq!(&b[8..12], b"VP80");
        assert_eq!(u16::from_le_bytes([b[12], b[13]]), 320);
        assert_eq!(u16::from_le_bytes([b[14], b[15]]), 240);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 90_000);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 2);
        // Frame 1: size, pts 0, the keyframe; frame 2 at 3000.
        assert_eq!(u32::from_le_bytes(b[32..36].try_into().unwrap()), 12);
        assert_eq!(u64::from_le_bytes(b[36..44].try_into().unwrap()), 0);
        assert_eq!(&b[44..56], &key);
        assert_eq!(u64::from_le_bytes(b[60..68].try_into().unwrap()), 3000);
        assert_eq!(b.len(), 32 + 12 + 12 + 12 + 2);
    }

    #[test]
    fn annex_b_is_the_frames_as_they_came() {
        let mut f = VideoFile::new(Cursor::new(Vec::new()), VideoCodec::H264).unwrap();
        let idr = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3,
        ];
        f.write(&[0, 0, 0, 1, 0x41, 9], 0, false).unwrap();
        f.write(&idr, 3000, true).unwrap();
        f.write(&[0, 0, 0, 1, 0x41, 4], 6000, false).unwrap();
        let b = f.finish().unwrap().into_inner();
        assert_eq!(b, [&idr[..], &[0, 0, 0, 1, 0x41, 4]].concat());
    }
}
