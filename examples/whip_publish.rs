//! Publishes a tone or an audio file to a WHIP endpoint for a while and says how it went.
//!
//! ```text
//! cargo run --release --example whip_publish -- http://127.0.0.1:8889/mystream/whip --tone 1000 --seconds 10
//! cargo run --release --example whip_publish -- http://127.0.0.1:8889/mystream/whip --file music.mp3
//! ```
//!
//! Then listen at `http://127.0.0.1:8889/mystream/whep` (the web page, or the whep_play
//! example). Without `--tone` or `--file` it sends the built-in test signal (440 Hz left,
//! 660 Hz right, beeping).

use anyhow::Context;
use clap::Parser;
use mixcast::client::whip::{publish, PublishOptions};
use mixcast::media::sources::{FileSource, Source, ToneSource};
use mixcast::media::FRAME_DURATION;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Publishes audio to a WHIP endpoint.
#[derive(Parser)]
struct Args {
    /// The WHIP endpoint, e.g. http://127.0.0.1:8889/mystream/whip
    url: String,
    /// Send a continuous sine of this many hertz on both channels.
    #[arg(long, conflicts_with = "file")]
    tone: Option<u32>,
    /// Send this audio file (mp3, flac, wav, ogg, m4a), looping.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The tone's amplitude (0..1).
    #[arg(long, default_value_t = 0.25)]
    amplitude: f32,
    /// How long to send once connected.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// A Bearer token for the endpoint.
    #[arg(long, env = "WHIP_TOKEN")]
    token: Option<String>,
    /// The local address for the UDP socket (announced as our ICE candidate).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Offer a (silent) sendonly video m-line too, as OBS and FFmpeg do.
    #[arg(long)]
    video: bool,
    /// Opus bitrate in bit/s (0: 128 kbit/s).
    #[arg(long, default_value_t = 0)]
    bitrate: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = Duration::try_from_secs_f64(args.seconds)
        .context("--seconds must be a non-negative number")?;
    let source: Box<dyn Source + Send> = match (&args.file, args.tone) {
        (Some(path), _) => Box::new(
            FileSource::open(std::slice::from_ref(path))
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        (None, Some(hz)) => Box::new(ToneSource::sine(hz, hz, args.amplitude)),
        (None, None) => Box::new(ToneSource::new()),
    };
    let what = source.describe();
    let mut opts = PublishOptions::new(args.url.clone(), source, duration);
    opts.token = args.token;
    opts.bind = args.bind;
    opts.video = args.video;
    opts.bitrate = args.bitrate;
    println!("publishing       {what} to {}", args.url);
    let report = publish(opts).with_context(|| format!("publishing to {}", args.url))?;

    println!("session          {}", report.session_url);
    if let Some(t) = report.connected_after {
        println!("connected        {:.1} ms after the POST", ms(t));
    }
    println!(
        "sent             {} packets, {} bytes ({:.1} kbit/s)",
        report.packets_sent,
        report.bytes_sent,
        report.bytes_sent as f64 * 8.0 / duration.as_secs_f64().max(f64::EPSILON) / 1000.0
    );
    if let Some(origin) = report.origin {
        let mut late: Vec<f64> = report
            .sent_at
            .iter()
            .map(|&(k, at)| ms(at.saturating_duration_since(origin + FRAME_DURATION * k as u32)))
            .collect();
        late.sort_by(f64::total_cmp);
        if let Some(&max) = late.last() {
            println!(
                "pacing           frames left after their due time by {:.2} ms (median), {:.2} ms (p99), {max:.2} ms (max)",
                late[late.len() / 2],
                late[(late.len() * 99 / 100).min(late.len() - 1)],
            );
        }
    }
    if report.send_errors > 0 {
        println!("send errors      {}", report.send_errors);
    }
    if report.disconnected {
        println!("note             the connection dropped before the end");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
