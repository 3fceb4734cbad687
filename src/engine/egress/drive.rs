//! The single-mutation rule: [`Egress::drain`] polls a peer's `Rtc` to `Timeout` after
//! every mutation and acts on its events; [`Egress::end`] removes an ended peer.

use std::cmp::Reverse;
use std::time::Instant;

use str0m::media::Direction;
use str0m::media::MediaKind;
use str0m::Event;
use str0m::IceConnectionState;
use str0m::Output;

use super::video::forwards;
use super::video::VideoFrame;
use super::viewer::Role;
use super::Egress;
use super::Ended;
use super::Tally;
use crate::engine::EndReason;
use crate::engine::PeerKey;
use crate::engine::Transmitter;

impl Egress {
    /// Drains peer `idx` to `Timeout`. Returns false if the peer ended (and was removed,
    /// so `idx` now holds another peer or is past the end).
    pub(super) fn drain(&mut self, idx: usize, now: Instant, tx: &mut impl Transmitter) -> bool {
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
                    // str0m sends DTLS and RTCP (never STUN, first byte 0..=3) only on the
                    // nominated pair: where direct audio goes too.
                    if t.contents.first().is_some_and(|&b| b > 3) {
                        v.media_path = Some((t.source, t.destination));
                    }
                    tx.send(t.source, t.destination, &t.contents);
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        v.connected = true;
                        self.connected.push(key);
                        match &mut v.role {
                            Role::Publisher(p) => p.connected_at = Some(now),
                            Role::Viewer { video: Some(_), .. } => {
                                // A new viewer of video needs a keyframe to start.
                                if let Some(s) = self.streams[v.stream].as_mut() {
                                    s.keyframe_wanted = true;
                                }
                            }
                            Role::Viewer { .. } => {}
                        }
                        tracing::debug!(key, "peer connected");
                    }
                    Event::MediaEgressStats(st) => {
                        // Loss as the viewer reports it: for its end line and the stream's
                        // counter (the report is cumulative; the counter takes the rise).
                        if let (
                            Role::Viewer {
                                audio: Some((amid, _)),
                                ..
                            },
                            Some(remote),
                        ) = (&v.role, &st.remote)
                        {
                            if st.mid == *amid {
                                let rise = remote
                                    .packets_lost
                                    .saturating_sub(v.reported_lost.unwrap_or(0));
                                v.reported_lost = Some(remote.packets_lost);
                                if rise > 0 {
                                    if let Some(s) = self.streams[v.stream].as_ref() {
                                        self.metrics.stream_viewer_loss(&s.name, rise);
                                    }
                                }
                            }
                        }
                        // A viewer's receiver reports: its simulcast layer follows its loss.
                        if let (
                            Role::Viewer {
                                video: Some(mid),
                                layering,
                                ..
                            },
                            Some(loss),
                        ) = (&mut v.role, st.loss)
                        {
                            if st.mid == *mid {
                                if let Some(s) = self.streams[v.stream].as_mut() {
                                    s.on_viewer_loss(key, layering, loss, now);
                                }
                            }
                        }
                    }
                    Event::KeyframeRequest(_) => {
                        // A viewer lost video: coalesced into one request to the source.
                        if let Some(s) = self.streams[v.stream].as_mut() {
                            s.keyframe_wanted = true;
                        }
                    }
                    Event::MediaAdded(m) => match &mut v.role {
                        Role::Viewer { video, .. } if m.kind == MediaKind::Video => {
                            *video = Some(m.mid);
                            // str0m may report the media after Connected: a connected
                            // viewer of video needs a keyframe to start either way.
                            if v.connected {
                                if let Some(s) = self.streams[v.stream].as_mut() {
                                    s.keyframe_wanted = true;
                                }
                            }
                        }
                        Role::Publisher(p) if m.kind == MediaKind::Video => {
                            p.video = Some(m.mid);
                            p.video_layers = m
                                .simulcast
                                .map(|s| s.recv.iter().map(|l| l.rid).collect())
                                .unwrap_or_default();
                        }
                        Role::Viewer { audio, .. } if m.kind == MediaKind::Audio => {
                            let pt = v.rtc.writer(m.mid).and_then(|w| {
                                w.payload_params()
                                    .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                                    .map(|p| p.pt())
                            });
                            *audio = pt.map(|pt| (m.mid, pt));
                        }
                        Role::Publisher(p) if m.kind == MediaKind::Audio => {
                            p.audio = Some(m.mid);
                            // A two-way publisher (`sendrecv` audio, a browser's default
                            // transceiver) hears its mix-minus on the same m-line.
                            if m.direction == Direction::SendRecv && v.minus.is_none() {
                                let pt = v.rtc.writer(m.mid).and_then(|w| {
                                    w.payload_params()
                                        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                                        .map(|p| p.pt())
                                });
                                if let (Some(pt), Some(s)) = (pt, self.streams[v.stream].as_mut()) {
                                    match s.talkers.add(&mut s.mixer, p.input) {
                                        Ok(()) => {
                                            p.talkback = Some((m.mid, pt));
                                            v.minus = Some(p.input);
                                            tracing::info!(
                                                key,
                                                stream = %s.name,
                                                "two-way publisher: it hears the mix minus itself"
                                            );
                                        }
                                        Err(e) => tracing::warn!(key, "mix-minus encoder: {e}"),
                                    }
                                }
                            }
                        }
                        _ => {}
                    },
                    Event::MediaData(d) => {
                        if let Role::Publisher(p) = &mut v.role {
                            p.last_media = Some(now);
                            p.media_seen = true;
                            self.metrics
                                .media_received
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if self.tick_sent.len() <= v.stream {
                                self.tick_sent.resize(v.stream + 1, Default::default());
                            }
                            self.tick_sent[v.stream].received += d.data.len() as u64;
                            if Some(d.mid) == p.audio {
                                // Opus: one packet per MediaData (str0m's audio reordering
                                // is off; the jitter buffer orders and conceals).
                                let seq = d.seq_range.start().as_u16();
                                let ts = d.time.numer() as u32;
                                p.feed.push(seq, ts, &d.data, now);
                                p.sync.on_audio(d.last_sender_info.as_ref());
                            } else if Some(d.mid) == p.video {
                                let s = self.streams[v.stream].as_mut().expect("live stream slot");
                                let forwarded = forwards(s, key, p, &d, &self.directory);
                                // Every video publisher is followed, so that one taking over
                                // as the source is in sync from its first frame. Each
                                // simulcast layer has its own RTP clock and reports.
                                let slot = p
                                    .video_layers
                                    .iter()
                                    .position(|r| Some(*r) == d.rid)
                                    .unwrap_or(0);
                                let wallclock = p.sync.on_video(
                                    slot,
                                    d.time,
                                    d.last_sender_info.as_ref(),
                                    d.network_time,
                                );
                                if let (Some((0, _)), Some(id), Some(r)) =
                                    (forwarded, s.recording, &mut self.recorder)
                                {
                                    r.video(
                                        id,
                                        &s.name,
                                        d.params.spec().codec,
                                        d.is_keyframe(),
                                        d.time,
                                        &d.data,
                                    );
                                }
                                if let Some((layer, layers)) = forwarded {
                                    self.video_out.push(VideoFrame {
                                        stream: v.stream,
                                        from: key,
                                        layer,
                                        layers,
                                        keyframe: d.is_keyframe(),
                                        params: d.params,
                                        time: d.time,
                                        network_time: wallclock,
                                        data: d.data,
                                    });
                                }
                                p.video_frames += 1;
                            }
                        }
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        end = Some(EndReason::IceFailed);
                    }
                    Event::IceConnectionStateChange(
                        IceConnectionState::Connected | IceConnectionState::Completed,
                    ) => {
                        // After an ICE restart's retirement, up again means str0m sends on
                        // the new pair: direct audio follows it now rather than at str0m's
                        // next DTLS or RTCP packet.
                        if let Some(path) = v.restart.as_ref().and_then(|r| r.new_path()) {
                            v.media_path = Some(path);
                            v.restart = None;
                            tracing::debug!(key, to = %path.1, "ICE restart: media on the new pair");
                        }
                    }
                    Event::RawPacket(raw) => {
                        // An audio-only viewer's receiver reports (raw RTCP is on for those
                        // only, see `offer::AUDIO_VIEWER_RAW_RTCP`): str0m keeps no stats
                        // of a stream it did not send itself, as on the direct path.
                        if let Some(lost) = reported_loss(&raw) {
                            let rise = lost.saturating_sub(v.reported_lost.unwrap_or(0));
                            v.reported_lost = Some(lost);
                            if rise > 0 {
                                if let Some(s) = self.streams[v.stream].as_ref() {
                                    self.metrics.stream_viewer_loss(&s.name, rise);
                                }
                            }
                        }
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

    pub(super) fn end(&mut self, key: PeerKey, reason: EndReason) {
        let Some(idx) = self.index.remove(&key) else {
            return;
        };
        let v = self.viewers.swap_remove(idx);
        if let Some(moved) = self.viewers.get(idx) {
            self.index.insert(moved.key, idx);
        }
        // Dropping a publisher drops its feed: its input fades out and leaves the mix.
        let s = self.streams[v.stream].as_mut().expect("live stream slot");
        if let Some(input) = v.minus {
            s.talkers.release(&mut s.mixer, input);
        }
        let mut tally = Tally {
            packets: v.sent_packets,
            lost: v.reported_lost,
        };
        match &v.role {
            Role::Viewer { .. } => self.metrics.viewer_removed(&s.name, reason),
            Role::Publisher(p) => {
                if s.video_source.as_ref().is_some_and(|f| f.key == key) {
                    s.video_source = None;
                    self.directory.set_video(&s.name, None);
                }
                s.publishers = s.publishers.saturating_sub(1);
                self.directory.set_publishers(&s.name, s.publishers);
                self.metrics.publisher_removed(&s.name, reason);
                let st = p.feed.monitor().stats();
                tally = Tally {
                    packets: st.packets,
                    lost: Some(st.lost),
                };
                tracing::info!(
                    key,
                    stream = %s.name,
                    reason = reason.as_str(),
                    packets = st.packets,
                    lost = st.lost,
                    fec_recovered = st.fec_recovered,
                    skipped = st.skipped,
                    concealed = st.concealed,
                    concealed_at_end = st.concealed_at_end,
                    late = st.late,
                    drift_fixes = st.dropped_for_drift + st.inserted_for_drift,
                    delay_ms = st.target_delay.as_millis() as u64,
                    video_frames = p.video_frames,
                    "publisher left"
                );
            }
        }
        tracing::debug!(key, reason = reason.as_str(), "peer ended");
        self.ended.push(Ended { key, reason, tally });
    }
}

/// The cumulative loss a receiver report (or a sender report's report blocks) gives for the
/// viewer's one send stream. RFC 3550 makes the count a signed 24-bit number (duplicates can
/// drive it below zero): read as none lost then.
fn reported_loss(raw: &str0m::rtp::RawPacket) -> Option<u64> {
    use str0m::rtp::rtcp::Rtcp;
    let str0m::rtp::RawPacket::RtcpRx(rtcp) = raw else {
        return None;
    };
    let reports = match rtcp {
        Rtcp::ReceiverReport(rr) => &rr.reports,
        Rtcp::SenderReport(sr) => &sr.reports,
        _ => return None,
    };
    reports.iter().next().map(|r| {
        let lost = r.packets_lost & 0x00ff_ffff;
        if lost & 0x0080_0000 != 0 {
            0
        } else {
            u64::from(lost)
        }
    })
}
