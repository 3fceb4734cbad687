//! The `direct` fan-out: our own RTP header and SRTP for audio-only viewers, sent without
//! their `Rtc` ([`DirectAudio`], [`send_direct`]).

use super::viewer::Role;
use super::viewer::Viewer;
use crate::engine::Transmitter;
use crate::net::srtp::write_rtp_header;
use crate::net::srtp::RTP_HEADER_LEN;

/// A viewer's audio RTP stream built by the engine itself (the `direct` fan-out): str0m
/// announced the SSRC in the answer but never sends RTP on it. It still sends its periodic
/// sender report for the stream (every 5 s for audio), which does not match our packets:
/// counts of zero, its own RTP-time mapping. Audio-only players do not need sender
/// reports to play (lip-sync does, which is why viewers of video stay on str0m's path).
pub(super) struct DirectAudio {
    pub(super) ssrc: u32,
    pub(super) pt: u8,
    /// The extended sequence number of the next packet (RFC 3711 index: ROC and SEQ).
    pub(super) index: u64,
    /// The next packet is the stream's first: marker bit set.
    pub(super) first: bool,
}

/// Sends `frame` to audio-only viewer `v` without its `Rtc` (the `direct` fan-out, see
/// [`Egress::set_fanout`]), built in `buf`. Returns the datagram's length, or `None` when
/// the viewer is not (yet) served this way: it takes video, its keys or nominated pair are
/// not known, or str0m has no send stream for its audio.
pub(super) fn send_direct(
    v: &mut Viewer,
    frame: &[u8],
    rtp_time: u32,
    buf: &mut [u8],
    tx: &mut impl Transmitter,
) -> Option<usize> {
    let Role::Viewer {
        audio: Some((mid, pt)),
        video: None,
        ..
    } = &v.role
    else {
        return None;
    };
    let sender = v.srtp_keys.as_ref()?.get()?;
    let (source, destination) = v.media_path?;
    if v.direct.is_none() {
        let ssrc = *v.rtc.direct_api().stream_tx_by_mid(*mid, None)?.ssrc();
        tracing::debug!(key = v.key, ssrc, "audio on the direct path");
        v.direct = Some(DirectAudio {
            ssrc,
            pt: **pt,
            // A random start (RFC 3550 §5.1), low enough that the first packets do not
            // wrap: ROC 0 at the receiver's first guess.
            index: u64::from(rand::random::<u16>() & 0x7fff),
            first: true,
        });
    }
    // Invariant: set just above.
    let d = v.direct.as_mut().expect("direct stream");
    let len = RTP_HEADER_LEN + frame.len();
    if len + crate::net::srtp::TAG_LEN > buf.len() {
        return None;
    }
    write_rtp_header(buf, d.first, d.pt, d.index as u16, rtp_time, d.ssrc);
    buf[RTP_HEADER_LEN..len].copy_from_slice(frame);
    let n = sender.protect(buf, len, RTP_HEADER_LEN, (d.index >> 16) as u32)?;
    d.index += 1;
    d.first = false;
    tx.send(source, destination, &buf[..n]);
    Some(n)
}
