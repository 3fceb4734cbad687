//! The viewers of one TX thread and the streams they watch: sans-IO.
//!
//! Owns every viewer's `Rtc` and drives it by the single-mutation rule (each mutation is
//! followed by a drain of `poll_output` to `Timeout`). Each [`Egress::tick`] mixes and
//! encodes every stream once and writes that one packet to each connected viewer.
//! Never reads the clock, never blocks, never touches a socket.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::Protocol;
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};

use super::{EndReason, PeerKey, Transmitter};
use crate::media::mixer::Mixer;
use crate::media::opus::{Encoder, MAX_PACKET};
use crate::media::{Frame, FRAME_LEN, FRAME_SAMPLES};
use crate::metrics::Metrics;

/// A viewer that has not connected (ICE and DTLS) this long after its answer is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A stream as the TX thread sees it: its mix, its encoder, its media clock.
pub struct StreamMix {
    /// The stream's name.
    pub name: String,
    mixer: Mixer,
    encoder: Encoder,
    /// RTP time (48 kHz) of the next frame.
    media_time: u64,
    pcm: Box<Frame>,
    packet: Vec<u8>,
    /// This tick's encoded frame, shared by reference with every viewer's `Rtc` (str0m
    /// takes `Arc<[u8]>`): one allocation per stream per tick, not one per viewer.
    frame: Option<Arc<[u8]>>,
}

impl StreamMix {
    /// A stream playing `mixer`, encoded at `bitrate` (0: the codec default).
    pub fn new(name: String, mixer: Mixer, encoder: Encoder) -> StreamMix {
        StreamMix {
            name,
            mixer,
            encoder,
            media_time: 0,
            pcm: Box::new([0.0; FRAME_LEN]),
            packet: vec![0; MAX_PACKET],
            frame: None,
        }
    }
}

struct Viewer {
    key: PeerKey,
    rtc: Rtc,
    stream: usize,
    /// The audio m-line and our Opus PT, known once str0m reports the media.
    audio: Option<(Mid, Pt)>,
    connected: bool,
    /// When the viewer was added, to give up on one that never connects.
    added: Instant,
    /// The timeout str0m last asked for, while it has an entry in `timers`.
    next_timeout: Option<Instant>,
}

/// A viewer that has ended, reported by [`Egress::take_ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The session.
    pub key: PeerKey,
    /// Why.
    pub reason: EndReason,
}

/// The egress engine of one TX thread.
pub struct Egress {
    streams: Vec<StreamMix>,
    viewers: Vec<Viewer>,
    index: HashMap<PeerKey, usize>,
    /// Earliest str0m timeouts, lazily pruned: an entry is live while it equals the
    /// viewer's `next_timeout`.
    timers: BinaryHeap<Reverse<(Instant, PeerKey)>>,
    ended: Vec<Ended>,
    metrics: Arc<Metrics>,
}

impl Egress {
    /// An engine for `streams` (indexes into this list name a viewer's stream).
    pub fn new(streams: Vec<StreamMix>, metrics: Arc<Metrics>) -> Egress {
        Egress {
            streams,
            viewers: Vec::new(),
            index: HashMap::new(),
            timers: BinaryHeap::new(),
            ended: Vec::new(),
            metrics,
        }
    }

