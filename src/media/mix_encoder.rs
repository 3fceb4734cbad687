//! One stream's Opus encoder, which does not encode digital silence: [`MixEncoder`].
//!
//! A stream whose inputs are all silent (or which has none) would run the Opus encoder on
//! zeros every tick, about 0.6% of a core per stream. Fed zeros, the encoder settles within
//! a few frames: its input memories (pre-emphasis, pitch pre-filter, MDCT overlap) are zero
//! and every frame comes out as the same tiny packet (CELT's silence flag, 3 bytes). From
//! then on [`MixEncoder::encode`] hands out that packet again instead of encoding, until the
//! mix is audible again; the encoder then goes on from its settled state, as it would have
//! after encoding all those zeros. Viewers get one packet per tick either way (RTP times and
//! sequence numbers go on as before) and decode it to silence. Never blocks; allocates only
//! when it encodes (the packet, shared by reference with every viewer).

use std::sync::Arc;

use super::opus::{CodecError, Encoder, MAX_PACKET};
use super::Frame;

/// A frame whose every sample is below this (about -96 dBFS, half a 16-bit step) is digital
/// silence: the encoder is given zeros instead.
pub const SILENT_BELOW: f32 = 1.0 / 65_536.0;

/// Silent frames encoded before the packet is kept: two frames (1,920 samples per channel)
/// flush the pitch pre-filter's 1,024-sample memory and the MDCT overlap; then the packet
/// must have come out the same twice in a row.
pub const SETTLE_FRAMES: u32 = 4;

/// What [`MixEncoder::encode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {
    /// It ran the encoder.
    Fresh,
    /// The frame was silent and the encoder had settled: the kept packet, no encode.
    Reused,
}

/// An [`Encoder`] that skips silence (see the module doc).
pub struct MixEncoder {
    encoder: Encoder,
    packet: Vec<u8>,
    /// Consecutive silent frames encoded, and the last one's packet.
    silent_run: u32,
    last_silent: Option<Arc<[u8]>>,
    /// The settled silence packet, while the mix stays silent.
    resting: Option<Arc<[u8]>>,
}

impl MixEncoder {
    /// Wraps `encoder`.
    pub fn new(encoder: Encoder) -> MixEncoder {
        MixEncoder {
            encoder,
            packet: vec![0; MAX_PACKET],
            silent_run: 0,
            last_silent: None,
            resting: None,
        }
    }

    /// The encoder's delay in samples (see [`Encoder::lookahead`]).
    pub fn lookahead(&mut self) -> u32 {
        self.encoder.lookahead()
    }

    /// The packet of a silent frame, when the encoder has settled on silence: a stream with
    /// no input can send it without even mixing.
    pub fn resting(&self) -> Option<&Arc<[u8]>> {
        self.resting.as_ref()
    }

