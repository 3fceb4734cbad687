//! Plays a WHEP stream for a few seconds and says what arrived.
//!
//! ```text
//! cargo run --example whep_play -- http://127.0.0.1:8889/live/whep --seconds 5
//! ```
//!
//! Prints the packet count and rate, the time from the POST to the first packet, and the
//! dominant frequency and level of each channel of the decoded audio.

use anyhow::Context;
use clap::Parser;
use mixcast::client::whep::{play, PlayOptions};
use mixcast::media::analysis::{deinterleave, dominant_frequency, rms};
use mixcast::media::SAMPLE_RATE;
use std::net::IpAddr;
use std::time::Duration;

/// Plays a WHEP stream and reports packets, latency and per-channel frequencies.
#[derive(Parser)]
struct Args {
    /// The WHEP endpoint, e.g. http://127.0.0.1:8889/live/whep
    url: String,
    /// How long to listen once connected.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// A Bearer token for the stream.
    #[arg(long, env = "WHEP_TOKEN")]
    token: Option<String>,
    /// The local address for the UDP socket (announced as our ICE candidate).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Count packets only, do not decode.
    #[arg(long)]
    no_decode: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = Duration::try_from_secs_f64(args.seconds)
        .context("--seconds must be a non-negative number")?;
    let report = play(&PlayOptions {
        url: args.url.clone(),
        token: args.token,
        duration,
        bind: args.bind,
        decode: !args.no_decode,
    })
    .with_context(|| format!("playing {}", args.url))?;

    let rate = report.packets as f64 / duration.as_secs_f64().max(f64::EPSILON);
    println!("session          {}", report.session_url);
    println!(
        "packets          {} ({rate:.1}/s, {} bytes, {} lost)",
        report.packets, report.bytes, report.lost_packets
    );
    match report.first_packet_after {
        Some(t) => println!("first packet     {:.1} ms after the POST", ms(t)),
        None => println!("first packet     none"),
    }
    if let Some(t) = report.connected_after {
        println!("connected        {:.1} ms after the POST", ms(t));
    }
    println!("stereo answer    {}", report.answer_has_stereo_opus());
    if report.disconnected {
        println!("note             the connection dropped before the end");
    }
    if !report.pcm.is_empty() {
        let (left, right) = deinterleave(&report.pcm);
        for (name, channel) in [("left", &left), ("right", &right)] {
            println!(
                "{name:<6}           {:.1} Hz dominant, rms {:.3}",
                dominant_frequency(channel, SAMPLE_RATE),
                rms(channel)
            );
        }
        if report.decode_errors > 0 {
            println!("decode errors    {}", report.decode_errors);
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
