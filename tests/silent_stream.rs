//! A viewer of a silent stream, whose frames are the kept silence packet rather than
//! encodes (`media::mix_encoder`), over real UDP on 127.0.0.1: it gets one packet per 20 ms
//! with continuous sequence numbers and RTP times, all decodable, hears silence, then the
//! tone of a publisher who joins (by FFT per channel), then silence again.

#[path = "common/tone.rs"]
mod tone;

use mixcast::client::whep::{play, PlayOptions, PlayReport};
use mixcast::client::whip::{PublishOptions, Publisher};
use mixcast::config::{Config, StreamConfig};
use mixcast::media::analysis::peak;
use mixcast::media::sources::{SourceSpec, ToneSource};
use mixcast::server::Server;
use mixcast::streams::VideoSource;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The decoded samples of the pieces that arrived within `range`.
fn heard_between(report: &PlayReport, from: Instant, to: Instant) -> Vec<f32> {
    report
        .frame_arrivals
        .iter()
        .filter(|a| a.at >= from && a.at < to)
        .flat_map(|a| {
            report.pcm[2 * a.offset..2 * (a.offset + a.samples)]
                .iter()
                .copied()
        })
        .collect()
}

#[test]
fn a_viewer_of_a_silent_stream_gets_continuous_rtp_then_hears_a_publisher() {
    let mut config = Config::loopback_ephemeral();
    config.streams.push(StreamConfig {
        name: "quiet".into(),
        sources: vec![SourceSpec::Silence.into()],
        video: VideoSource::default(),
    });
    let server = Server::start(config).expect("server starts on loopback");
    let (encodes0, reused0) = (
        server.metrics().mixer_encodes(),
        server.metrics().mixer_silence_reused(),
    );
    let opts = PlayOptions {
        url: format!("http://{}/quiet/whep", server.http_addr()),
        token: None,
        duration: Duration::from_secs(7),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    };
    let viewer = std::thread::spawn(move || play(&opts).expect("the viewer plays"));

    std::thread::sleep(Duration::from_millis(2500));
    let joined = Instant::now();
    let publisher = Publisher::start(PublishOptions::new(
        format!("http://{}/quiet/whip", server.http_addr()),
        Box::new(ToneSource::sine(700, 1100, 0.2)),
        Duration::from_secs(2),
    ))
    .expect("the publisher starts");
    let sent = publisher.wait().expect("the publisher ends");
    let left = Instant::now();
    let report = viewer.join().expect("the viewer thread");
    let (encodes, reused) = (
        server.metrics().mixer_encodes() - encodes0,
        server.metrics().mixer_silence_reused() - reused0,
    );
    println!(
        "{} packets, {} lost, {} RTP time jumps, {} undecodable; publisher sent {}; \
         server: {encodes} encodes, {reused} frames of kept silence",
        report.packets,
        report.lost_packets,
        report.rtp_time_jumps,
        report.decode_errors,
        sent.packets_sent
    );
    assert!(
        report.packets >= 340,
        "one packet per 20 ms: {}",
        report.packets
    );
    assert_eq!(report.lost_packets, 0);
    assert_eq!(
        report.rtp_time_jumps, 0,
        "the media clock runs on through silence"
    );
    assert_eq!(report.decode_errors, 0, "every packet decodes");
    assert!(report.frame_arrivals.iter().all(|a| !a.concealed));

    let before = heard_between(&report, Instant::now() - Duration::from_secs(60), joined);
    assert!(before.len() > 2 * 48_000, "{} samples before", before.len());
    assert_eq!(peak(&before), 0.0, "silence before the publisher");
    let during = heard_between(&report, joined, left);
    tone::check_stereo_tone(&during, 700.0, 1100.0, 1.5).expect("the publisher's tone");
    let after = heard_between(&report, left + Duration::from_millis(300), Instant::now());
    assert!(after.len() > 48_000, "{} samples after", after.len());
    assert!(peak(&after) < 1e-3, "silence after: {}", peak(&after));

    // The stream was silent for about 5 of the 7 s: those frames were not encoded.
    assert!(reused >= 200, "{reused} frames of kept silence");
    server.shutdown();
}
