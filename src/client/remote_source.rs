//! The `whep:URL` source: a remote WHEP stream (another mixcast, MediaMTX, any WHEP
//! server) mixed into a stream like any input.
//!
//! A thread of the source's own runs the crate's WHEP client ([`play_into`]) and pushes
//! the decoded audio into a [`PcmFeed`]; the mixer pulls it through the feed's
//! [`FeedSource`], so the mix never waits for the network: while the remote is away the
//! input is silent. The thread keeps the session up: when the remote ends it (a DELETE, a
//! restart) or goes quiet for [`MEDIA_GAP`], it connects again after a backoff that
//! doubles from [`FIRST_RETRY`] up to [`MAX_RETRY`] (reset once audio flows). It ends,
//! DELETEing its session, within [`SINK_POLL`] of the input's removal from the mix.

use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::whep::{play_into, PlayOptions, PlayReport, PlaySink, SINK_POLL};
use super::{endpoint_address, local_address_for};
use crate::media::sources::{feed, FeedSource, PcmFeed, Source, SourceError};
use crate::media::Frame;

/// A session that brings no audio for this long is given up and made again (the remote
/// was killed without a DELETE, or the path broke).
pub const MEDIA_GAP: Duration = Duration::from_secs(2);
/// Wait before the first new attempt after a session ends or fails.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between attempts (short: a restarted remote is heard again within
/// a few seconds).
pub const MAX_RETRY: Duration = Duration::from_secs(2);

/// The mixer's side of a remote stream.
pub struct RemoteSource {
    inner: FeedSource,
}

impl Source for RemoteSource {
    fn fill(&mut self, out: &mut Frame) {
        self.inner.fill(out);
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn underruns(&self) -> u64 {
        self.inner.underruns()
    }
    // Never finished: a remote that goes away may come back.
}

/// Checks `url` (an http or https WHEP endpoint) and starts pulling it.
pub fn open(url: &str) -> Result<RemoteSource, SourceError> {
    let server =
        endpoint_address(url).map_err(|e| SourceError::BadSpec(format!("whep:{url} ({e})")))?;
    let bind = local_address_for(server).map_err(|e| SourceError::Remote {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let (feed, inner) = feed(format!("whep:{url}"));
    let url = url.to_string();
    thread::Builder::new()
        .name("whep-source".into())
        .spawn(move || keep_pulling(url, bind, feed))
        .map_err(|e| SourceError::Thread(e.to_string()))?;
    Ok(RemoteSource { inner })
}

/// The source thread: sessions one after another until the input is removed.
fn keep_pulling(url: String, bind: IpAddr, mut feed: PcmFeed) {
    let opts = PlayOptions {
        url: url.clone(),
        token: None,
        duration: Duration::MAX,
        bind,
        decode: true,
    };
    let mut retry = FIRST_RETRY;
    let mut failures = 0u32;
    let mut heard_before = false;
    while feed.is_connected() {
        let mut sink = FeedSink {
            feed: &mut feed,
            last_audio: None,
            got_audio: false,
            url: &url,
            again: heard_before || failures > 0,
        };
        let result = play_into(&opts, &mut sink);
        let got_audio = sink.got_audio;
        if !feed.is_connected() {
            break;
        }
        if got_audio {
            retry = FIRST_RETRY;
            failures = 0;
            heard_before = true;
        }
        match result {
            Ok(report) if got_audio => tracing::warn!(
                source = %format_args!("whep:{url}"),
                packets = report.packets,
                "remote stream {}; connecting again",
                why_it_ended(&report)
            ),
            result => {
                let e = match result {
                    Ok(report) => format!("the session {}", why_it_ended(&report)),
                    Err(e) => e.to_string(),
                };
                failures += 1;
                // The first failure says why; while the remote stays away, one line every
                // 30 attempts (about a minute) says it still is.
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(
                        source = %format_args!("whep:{url}"),
                        error = %e,
                        attempts = failures,
                        "remote stream unavailable{}; retrying every {} s at most",
                        if heard_before { " again" } else { "" },
                        MAX_RETRY.as_secs()
                    );
                }
            }
        }
        let until = Instant::now() + retry;
        while feed.is_connected() && Instant::now() < until {
            thread::sleep(SINK_POLL.min(until.saturating_duration_since(Instant::now())));
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
    tracing::debug!(source = %format_args!("whep:{url}"), "remote source removed");
}

fn why_it_ended(report: &PlayReport) -> &'static str {
    if report.closed_by_server {
        "closed by the remote"
    } else if report.disconnected {
        "disconnected"
    } else if report.packets > 0 {
        "went quiet"
    } else {
        "sent no audio"
    }
}

/// Pushes a session's audio into the feed and ends the session when the feed is gone or
/// the audio stops.
struct FeedSink<'a> {
    feed: &'a mut PcmFeed,
    /// The last audio, or the first look once connected.
    last_audio: Option<Instant>,
    got_audio: bool,
    url: &'a str,
    /// Not the first attempt: the log says the remote is back.
    again: bool,
}

impl PlaySink for FeedSink<'_> {
    fn opus(&mut self, _packet: &[u8], _lost_before: u64) {}

    fn pcm(&mut self, pcm: &[f32]) {
        self.feed.push(pcm);
        self.last_audio = Some(Instant::now());
        if !self.got_audio {
            tracing::info!(
                source = %format_args!("whep:{}", self.url),
                "remote stream {}",
                if self.again { "heard again" } else { "heard" }
            );
        }
        self.got_audio = true;
    }

    fn keep_going(&mut self, _report: &PlayReport) -> bool {
        let since = *self.last_audio.get_or_insert_with(Instant::now);
        self.feed.is_connected() && since.elapsed() < MEDIA_GAP
    }
}
