//! Measures the latency a mixcast server adds, end to end on loopback: WHIP publisher in,
//! mix, WHEP viewer out.
//!
//! ```text
//! cargo run --release --example latency                       # an in-process server
//! cargo run --release --example latency -- --server http://127.0.0.1:8889 --clicks 40
//! ```
//!
//! A publisher sends a fresh stream a signal that is silent except for a 5 ms click every
//! 500 ms, while a viewer of that stream decodes what it gets. Each click's send time is
//! when its frame's packet left the publisher (plus the click's offset in the frame); its
//! receive time is when the packet of the decoded frame where the click starts arrived at
//! the viewer (plus the onset's offset in that frame). The difference covers both Opus
//! codings, the server's jitter buffer and mix tick, and loopback. Prints one line per
//! figure, then the same as one JSON line.

use anyhow::{bail, Context};
use clap::Parser;
use mixcast::client::whep::{play, FrameArrival, PlayOptions};
use mixcast::client::whip::{PublishOptions, Publisher};
use mixcast::config::Config;
use mixcast::media::opus::{Decoder, Encoder, MAX_PACKET};
use mixcast::media::sources::Source;
use mixcast::media::{Frame, FRAME_LEN, FRAME_SAMPLES, SAMPLE_RATE};
use mixcast::server::Server;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Frames between two clicks (500 ms).
const CLICK_PERIOD: u64 = 25;
/// Silent frames before the first click (1 s: the viewer connects and settles meanwhile).
const LEAD_IN: u64 = 50;
/// Where the click starts in its frame, in samples (6.25 ms in: not on a frame boundary,
/// so the offsets inside frames are part of what is measured).
const CLICK_OFFSET: usize = 300;
/// Click length in samples (5 ms).
const CLICK_SAMPLES: usize = 240;
/// The click: a 2 kHz sine burst of this amplitude on both channels.
const CLICK_AMPLITUDE: f32 = 0.5;
const CLICK_HZ: f32 = 2000.0;
/// A received sample above this (on either channel) is a click's onset. Far above what
/// Opus leaves of silence, far below the click.
const ONSET_THRESHOLD: f32 = 0.1;
/// After an onset, the next one is looked for this much later (half the click period).
const REARM_SAMPLES: usize = SAMPLE_RATE as usize / 4;
/// A click heard more than this after it was sent is not matched to it.
const MAX_DELAY: Duration = Duration::from_millis(400);

/// Measures a server's added latency with clicks.
#[derive(Parser)]
struct Args {
    /// The server's base URL (e.g. http://127.0.0.1:8889); without it, an in-process
    /// server on loopback is started.
    #[arg(long)]
    server: Option<String>,
    /// The stream to publish to (default: a fresh name).
    #[arg(long)]
    stream: Option<String>,
    /// How many clicks to send (one every 500 ms).
    #[arg(long, default_value_t = 20)]
    clicks: u64,
    /// A Bearer token for publishing and playing.
    #[arg(long, env = "MIXCAST_TOKEN")]
    token: Option<String>,
}

/// Silence with a click every [`CLICK_PERIOD`] frames after [`LEAD_IN`].
struct Clicks {
    frame: u64,
    clicks: u64,
}

impl Clicks {
    /// Whether frame `k` carries a click (starting at [`CLICK_OFFSET`]).
    fn has_click(k: u64, clicks: u64) -> bool {
        k >= LEAD_IN
            && (k - LEAD_IN).is_multiple_of(CLICK_PERIOD)
            && (k - LEAD_IN) / CLICK_PERIOD < clicks
    }
}

impl Source for Clicks {
    fn fill(&mut self, out: &mut Frame) {
        out.fill(0.0);
        if Clicks::has_click(self.frame, self.clicks) {
            for n in 0..CLICK_SAMPLES {
                let x = CLICK_AMPLITUDE
                    * (2.0 * std::f32::consts::PI * CLICK_HZ * n as f32 / SAMPLE_RATE as f32).sin();
                let i = 2 * (CLICK_OFFSET + n);
                out[i] = x;
                out[i + 1] = x;
            }
        }
        self.frame += 1;
    }

    fn describe(&self) -> String {
        format!("clicks every {} ms", CLICK_PERIOD * 20)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clicks == 0 {
        bail!("--clicks must be at least 1");
    }
    let (server, base) = match &args.server {
        Some(url) => (None, url.trim_end_matches('/').to_owned()),
        None => {
            let s = Server::start(Config::loopback_ephemeral()).context("starting a server")?;
            let base = format!("http://{}", s.http_addr());
            (Some(s), base)
        }
    };
    let stream = args
        .stream
        .clone()
        .unwrap_or_else(|| format!("latency-{}", std::process::id()));

    let frames = LEAD_IN + args.clicks * CLICK_PERIOD + CLICK_PERIOD;
    let publish_for = Duration::from_millis(20 * frames);
    let mut opts = PublishOptions::new(
        format!("{base}/{stream}/whip"),
        Box::new(Clicks {
            frame: 0,
            clicks: args.clicks,
        }),
        publish_for,
    );
    opts.token = args.token.clone();
    let publisher = Publisher::start(opts).context("publishing")?;
    let viewer = play(&PlayOptions {
        url: format!("{base}/{stream}/whep"),
        token: args.token.clone(),
        // Connected a little after the publisher: past its last click and a bit more.
        duration: publish_for,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    });
    let published = publisher.wait().context("publishing")?;
    let viewed = viewer.context("playing")?;
    if let Some(s) = server {
        s.shutdown();
    }

    let sent: Vec<Instant> = published
        .sent_at
        .iter()
        .filter(|(k, _)| Clicks::has_click(*k, args.clicks))
        .map(|(_, at)| *at + samples(CLICK_OFFSET))
        .collect();
    let heard = onsets(&viewed.pcm, &viewed.frame_arrivals);
    let delays = match_clicks(&sent, &heard);
    let mut ms: Vec<f64> = delays.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);

