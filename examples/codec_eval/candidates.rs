//! The Opus implementations under comparison behind one small interface, configured alike:
//! 48 kHz stereo, 20 ms frames, application "audio", music signal, full band, VBR,
//! complexity 10, the same bitrate. Shared by `examples/codec_eval` and `benches/opus.rs`.

#![allow(dead_code)]

/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME: usize = 960;
/// Interleaved samples in one stereo frame.
pub const FRAME_LEN: usize = FRAME * 2;
/// Complexity used for every encoder (libopus's scale, 0..=10): 10 like mixcast, or
/// `CODEC_EVAL_COMPLEXITY` from the environment.
pub fn complexity() -> u8 {
    std::env::var("CODEC_EVAL_COMPLEXITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// An encoder for 20 ms of interleaved stereo `f32`.
pub trait Enc {
    /// Encodes one frame into `out`, returns the packet length.
    fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, String>;
}

/// A decoder to interleaved stereo `f32`; an empty packet asks for concealment.
pub trait Dec {
    /// Decodes one packet (or conceals one frame when `packet` is empty) into `out`
    /// (room for one 20 ms frame), returns samples per channel.
    fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String>;
}

/// One implementation: its name, crate and version, and constructors.
pub struct Candidate {
    /// Short name used in tables.
    pub name: &'static str,
    /// The crate and version as in Cargo.lock.
    pub krate: &'static str,
    /// A new encoder at `bitrate` bit/s.
    pub encoder: fn(u32) -> Result<Box<dyn Enc>, String>,
    /// A new decoder.
    pub decoder: fn() -> Result<Box<dyn Dec>, String>,
}

/// Every candidate compiled into this build (features `codec-eval`, `libopus`).
// The pushes are cfg-gated, so `vec![...]` cannot replace them.
#[allow(clippy::vec_init_then_push)]
pub fn all() -> Vec<Candidate> {
    let mut v = Vec::new();
    #[cfg(feature = "libopus")]
    v.push(Candidate {
        name: "libopus",
        krate: "opus 0.3.1 (libopus C)",
        encoder: libopus::encoder,
        decoder: libopus::decoder,
    });
    #[cfg(feature = "codec-eval")]
    v.push(Candidate {
        name: "opus-rs",
        krate: "opus-rs 0.1.40",
        encoder: opus_rs_impl::encoder,
        decoder: opus_rs_impl::decoder,
    });
    v.push(Candidate {
        name: "ropus",
        krate: "ropus 0.12.18",
        encoder: ropus_impl::encoder,
        decoder: ropus_impl::decoder,
    });
    #[cfg(feature = "codec-eval")]
    {
        v.push(Candidate {
            name: "mousiki",
            krate: "mousiki 0.2.1",
            encoder: mousiki_impl::encoder,
            decoder: mousiki_impl::decoder,
        });
    }
    v
}

#[cfg(feature = "libopus")]
mod libopus {
    use super::*;
    use opus::{Application, Bandwidth, Bitrate, Channels, Signal};

    struct E(opus::Encoder);
    struct D(opus::Decoder);

    pub fn encoder(bitrate: u32) -> Result<Box<dyn Enc>, String> {
        let e = || -> Result<opus::Encoder, opus::Error> {
            let mut e = opus::Encoder::new(48_000, Channels::Stereo, Application::Audio)?;
            e.set_bitrate(Bitrate::Bits(bitrate as i32))?;
            e.set_complexity(i32::from(complexity()))?;
            e.set_signal(Signal::Music)?;
            e.set_max_bandwidth(Bandwidth::Fullband)?;
            e.set_vbr(true)?;
            Ok(e)
        };
        Ok(Box::new(E(e().map_err(|e| e.to_string())?)))
    }
    pub fn decoder() -> Result<Box<dyn Dec>, String> {
        let d = opus::Decoder::new(48_000, Channels::Stereo).map_err(|e| e.to_string())?;
        Ok(Box::new(D(d)))
    }
    impl Enc for E {
        fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, String> {
            self.0.encode_float(pcm, out).map_err(|e| e.to_string())
        }
    }
    impl Dec for D {
        fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String> {
            self.0
                .decode_float(packet, out, false)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(feature = "codec-eval")]
mod opus_rs_impl {
    use super::*;
    use opus_rs::{Application, OpusDecoder, OpusEncoder};

    struct E(OpusEncoder);
    struct D(OpusDecoder);

    pub fn encoder(bitrate: u32) -> Result<Box<dyn Enc>, String> {
        let mut e = OpusEncoder::new(48_000, 2, Application::Audio)?;
        e.bitrate_bps = bitrate as i32;
        e.complexity = i32::from(complexity());
        e.use_cbr = false;
        Ok(Box::new(E(e)))
    }
    pub fn decoder() -> Result<Box<dyn Dec>, String> {
        Ok(Box::new(D(OpusDecoder::new(48_000, 2)?)))
    }
    impl Enc for E {
        fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, String> {
            Ok(self.0.encode(pcm, FRAME, out)?)
        }
    }
    impl Dec for D {
        fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String> {
            Ok(self.0.decode(packet, FRAME, out)?)
        }
    }
}

mod ropus_impl {
    use super::*;
    use ropus::{Application, Bandwidth, Bitrate, Channels, DecodeMode, Signal};

    struct E(ropus::Encoder);
    struct D(ropus::Decoder);

    pub fn encoder(bitrate: u32) -> Result<Box<dyn Enc>, String> {
        let e = ropus::Encoder::builder(48_000, Channels::Stereo, Application::Audio)
            .bitrate(Bitrate::Bits(bitrate))
            .complexity(complexity())
            .signal(Signal::Music)
            .max_bandwidth(Bandwidth::Fullband)
            .vbr(true)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Box::new(E(e)))
    }
    pub fn decoder() -> Result<Box<dyn Dec>, String> {
        let d = ropus::Decoder::new(48_000, Channels::Stereo).map_err(|e| e.to_string())?;
        Ok(Box::new(D(d)))
    }
    impl Enc for E {
        fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, String> {
            self.0.encode_float(pcm, out).map_err(|e| e.to_string())
        }
    }
    impl Dec for D {
        fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String> {
            self.0
                .decode_float(packet, out, DecodeMode::Normal)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(feature = "codec-eval")]
mod mousiki_impl {
    use super::*;
    use mousiki::{Application, Bandwidth, Bitrate, Channels, Signal};

    struct E(mousiki::Encoder);
    struct D(mousiki::Decoder);

    pub fn encoder(bitrate: u32) -> Result<Box<dyn Enc>, String> {
        let e = mousiki::Encoder::builder(48_000, Channels::Stereo, Application::Audio)
            .bitrate(Bitrate::Bits(bitrate as i32))
            .complexity(i32::from(complexity()))
            .signal(Signal::Music)
            .max_bandwidth(Bandwidth::Fullband)
            .vbr(true)
            .build()
            .map_err(|e| format!("{e:?}"))?;
        Ok(Box::new(E(e)))
    }
    pub fn decoder() -> Result<Box<dyn Dec>, String> {
        let d = mousiki::Decoder::new(48_000, Channels::Stereo).map_err(|e| format!("{e:?}"))?;
        Ok(Box::new(D(d)))
    }
    impl Enc for E {
        fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, String> {
            self.0.encode_float(pcm, out).map_err(|e| format!("{e:?}"))
        }
    }
    impl Dec for D {
        fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, String> {
            if packet.is_empty() {
                self.0.conceal_float(out).map_err(|e| format!("{e:?}"))
            } else {
                self.0
                    .decode_float(packet, out, false)
                    .map_err(|e| format!("{e:?}"))
            }
        }
    }
}
