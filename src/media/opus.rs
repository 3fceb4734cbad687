//! The Opus codec: one 48 kHz stereo encoder per mix, one decoder per publisher input.
//!
//! Owns the choice of Opus implementation and its configuration; everything else in
//! mixcast sees only [`Encoder`] and [`Decoder`] working on [`Frame`]s. By default the
//! codec is [`ropus`], a pure-Rust port of libopus, so `cargo` alone builds mixcast (no
//! cmake, no system libopus); the `libopus` cargo feature swaps in the C libopus through
//! the `opus` crate. docs/codec.md has the measurements behind the choice.
//!
//! Output is what WebRTC's `opus/48000/2` with `stereo=1` expects: 20 ms frames, CELT full
//! band stereo at 128 kbit/s unless told otherwise. This module adds no allocation on the
//! encode or decode path (ropus itself allocates a buffer inside each decode; libopus does
//! not), never blocks and never panics on bad packets: a packet from the network is
//! untrusted input and gives an error at worst.

use super::{Frame, CHANNELS, FRAME_LEN, FRAME_SAMPLES, SAMPLE_RATE};

/// Largest Opus packet we produce or accept (RFC 6716 allows 1275 bytes per frame).
pub const MAX_PACKET: usize = 1500;

/// The bitrate used when [`Encoder::new`] is given 0: transparent stereo music.
pub const DEFAULT_BITRATE: u32 = 128_000;

/// Lowest and highest bitrates Opus accepts (bit/s); [`Encoder::new`] clamps to these.
pub const BITRATE_RANGE: std::ops::RangeInclusive<u32> = 6_000..=510_000;

/// Encoder complexity, 0..=10: the best quality, affordable for one encode per mix.
pub const COMPLEXITY: u8 = 10;

/// Codec errors.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The codec refused the input or failed internally.
    #[error("opus: {0}")]
    Codec(String),
    /// An empty packet: a lost packet is [`Decoder::conceal`]ed, not decoded.
    #[error("opus: empty packet")]
    EmptyPacket,
    /// A packet longer than [`MAX_PACKET`] bytes.
    #[error("opus: packet of {0} bytes is longer than {MAX_PACKET}")]
    PacketTooLong(usize),
}

/// A 48 kHz stereo Opus encoder for 20 ms frames of music.
pub struct Encoder {
    inner: backend::Encoder,
}

impl Encoder {
    /// An encoder for music at `bitrate` bits per second (0 = [`DEFAULT_BITRATE`]),
    /// clamped to [`BITRATE_RANGE`]. Variable bitrate, full band, stereo.
    pub fn new(bitrate: u32) -> Result<Self, CodecError> {
        let bitrate = match bitrate {
            0 => DEFAULT_BITRATE,
            b => b.clamp(*BITRATE_RANGE.start(), *BITRATE_RANGE.end()),
        };
        Ok(Self {
            inner: backend::Encoder::new(bitrate)?,
        })
    }

    /// Encodes one frame into `out`, returns the packet's length. `out` should hold
    /// [`MAX_PACKET`] bytes; a smaller buffer caps the packet (and its quality).
    pub fn encode(&mut self, pcm: &Frame, out: &mut [u8]) -> Result<usize, CodecError> {
        let len = out.len().min(MAX_PACKET);
        self.inner.encode(pcm, &mut out[..len])
    }

    /// The encoder's delay in 48 kHz samples: its first packets decode to this many
    /// samples before the input starts (an Ogg Opus file's pre-skip, RFC 7845).
    pub fn lookahead(&mut self) -> u32 {
        self.inner.lookahead()
    }
}

/// True when `packet` carries in-band FEC (SILK LBRR data) for the packet before it, i.e.
/// when [`Decoder::decode_fec`] can rebuild that one rather than conceal it. False for CELT
/// packets, SILK frames the encoder sent without FEC, and anything unparsable.
pub fn packet_has_fec(packet: &[u8]) -> bool {
    if packet.is_empty() || packet.len() > MAX_PACKET {
        return false;
    }
    // Cannot truncate: at most MAX_PACKET bytes. The parser is ropus's whatever the backend.
    ropus::opus::decoder::opus_packet_has_lbrr(packet, packet.len() as i32).unwrap_or(false)
}