    /// Feeds `frames` to the encoder and throws their packets away, so that its input
    /// memories hold that signal (a talker's encoder taking over from the shared one, see
    /// [`crate::media::mix_minus`]). Forgets any settled silence.
    pub fn prime<'a>(&mut self, frames: impl Iterator<Item = &'a Frame>) -> Result<(), CodecError> {
        self.resting = None;
        self.silent_run = 0;
        self.last_silent = None;
        for f in frames {
            self.encoder.encode(f, &mut self.packet)?;
        }
        Ok(())
    }

    /// Encodes `pcm` (zeroed first when it is digital silence), or hands out the settled
    /// silence packet again.
    pub fn encode(&mut self, pcm: &mut Frame) -> Result<(Arc<[u8]>, Encoded), CodecError> {
        let silent = pcm.iter().all(|x| x.abs() < SILENT_BELOW);
        if !silent {
            self.resting = None;
            self.silent_run = 0;
            self.last_silent = None;
            let n = self.encoder.encode(pcm, &mut self.packet)?;
            return Ok((Arc::from(&self.packet[..n]), Encoded::Fresh));
        }
        if let Some(p) = &self.resting {
            return Ok((p.clone(), Encoded::Reused));
        }
        pcm.fill(0.0);
        let n = self.encoder.encode(pcm, &mut self.packet)?;
        let packet: Arc<[u8]> = Arc::from(&self.packet[..n]);
        self.silent_run += 1;
        let same = self.last_silent.as_deref() == Some(&packet[..]);
        if self.silent_run >= SETTLE_FRAMES && same {
            self.resting = Some(packet.clone());
        }
        self.last_silent = Some(packet.clone());
        Ok((packet, Encoded::Fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::analysis::{deinterleave, dominant_frequency, peak};
    use crate::media::opus::Decoder;
    use crate::media::sources::{Source, ToneSource};
    use crate::media::{FRAME_LEN, SAMPLE_RATE};

    /// The test signal (800 ms on, 200 ms off) for `seconds`, then `quiet` silent frames,
    /// then a continuous 1 kHz tone for 40 frames.
    fn signal(seconds: usize, quiet: usize) -> Vec<Box<Frame>> {
        let mut frames = Vec::new();
        let mut tone = ToneSource::new();
        for _ in 0..seconds * 50 {
            let mut f = Box::new([0.0; FRAME_LEN]);
            tone.fill(&mut f);
            frames.push(f);
        }
        frames.extend((0..quiet).map(|_| Box::new([0.0; FRAME_LEN])));
        let mut k = ToneSource::sine(1000, 1000, 0.25);
        for _ in 0..40 {
            let mut f = Box::new([0.0; FRAME_LEN]);
            k.fill(&mut f);
            frames.push(f);
        }
        frames
    }

    #[test]
    fn silence_is_encoded_until_settled_then_reused() {
        let mut e = MixEncoder::new(Encoder::new(0).unwrap());
        let mut reused = 0;
        let mut fresh_after_rest = 0;
        for mut f in signal(0, 500) {
            let (_, how) = e.encode(&mut f).unwrap();
            match how {
                Encoded::Reused => reused += 1,
                Encoded::Fresh if reused > 0 => fresh_after_rest += 1,
                Encoded::Fresh => {}
            }
        }
        assert!(reused >= 500 - 8, "{reused} of 500 silent frames reused");
        assert_eq!(
            fresh_after_rest, 40,
            "the tone after the silence is encoded"
        );
    }

    #[test]
    fn the_kept_packet_is_what_the_encoder_would_send() {
        // Side by side: one encoder encodes every frame, the other skips settled silence.
        let mut every = Encoder::new(0).unwrap();
        let mut skip = MixEncoder::new(Encoder::new(0).unwrap());
        let mut out = vec![0; MAX_PACKET];
        let (mut same, mut reused, mut total) = (0, 0, 0);
        let (mut d_every, mut d_skip) = (Decoder::new().unwrap(), Decoder::new().unwrap());
        let (mut pcm_every, mut pcm_skip) = (Vec::new(), Vec::new());
        let mut pe = [0.0; FRAME_LEN];
        let mut ps = [0.0; FRAME_LEN];
        for f in signal(3, 100) {
            let mut a = *f;
            let n = every.encode(&a, &mut out).unwrap();
            let (p, how) = skip.encode(&mut a).unwrap();
            if how == Encoded::Reused {
                reused += 1;
                assert_eq!(
                    &out[..n],
                    &p[..],
                    "a reused packet differs from the encoder's"
                );
            }
            same += usize::from(out[..n] == p[..]);
            total += 1;
            d_every.decode(&out[..n], &mut pe).unwrap();
            d_skip.decode(&p, &mut ps).unwrap();
            pcm_every.extend_from_slice(&pe);
            pcm_skip.extend_from_slice(&ps);
        }
        assert!(reused > 90, "{reused}");
        eprintln!("{same} of {total} packets identical, {reused} reused");
        // What a viewer hears after the silence: the 1 kHz tone at its level, no click.
        let tail = pcm_skip.len() - 40 * FRAME_LEN;
        let (l, r) = deinterleave(&pcm_skip[tail..]);
        assert!((dominant_frequency(&l, SAMPLE_RATE) - 1000.0).abs() < 3.0);
        assert!((dominant_frequency(&r, SAMPLE_RATE) - 1000.0).abs() < 3.0);
        assert!(peak(&pcm_skip) < 0.3, "{}", peak(&pcm_skip));
        // And it is the same audio as with every frame encoded.
        let err: f32 = pcm_every
            .iter()
            .zip(&pcm_skip)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("largest sample difference {err}");
        // The packets after the first silence differ (the encoder's rate control and
        // analysis went on through the zeros it did not see), the sound hardly: the codec's
        // own noise at 128 kbit/s is of this order.
        assert!(err < 0.02, "{err}");
    }
}
