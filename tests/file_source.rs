//! A stream that plays an audio file: the test writes a WAV at 44.1 kHz with a different
//! tone in each channel, a WHEP viewer on 127.0.0.1 decodes the stream, and each channel
//! must carry its own tone at the right pitch (so the file was resampled to 48 kHz and its
//! channels kept in order).

use mixcast::client::whep::{play, PlayOptions};
use mixcast::config::{Config, StreamConfig};
use mixcast::media::analysis::{deinterleave, dominant_frequency, rms};
use mixcast::media::sources::SourceSpec;
use mixcast::media::SAMPLE_RATE;
use mixcast::server::Server;
use std::f32::consts::PI;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

const FILE_RATE: u32 = 44_100;
const LEFT_HZ: f32 = 1000.0;
const RIGHT_HZ: f32 = 1500.0;
const AMPLITUDE: f32 = 0.5;

/// Writes one second of 16-bit stereo: `LEFT_HZ` left, `RIGHT_HZ` right.
fn write_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: FILE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create the WAV");
    let scale = f32::from(i16::MAX);
    for i in 0..FILE_RATE {
        let t = i as f32 / FILE_RATE as f32;
        for hz in [LEFT_HZ, RIGHT_HZ] {
            let sample = AMPLITUDE * (2.0 * PI * hz * t).sin();
            writer
                .write_sample((sample * scale) as i16)
                .expect("write a sample");
        }
    }
    writer.finalize().expect("finish the WAV");
}

#[test]
fn a_viewer_hears_the_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("tones.wav");
    write_wav(&path);

    let mut config = Config::loopback_ephemeral();
    // Only the file stream: `live`'s mix would only add load.
    config.streams = vec![StreamConfig {
        name: "music".into(),
        sources: vec![SourceSpec::Files(vec![path]).into()],
        video: Default::default(),
    }];
    let server = Server::start(config).expect("server starts with a file stream");

    let report = play(&PlayOptions {
        url: format!("http://{}/music/whep", server.http_addr()),
        token: None,
        duration: Duration::from_secs(2),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        decode: true,
    })
    .expect("plays the file stream");
    assert!(report.packets >= 90, "{} packets in 2 s", report.packets);
    assert_eq!(report.decode_errors, 0);

    let (left, right) = deinterleave(&report.pcm);
    // Skip the decoder's start-up.
    let skip = (SAMPLE_RATE / 10) as usize;
    for (name, channel, hz) in [("left", &left, LEFT_HZ), ("right", &right, RIGHT_HZ)] {
        let channel = channel.get(skip..).unwrap_or_default();
        let found = dominant_frequency(channel, SAMPLE_RATE);
        assert!(
            (found - hz).abs() <= 10.0,
            "{name}: dominant {found} Hz, expected {hz} Hz"
        );
        // A sine of amplitude 0.5 (the file loops, so it never stops): rms ≈ 0.354.
        let level = rms(channel);
        assert!(
            (0.25..0.45).contains(&level),
            "{name}: rms {level}, expected about 0.354"
        );
    }
    server.shutdown();
}