/// A 48 kHz stereo Opus decoder. Mono packets play on both channels.
pub struct Decoder {
    inner: backend::Decoder,
}

impl Decoder {
    /// A new decoder.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: backend::Decoder::new()?,
        })
    }

    /// Decodes one packet into `out` (interleaved stereo), returns samples per channel:
    /// 960 for a 20 ms packet, fewer for shorter ones (only `out`'s first that many
    /// samples per channel are written). Packets longer than 20 ms are refused, as are
    /// empty, oversized and corrupt ones.
    pub fn decode(&mut self, packet: &[u8], out: &mut Frame) -> Result<usize, CodecError> {
        if packet.is_empty() {
            return Err(CodecError::EmptyPacket);
        }
        if packet.len() > MAX_PACKET {
            return Err(CodecError::PacketTooLong(packet.len()));
        }
        let n = self.inner.decode(packet, out)?;
        clamp(&mut out[..n * CHANNELS]);
        Ok(n)
    }

    /// Conceals one lost 20 ms frame (packet loss concealment), returns samples per channel.
    pub fn conceal(&mut self, out: &mut Frame) -> Result<usize, CodecError> {
        let n = self.inner.conceal(out)?;
        clamp(&mut out[..n * CHANNELS]);
        Ok(n)
    }

    /// Rebuilds one lost 20 ms frame from the in-band forward error correction (LBRR) that
    /// `next`, the packet after the lost one, may carry; returns samples per channel (960).
    /// Only SILK and hybrid packets (speech; what browsers send with `useinbandfec=1`) carry
    /// FEC: for any other packet the codec conceals instead, exactly like
    /// [`conceal`](Self::conceal). Either way `next` itself has not been played: decode it
    /// normally afterwards. Errors like [`decode`](Self::decode) for bad packets.
    pub fn decode_fec(&mut self, next: &[u8], out: &mut Frame) -> Result<usize, CodecError> {
        if next.is_empty() {
            return Err(CodecError::EmptyPacket);
        }
        if next.len() > MAX_PACKET {
            return Err(CodecError::PacketTooLong(next.len()));
        }
        let n = self.inner.decode_fec(next, out)?;
        clamp(&mut out[..n * CHANNELS]);
        Ok(n)
    }
}

/// Keeps decoded samples within the frame format's -1..=1 (a float decoder may overshoot).
fn clamp(samples: &mut [f32]) {
    for s in samples {
        *s = s.clamp(-1.0, 1.0);
    }
}

/// The default codec: ropus, pure Rust.
#[cfg(not(feature = "libopus"))]
mod backend {
    use super::*;
    use ropus::{Application, Bandwidth, Bitrate, Channels, DecodeMode, Signal};

    pub(super) struct Encoder(ropus::Encoder);

    impl Encoder {
        pub(super) fn new(bitrate: u32) -> Result<Self, CodecError> {
            ropus::Encoder::builder(SAMPLE_RATE, Channels::Stereo, Application::Audio)
                .bitrate(Bitrate::Bits(bitrate))
                .complexity(COMPLEXITY)
                .signal(Signal::Music)
                .max_bandwidth(Bandwidth::Fullband)
                .build()
                .map(Self)
                .map_err(|e| CodecError::Codec(e.to_string()))
        }

        pub(super) fn encode(&mut self, pcm: &Frame, out: &mut [u8]) -> Result<usize, CodecError> {
            self.0
                .encode_float(pcm, out)
                .map_err(|e| CodecError::Codec(e.to_string()))
        }

        pub(super) fn lookahead(&mut self) -> u32 {
            self.0.lookahead()
        }
    }

    pub(super) struct Decoder(ropus::Decoder);

    impl Decoder {
        pub(super) fn new() -> Result<Self, CodecError> {
            ropus::Decoder::new(SAMPLE_RATE, Channels::Stereo)
                .map(Self)
                .map_err(|e| CodecError::Codec(e.to_string()))
        }