    println!("clicks sent      {}", sent.len());
    println!(
        "clicks heard     {} (onsets found: {})",
        ms.len(),
        heard.len()
    );
    println!(
        "viewer packets   {} ({} lost)",
        viewed.packets, viewed.lost_packets
    );
    if ms.is_empty() {
        bail!("no click was heard");
    }
    let codec = codec_delay()?;
    let median = percentile(&ms, 0.5);
    let p95 = percentile(&ms, 0.95);
    let (min, max) = (ms[0], ms[ms.len() - 1]);
    println!("latency median   {median:.1} ms");
    println!("latency p95      {p95:.1} ms");
    println!("latency min      {min:.1} ms");
    println!("latency max      {max:.1} ms");
    println!("of which Opus    {codec:.1} ms (two encode/decode passes, measured offline)");
    println!(
        "{}",
        serde_json::json!({
            "clicks_sent": sent.len(),
            "clicks_heard": ms.len(),
            "median_ms": round(median),
            "p95_ms": round(p95),
            "min_ms": round(min),
            "max_ms": round(max),
            "lost_packets": viewed.lost_packets,
            "opus_coding_ms": round(codec),
        })
    );
    Ok(())
}

/// The delay (ms) that Opus coding alone adds to a click: the publisher's encode and the
/// server's decode, then the server's encode and the viewer's decode, run back to back
/// with no network and no buffering.
fn codec_delay() -> anyhow::Result<f64> {
    let mut clicks = Clicks {
        frame: 0,
        clicks: 1,
    };
    let mut passes = [
        (Encoder::new(0)?, Decoder::new()?),
        (Encoder::new(0)?, Decoder::new()?),
    ];
    let mut frame = [0f32; FRAME_LEN];
    let mut packet = [0u8; MAX_PACKET];
    let click_at = LEAD_IN as usize * FRAME_SAMPLES + CLICK_OFFSET;
    for k in 0..LEAD_IN as usize + 5 {
        clicks.fill(&mut frame);
        for (encoder, decoder) in &mut passes {
            let len = encoder.encode(&frame, &mut packet)?;
            decoder.decode(&packet[..len], &mut frame)?;
        }
        let onset = frame
            .chunks_exact(2)
            .position(|s| s[0].abs().max(s[1].abs()) > ONSET_THRESHOLD);
        if let Some(n) = onset.filter(|_| k >= LEAD_IN as usize) {
            let heard_at = k * FRAME_SAMPLES + n;
            return Ok(heard_at.saturating_sub(click_at) as f64 * 1000.0 / f64::from(SAMPLE_RATE));
        }
    }
    bail!("the click did not come through two Opus passes")
}

/// The duration of `n` samples at 48 kHz.
fn samples(n: usize) -> Duration {
    Duration::from_nanos(n as u64 * 1_000_000_000 / u64::from(SAMPLE_RATE))
}

/// When each click's onset arrived: the arrival of the piece where the first sample above
/// the threshold lies, plus that sample's offset in the piece.
fn onsets(pcm: &[f32], arrivals: &[FrameArrival]) -> Vec<Instant> {
    let mut found = Vec::new();
    let mut next_allowed = 0usize;
    for piece in arrivals {
        let end = (piece.offset + piece.samples).min(pcm.len() / 2);
        for n in piece.offset.max(next_allowed)..end {
            let level = pcm[2 * n].abs().max(pcm[2 * n + 1].abs());
            if level > ONSET_THRESHOLD {
                found.push(piece.at + samples(n - piece.offset));
                next_allowed = n + REARM_SAMPLES;
                break;
            }
        }
    }
    found
}

/// Pairs every onset with the latest click sent before it, if recent enough; a click is
/// matched at most once. Returns the delays.
fn match_clicks(sent: &[Instant], heard: &[Instant]) -> Vec<Duration> {
    let mut used = vec![false; sent.len()];
    let mut delays = Vec::new();
    for &h in heard {
        let Some(i) = sent.iter().rposition(|&s| s <= h) else {
            continue;
        };
        let delay = h - sent[i];
        if delay <= MAX_DELAY && !used[i] {
            used[i] = true;
            delays.push(delay);
        }
    }
    delays
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

// The click fits in its frame.
const _: () = assert!(CLICK_OFFSET + CLICK_SAMPLES <= FRAME_SAMPLES);
