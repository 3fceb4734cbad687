//! The Opus codec wrapper: 48 kHz stereo, 20 ms frames. STUB: to be replaced.

use super::Frame;

/// Largest Opus packet we produce or accept (RFC 6716 allows 1275 bytes per frame).
pub const MAX_PACKET: usize = 1500;

/// Codec errors.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The codec refused the input or failed internally.
    #[error("opus: {0}")]
    Codec(String),
}

/// A 48 kHz stereo Opus encoder for 20 ms frames.
pub struct Encoder {}

impl Encoder {
    /// An encoder for music at `bitrate` bits per second (0 = the codec's default).
    pub fn new(bitrate: u32) -> Result<Self, CodecError> {
        let _ = bitrate;
        unimplemented!()
    }
    /// Encodes one frame into `out`, returns the packet's length.
    pub fn encode(&mut self, pcm: &Frame, out: &mut [u8]) -> Result<usize, CodecError> {
        let _ = (pcm, out);
        unimplemented!()
    }
}

/// A 48 kHz stereo Opus decoder.
pub struct Decoder {}

impl Decoder {
    /// A new decoder.
    pub fn new() -> Result<Self, CodecError> {
        unimplemented!()
    }
    /// Decodes one packet into `out` (interleaved stereo), returns samples per channel.
    pub fn decode(&mut self, packet: &[u8], out: &mut Frame) -> Result<usize, CodecError> {
        let _ = (packet, out);
        unimplemented!()
    }
    /// Conceals one lost 20 ms frame (packet loss concealment), returns samples per channel.
    pub fn conceal(&mut self, out: &mut Frame) -> Result<usize, CodecError> {
        let _ = out;
        unimplemented!()
    }
}