        /// `out` is exactly one 20 ms frame, so ropus refuses longer packets.
        pub(super) fn decode(
            &mut self,
            packet: &[u8],
            out: &mut Frame,
        ) -> Result<usize, CodecError> {
            self.0
                .decode_float(packet, out, DecodeMode::Normal)
                .map_err(|e| CodecError::Codec(e.to_string()))
        }

        /// An empty packet asks ropus to conceal as many samples as `out` holds: 20 ms.
        pub(super) fn conceal(&mut self, out: &mut Frame) -> Result<usize, CodecError> {
            self.0
                .decode_float(&[], out, DecodeMode::Normal)
                .map_err(|e| CodecError::Codec(e.to_string()))
        }

        /// In FEC mode ropus rebuilds as many samples as `out` holds: the lost 20 ms.
        pub(super) fn decode_fec(
            &mut self,
            next: &[u8],
            out: &mut Frame,
        ) -> Result<usize, CodecError> {
            self.0
                .decode_float(next, out, DecodeMode::Fec)
                .map_err(|e| CodecError::Codec(e.to_string()))
        }
    }
}

/// libopus (C) through the `opus` crate, behind the `libopus` feature.
#[cfg(feature = "libopus")]
mod backend {
    use super::*;
    use opus::{Application, Bandwidth, Bitrate, Channels, Signal};

    pub(super) struct Encoder(opus::Encoder);

    fn err(e: opus::Error) -> CodecError {
        CodecError::Codec(e.to_string())
    }

    impl Encoder {
        pub(super) fn new(bitrate: u32) -> Result<Self, CodecError> {
            let mut e = opus::Encoder::new(SAMPLE_RATE, Channels::Stereo, Application::Audio)
                .map_err(err)?;
            // Cannot overflow: BITRATE_RANGE ends at 510_000.
            e.set_bitrate(Bitrate::Bits(bitrate as i32)).map_err(err)?;
            e.set_complexity(i32::from(COMPLEXITY)).map_err(err)?;
            e.set_signal(Signal::Music).map_err(err)?;
            e.set_max_bandwidth(Bandwidth::Fullband).map_err(err)?;
            Ok(Self(e))
        }

        pub(super) fn encode(&mut self, pcm: &Frame, out: &mut [u8]) -> Result<usize, CodecError> {
            self.0.encode_float(pcm, out).map_err(err)
        }

        /// libopus's OPUS_GET_LOOKAHEAD (312 at 48 kHz for this application).
        pub(super) fn lookahead(&mut self) -> u32 {
            self.0.get_lookahead().map_or(312, |n| n.max(0) as u32)
        }
    }

    pub(super) struct Decoder(opus::Decoder);

    impl Decoder {
        pub(super) fn new() -> Result<Self, CodecError> {
            opus::Decoder::new(SAMPLE_RATE, Channels::Stereo)
                .map(Self)
                .map_err(err)
        }

        /// `out` is exactly one 20 ms frame, so libopus refuses longer packets.
        pub(super) fn decode(
            &mut self,
            packet: &[u8],
            out: &mut Frame,
        ) -> Result<usize, CodecError> {
            self.0.decode_float(packet, out, false).map_err(err)
        }

        /// An empty packet asks libopus to conceal as many samples as `out` holds: 20 ms.
        pub(super) fn conceal(&mut self, out: &mut Frame) -> Result<usize, CodecError> {
            self.0.decode_float(&[], out, false).map_err(err)
        }

        /// In FEC mode libopus rebuilds as many samples as `out` holds: the lost 20 ms.
        pub(super) fn decode_fec(
            &mut self,
            next: &[u8],
            out: &mut Frame,
        ) -> Result<usize, CodecError> {
            self.0.decode_float(next, out, true).map_err(err)
        }
    }
}

// Both backends size their buffers from these; make a change of frame format loud.
const _: () = assert!(FRAME_LEN == FRAME_SAMPLES * CHANNELS && FRAME_SAMPLES == 960);