    /// The index of the stream called `name`.
    pub fn stream_index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s.name == name)
    }

    /// Viewers currently owned.
    pub fn viewer_count(&self) -> usize {
        self.viewers.len()
    }

    /// Takes ownership of a viewer's `Rtc` (fresh from `accept_offer`) and drains it.
    pub fn add_viewer(
        &mut self,
        now: Instant,
        key: PeerKey,
        rtc: Rtc,
        stream: usize,
        tx: &mut impl Transmitter,
    ) {
        let idx = self.viewers.len();
        self.viewers.push(Viewer {
            key,
            rtc,
            stream,
            audio: None,
            connected: false,
            added: now,
            next_timeout: None,
        });
        self.index.insert(key, idx);
        self.metrics.viewer_added(&self.streams[stream].name);
        self.drain(idx, now, tx);
    }

    /// Ends a viewer by request (DELETE or shutdown).
    pub fn remove_viewer(&mut self, key: PeerKey, tx: &mut impl Transmitter) {
        if let Some(&idx) = self.index.get(&key) {
            let v = &mut self.viewers[idx];
            v.rtc.disconnect();
            // Send what closing produces (DTLS close_notify); the session is over either way.
            while let Ok(out) = v.rtc.poll_output() {
                match out {
                    Output::Transmit(t) => tx.send(t.source, t.destination, &t.contents),
                    Output::Timeout(_) => break,
                    Output::Event(_) => {}
                }
            }
            self.end(key, EndReason::Closed);
        }
    }

    /// Adds a trickled remote candidate (WHEP PATCH).
    pub fn add_remote_candidate(
        &mut self,
        key: PeerKey,
        candidate: Candidate,
        now: Instant,
        tx: &mut impl Transmitter,
    ) {
        if let Some(&idx) = self.index.get(&key) {
            self.viewers[idx].rtc.add_remote_candidate(candidate);
            self.drain(idx, now, tx);
        }
    }

    /// ICE restart (WHEP PATCH with new credentials): new local credentials, the client's
    /// new ones; the selected pair keeps carrying media while checks run again. Returns our
    /// new credentials, or None if `key` is unknown.
    pub fn restart_ice(
        &mut self,
        key: PeerKey,
        remote: IceCreds,
        now: Instant,
        tx: &mut impl Transmitter,
    ) -> Option<IceCreds> {
        let &idx = self.index.get(&key)?;
        let local = IceCreds::new();
        {
            let mut api = self.viewers[idx].rtc.direct_api();
            api.set_local_ice_credentials(local.clone());
            api.set_remote_ice_credentials(remote);
        }
        self.drain(idx, now, tx).then_some(local)
    }

    /// Feeds a datagram that the UDP loop routed to `key`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        key: PeerKey,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        tx: &mut impl Transmitter,
    ) {
        let Some(&idx) = self.index.get(&key) else {
            return;
        };
        tracing::trace!(key, %source, %destination, len = data.len(), "datagram in");
        let Ok(contents) = data.try_into() else {
            return; // not a datagram str0m knows (neither STUN, DTLS nor RTP)
        };
        let input = Input::Receive(
            now,
            str0m::net::Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if let Err(e) = self.viewers[idx].rtc.handle_input(input) {
            tracing::debug!(key, "input refused: {e}");
            self.end(key, EndReason::Failed);
            return;
        }
        self.drain(idx, now, tx);
    }

    /// The earliest instant at which some viewer wants [`Egress::handle_timeouts`].
    pub fn next_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            match self.index.get(&key) {
                Some(&idx) if self.viewers[idx].next_timeout == Some(at) => return Some(at),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Gives every viewer whose timeout has come its `Input::Timeout`.
    pub fn handle_timeouts(&mut self, now: Instant, tx: &mut impl Transmitter) {
        while let Some(at) = self.next_timeout() {
            if at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.timers.pop() else {
                break;
            };
            let Some(&idx) = self.index.get(&key) else {
                continue;
            };
            self.viewers[idx].next_timeout = None;
            if let Err(e) = self.viewers[idx].rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(key, "timeout refused: {e}");
                self.end(key, EndReason::Failed);
                continue;
            }
            self.drain(idx, now, tx);
        }
    }

    /// One 20 ms tick: mix and encode each stream once, then write that packet to every
    /// connected viewer of the stream.
    pub fn tick(&mut self, now: Instant, tx: &mut impl Transmitter) {
        for s in &mut self.streams {
            s.mixer.mix(&mut s.pcm);
            s.frame = match s.encoder.encode(&s.pcm, &mut s.packet) {
                Ok(n) => Some(Arc::from(&s.packet[..n])),
                Err(e) => {
                    tracing::warn!(stream = %s.name, "encode failed: {e}");
                    None
                }
            };
        }
        let mut idx = 0;
        while idx < self.viewers.len() {
            let v = &mut self.viewers[idx];
            if !v.connected && now.saturating_duration_since(v.added) > CONNECT_TIMEOUT {
                let key = v.key;
                tracing::debug!(key, "viewer did not connect in {CONNECT_TIMEOUT:?}");
                self.end(key, EndReason::IceFailed);
                continue;
            }
            let s = &self.streams[v.stream];
            if let (true, Some((mid, pt)), Some(frame)) = (v.connected, v.audio, &s.frame) {
                let rtp_time = MediaTime::new(s.media_time, Frequency::FORTY_EIGHT_KHZ);
                let written = match v.rtc.writer(mid) {
                    Some(w) => w.write(pt, now, rtp_time, frame.clone()),
                    None => Ok(()),
                };
                if let Err(e) = written {
                    let key = v.key;
                    tracing::debug!(key, "write failed: {e}");
                    self.end(key, EndReason::Failed);
                    continue; // `end` swapped another viewer into `idx`
                }
                if !self.drain(idx, now, tx) {
                    continue;
                }
            }
            idx += 1;
        }
        for s in &mut self.streams {
            s.media_time += FRAME_SAMPLES as u64;
        }
    }

    /// Viewers that ended since the last call.
    pub fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }

    /// Ends every viewer (shutdown).
    pub fn close_all(&mut self, tx: &mut impl Transmitter) {
        while let Some(v) = self.viewers.last() {
            let key = v.key;
            self.remove_viewer(key, tx);
        }
    }

    /// Drains viewer `idx` to `Timeout`. Returns false if the viewer ended (and was
    /// removed, so `idx` now holds another viewer or is past the end).
    fn drain(&mut self, idx: usize, now: Instant, tx: &mut impl Transmitter) -> bool {
        let v = &mut self.viewers[idx];
        let key = v.key;
        let mut end = None;
        loop {
            match v.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // str0m may return a timeout in the past; never schedule before `now`.
                    let t = t.max(now);
                    if v.next_timeout != Some(t) {
                        v.next_timeout = Some(t);
                        self.timers.push(Reverse((t, key)));
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    self.metrics.transmit(t.contents.len());
                    tx.send(t.source, t.destination, &t.contents);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        v.connected = true;
                        tracing::debug!(key, "viewer connected");
                    }
                    Event::MediaAdded(m) if m.kind == MediaKind::Audio => {
                        let pt = v.rtc.writer(m.mid).and_then(|w| {
                            w.payload_params()
                                .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                                .map(|p| p.pt())
                        });
                        v.audio = pt.map(|pt| (m.mid, pt));
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        end = Some(EndReason::IceFailed);
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(key, "rtc error: {e}");
                    end = Some(EndReason::Failed);
                    break;
                }
            }
        }
        if end.is_none() && !v.rtc.is_alive() {
            // No error, yet closed: the peer ended DTLS (a player that closes first).
            end = Some(EndReason::PeerClosed);
        }
        match end {
            Some(reason) => {
                self.end(key, reason);
                false
            }
            None => true,
        }
    }

    fn end(&mut self, key: PeerKey, reason: EndReason) {
        let Some(idx) = self.index.remove(&key) else {
            return;
        };
        let v = self.viewers.swap_remove(idx);
        if let Some(moved) = self.viewers.get(idx) {
            self.index.insert(moved.key, idx);
        }
        self.metrics
            .viewer_removed(&self.streams[v.stream].name, reason);
        tracing::debug!(key, reason = reason.as_str(), "viewer ended");
        self.ended.push(Ended { key, reason });
    }
}