#[cfg(test)]
mod tests {
    use super::*;
    use rustfft::{num_complex::Complex32, FftPlanner};
    use std::f32::consts::PI;

    /// The lookahead the encoder reports is its real delay: decoded, a signal comes out
    /// that many samples late (what an Ogg Opus file's pre-skip must remove).
    #[test]
    fn lookahead_is_the_measured_delay() {
        let mut enc = Encoder::new(0).unwrap();
        let mut dec = Decoder::new().unwrap();
        // A sweep (no period a lag could alias to), 0.3 of full scale, on both channels.
        let n = 20 * FRAME_SAMPLES;
        let input: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f32 / SAMPLE_RATE as f32;
                0.3 * (2.0 * PI * (200.0 * t + 2000.0 * t * t)).sin()
            })
            .collect();
        let mut output: Vec<f32> = Vec::new();
        let mut packet = vec![0; MAX_PACKET];
        for chunk in input.chunks_exact(FRAME_SAMPLES) {
            let mut frame = [0f32; FRAME_LEN];
            for (i, &x) in chunk.iter().enumerate() {
                frame[2 * i] = x;
                frame[2 * i + 1] = x;
            }
            let len = enc.encode(&frame, &mut packet).unwrap();
            let mut out = [0f32; FRAME_LEN];
            dec.decode(&packet[..len], &mut out).unwrap();
            output.extend(out.iter().step_by(2));
        }
        let corr = |lag: usize| -> f32 { (0..n - 1000).map(|i| input[i] * output[i + lag]).sum() };
        let best = (0..1000)
            .max_by(|&a, &b| corr(a).total_cmp(&corr(b)))
            .unwrap();
        assert_eq!(best as u32, enc.lookahead(), "measured delay vs lookahead");
        assert_eq!(enc.lookahead(), 312);
    }

    /// `frames` frames of the built-in test signal: 440 Hz left, 660 Hz right, 0.25,
    /// sounding 800 ms of every second with 5 ms fades.
    fn tone(frames: usize) -> Vec<Frame> {
        let rate = SAMPLE_RATE as usize;
        (0..frames)
            .map(|f| {
                let mut frame = [0f32; FRAME_LEN];
                for i in 0..FRAME_SAMPLES {
                    let n = f * FRAME_SAMPLES + i;
                    let t = n as f32 / rate as f32;
                    let c = (n % rate) as f32 / rate as f32;
                    let gate = if c >= 0.8 {
                        0.0
                    } else {
                        (c / 0.005).min((0.8 - c) / 0.005).min(1.0)
                    };
                    frame[2 * i] = 0.25 * gate * (2.0 * PI * 440.0 * t).sin();
                    frame[2 * i + 1] = 0.25 * gate * (2.0 * PI * 660.0 * t).sin();
                }
                frame
            })
            .collect()
    }

    /// Dominant frequency (Hz, to the nearest bin) of one channel of interleaved stereo,
    /// and the power at `other` Hz relative to the peak, in dB.
    fn analyse(pcm: &[f32], channel: usize, other: f32) -> (f32, f32) {
        let n = pcm.len() / 2;
        let mut buf: Vec<Complex32> = (0..n)
            .map(|i| {
                let w = 0.5 - 0.5 * (2.0 * PI * i as f32 / n as f32).cos();
                Complex32::new(pcm[2 * i + channel] * w, 0.0)
            })
            .collect();
        FftPlanner::new().plan_fft_forward(n).process(&mut buf);
        let power: Vec<f32> = buf[..n / 2].iter().map(|c| c.norm_sqr()).collect();
        let hz_per_bin = SAMPLE_RATE as f32 / n as f32;
        let peak = (1..power.len())
            .max_by(|&a, &b| power[a].total_cmp(&power[b]))
            .unwrap_or(0);
        let near = |bin: usize| power[bin.saturating_sub(2)..=bin + 2].iter().sum::<f32>();
        let other_bin = (other / hz_per_bin).round() as usize;
        let rel = 10.0 * (near(other_bin) / near(peak)).log10();
        (peak as f32 * hz_per_bin, rel)
    }

    fn round_trip(frames: &[Frame]) -> Vec<f32> {
        let mut enc = Encoder::new(0).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut out = [0f32; FRAME_LEN];
        let mut pcm = Vec::new();
        for f in frames {
            let len = enc.encode(f, &mut packet).unwrap();
            assert!(len > 2 && len <= MAX_PACKET, "packet of {len} bytes");
            // TOC: config 31 = CELT full band 20 ms, stereo flag set, one frame.
            assert_eq!(packet[0] >> 3, 31, "TOC {:#x}", packet[0]);
            assert_ne!(packet[0] & 0x04, 0, "mono packet");
            assert_eq!(dec.decode(&packet[..len], &mut out).unwrap(), FRAME_SAMPLES);
            pcm.extend_from_slice(&out);
        }
        pcm
    }

    #[test]
    fn round_trip_keeps_frequency_and_stereo() {
        let pcm = round_trip(&tone(50));
        // 100..700 ms: sounding, past the codec's start-up and its 6.5 ms delay.
        let window = &pcm[4_800 * 2..33_600 * 2];
        let (left, left_leak) = analyse(window, 0, 660.0);
        let (right, right_leak) = analyse(window, 1, 440.0);
        let bin = SAMPLE_RATE as f32 / 28_800.0;
        assert!((left - 440.0).abs() <= bin, "left at {left} Hz");
        assert!((right - 660.0).abs() <= bin, "right at {right} Hz");
        assert!(left_leak < -40.0, "660 Hz in the left at {left_leak} dB");
        assert!(right_leak < -40.0, "440 Hz in the right at {right_leak} dB");
        // Level kept: a 0.25 sine has an RMS of 0.177.
        let rms = (window.iter().map(|s| s * s).sum::<f32>() / window.len() as f32).sqrt();
        assert!((rms - 0.177).abs() < 0.01, "RMS {rms}");
        // The 200 ms gap (850..950 ms) stays silent.
        let gap = &pcm[40_800 * 2..45_600 * 2];
        assert!(gap.iter().all(|s| s.abs() < 0.01), "noise in the gap");
    }

    #[test]
    fn bitrate_is_honoured() {
        let frames = tone(50);
        for (asked, lo, hi) in [(0, 100_000, 160_000), (32_000, 20_000, 45_000)] {
            let mut enc = Encoder::new(asked).unwrap();
            let mut packet = [0u8; MAX_PACKET];
            let bytes: usize = frames
                .iter()
                .map(|f| enc.encode(f, &mut packet).unwrap())
                .sum();
            let bps = bytes * 8; // 50 frames = 1 s
            assert!((lo..hi).contains(&bps), "asked {asked}, got {bps} bit/s");
        }
    }

    #[test]
    fn decoder_rejects_garbage_without_panicking() {
        let mut dec = Decoder::new().unwrap();
        let mut out = [0f32; FRAME_LEN];
        assert!(matches!(
            dec.decode(&[], &mut out),
            Err(CodecError::EmptyPacket)
        ));
        assert!(matches!(
            dec.decode(&[0xfc; MAX_PACKET + 1], &mut out),
            Err(CodecError::PacketTooLong(_))
        ));
        // Code 3 packet (TOC 0xff) whose frame-count byte promises 63 frames: too long.
        assert!(dec.decode(&[0xff, 0x3f, 0, 0], &mut out).is_err());
        // 60 ms SILK packet (config 3): more than one frame's worth of output.
        assert!(dec.decode(&[0x18, 0xa5, 0x5a, 0x00], &mut out).is_err());
        // Random bytes: an error or some samples, never a panic, never out of range.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut decoded = 0;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 400) as usize;
            let packet: Vec<u8> = (0..len)
                .map(|i| (seed >> (i % 56)) as u8 ^ i as u8)
                .collect();
            if let Ok(n) = dec.decode(&packet, &mut out) {
                assert!(n <= FRAME_SAMPLES);
                assert!(out[..n * 2].iter().all(|s| (-1.0..=1.0).contains(s)));
                decoded += 1;
            }
        }
        assert!(
            decoded > 0,
            "nothing random decoded: is the decoder wired at all?"
        );
        // The FEC probe copes with the same garbage.
        seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let packet: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            let _ = packet_has_fec(&packet);
        }
        // And it still decodes real audio afterwards.
        let pcm = round_trip(&tone(10));
        assert!(pcm.iter().any(|s| s.abs() > 0.1));
    }

    #[test]
    fn mono_packets_play_on_both_channels() {
        // A mono publisher (e.g. a browser without stereo=1) sends mono Opus.
        let mut mono = ropus::Encoder::builder(
            SAMPLE_RATE,
            ropus::Channels::Mono,
            ropus::Application::Audio,
        )
        .build()
        .unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut out = [0f32; FRAME_LEN];
        let mut pcm = Vec::new();
        for frame in tone(20) {
            let left: Vec<f32> = frame.iter().step_by(2).copied().collect();
            let len = mono.encode_float(&left, &mut packet).unwrap();
            assert_eq!(packet[0] & 0x04, 0, "not a mono packet");
            assert_eq!(dec.decode(&packet[..len], &mut out).unwrap(), FRAME_SAMPLES);
            pcm.extend_from_slice(&out);
        }
        let window = &pcm[4_800 * 2..(4_800 + 9_600) * 2];
        let bin = SAMPLE_RATE as f32 / 9_600.0;
        for ch in 0..2 {
            let (hz, _) = analyse(window, ch, 660.0);
            assert!((hz - 440.0).abs() <= bin, "channel {ch} at {hz} Hz");
        }
    }

    #[test]
    fn conceal_continues_the_tone() {
        let frames = tone(30);
        let mut enc = Encoder::new(0).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut out = [0f32; FRAME_LEN];
        // 25 frames = 500 ms: inside the sounding part.
        for f in &frames[..25] {
            let len = enc.encode(f, &mut packet).unwrap();
            dec.decode(&packet[..len], &mut out).unwrap();
        }
        let rms = |pcm: &[f32], ch: usize| {
            (pcm.iter().skip(ch).step_by(2).map(|s| s * s).sum::<f32>() / FRAME_SAMPLES as f32)
                .sqrt()
        };
        let before = (rms(&out, 0), rms(&out, 1));
        // Two frames lost in a row.
        let mut concealed = Vec::new();
        for _ in 0..2 {
            assert_eq!(dec.conceal(&mut out).unwrap(), FRAME_SAMPLES);
            concealed.extend_from_slice(&out);
        }
        let first = &concealed[..FRAME_LEN];
        for ch in 0..2 {
            let ratio = rms(first, ch) / [before.0, before.1][ch];
            assert!(
                (0.5..1.5).contains(&ratio),
                "channel {ch}: concealed at {ratio} of the level"
            );
        }
        let (left, _) = analyse(&concealed, 0, 660.0);
        let (right, _) = analyse(&concealed, 1, 440.0);
        // 40 ms of samples: 25 Hz bins.
        assert!((left - 440.0).abs() <= 25.0, "concealed left at {left} Hz");
        assert!(
            (right - 660.0).abs() <= 25.0,
            "concealed right at {right} Hz"
        );
        // The next real packet decodes normally.
        let len = enc.encode(&frames[27], &mut packet).unwrap();
        assert_eq!(dec.decode(&packet[..len], &mut out).unwrap(), FRAME_SAMPLES);
    }

    /// Mono speech-band packets with in-band FEC, as a browser sends them: 20 ms frames of
    /// a sine whose frequency changes from `before` Hz to `after` Hz at frame `switch`.
    fn fec_packets(frames: usize, switch: usize, before: f32, after: f32) -> Vec<Vec<u8>> {
        let mut enc =
            ropus::Encoder::builder(SAMPLE_RATE, ropus::Channels::Mono, ropus::Application::Voip)
                .bitrate(ropus::Bitrate::Bits(32_000))
                .inband_fec(ropus::InbandFec::Enabled)
                .packet_loss_perc(20)
                .build()
                .unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut phase = 0f32;
        (0..frames)
            .map(|f| {
                let hz = if f < switch { before } else { after };
                let pcm: Vec<f32> = (0..FRAME_SAMPLES)
                    .map(|_| {
                        phase += 2.0 * PI * hz / SAMPLE_RATE as f32;
                        0.3 * phase.sin()
                    })
                    .collect();
                let len = enc.encode_float(&pcm, &mut packet).unwrap();
                packet[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn fec_rebuilds_a_lost_frame_that_concealment_cannot_guess() {
        // The tone changes from 300 to 500 Hz exactly at the lost frame: concealment can
        // only continue 300 Hz, the next packet's FEC knows the lost frame had 500 Hz.
        let (lost, switch) = (30, 30);
        let packets = fec_packets(40, switch, 300.0, 500.0);
        // SILK or hybrid (config < 16): the modes that carry FEC.
        assert!(
            packets[lost + 1][0] >> 3 < 16,
            "TOC {:#x}",
            packets[lost + 1][0]
        );
        let mut out = [0f32; FRAME_LEN];
        let decode_upto = |dec: &mut Decoder, out: &mut Frame| {
            for p in &packets[..lost] {
                dec.decode(p, out).unwrap();
            }
        };
        let mut fec = Decoder::new().unwrap();
        decode_upto(&mut fec, &mut out);
        assert_eq!(
            fec.decode_fec(&packets[lost + 1], &mut out).unwrap(),
            FRAME_SAMPLES
        );
        let rebuilt = out;
        // The packet itself still decodes afterwards.
        assert_eq!(
            fec.decode(&packets[lost + 1], &mut out).unwrap(),
            FRAME_SAMPLES
        );

        let mut plc = Decoder::new().unwrap();
        decode_upto(&mut plc, &mut out);
        plc.conceal(&mut out).unwrap();
        let concealed = out;

        // The second half of the frame, past the codec's delay and the switch.
        let half = |f: &Frame| f[FRAME_LEN / 2..].to_vec();
        let band = |pcm: &[f32], hz: f32| {
            let left: Vec<f32> = pcm.iter().step_by(2).copied().collect();
            crate::media::analysis::band_energy(&left, SAMPLE_RATE, hz, 60.0)
        };
        let (r, c) = (half(&rebuilt), half(&concealed));
        assert!(
            band(&r, 500.0) > 4.0 * band(&r, 300.0),
            "FEC frame: 500 Hz {} vs 300 Hz {}",
            band(&r, 500.0),
            band(&r, 300.0)
        );
        assert!(
            band(&c, 300.0) > band(&c, 500.0),
            "concealment guessed the future?"
        );
    }

    #[test]
    fn fec_from_a_celt_packet_conceals() {
        let frames = tone(12);
        let mut enc = Encoder::new(0).unwrap();
        let mut dec = Decoder::new().unwrap();
        let mut packet = [0u8; MAX_PACKET];
        let mut out = [0f32; FRAME_LEN];
        for f in &frames[..10] {
            let len = enc.encode(f, &mut packet).unwrap();
            dec.decode(&packet[..len], &mut out).unwrap();
        }
        let _lost = enc.encode(&frames[10], &mut packet).unwrap();
        let len = enc.encode(&frames[11], &mut packet).unwrap();
        assert!(!packet_has_fec(&packet[..len]));
        assert_eq!(
            dec.decode_fec(&packet[..len], &mut out).unwrap(),
            FRAME_SAMPLES
        );
        // Concealment of a 0.25 tone: still sounding, in range.
        let rms = (out.iter().map(|s| s * s).sum::<f32>() / FRAME_LEN as f32).sqrt();
        assert!(rms > 0.05, "RMS {rms}");
        assert!(dec.decode_fec(&[], &mut out).is_err());
        // A corrupt next packet: an error, not a panic.
        assert!(dec.decode_fec(&[0xff, 0x3f, 0, 0], &mut out).is_err());
        assert_eq!(dec.decode(&packet[..len], &mut out).unwrap(), FRAME_SAMPLES);
    }
}
