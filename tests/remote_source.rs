//! A `whep:URL` source (issue 11): one mixcast process (the remote) plays 1 kHz on stream
//! `remote`; another (the local one) mixes that stream, pulled over WHEP, with its own test
//! tone (440 Hz left). A viewer of the local stream hears both; the remote is killed
//! (SIGKILL, no goodbye): the viewer's stream goes on without a gap and the 440 Hz with
//! it, the 1 kHz falls silent; the remote is started again on the same ports: the 1 kHz is
//! back within 5 s.

#[path = "common/binary.rs"]
mod binary;

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use binary::ServerBinary;
use mixcast::client::whep::{play, PlayOptions, PlayReport};
use mixcast::media::analysis::{deinterleave, Spectrum};
use mixcast::media::SAMPLE_RATE;

const REMOTE_HZ: f32 = 1000.0;
const LOCAL_HZ: f32 = 440.0;

fn write_wav(path: &Path, hz: f64) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..2 * SAMPLE_RATE {
        let x = 0.25 * (2.0 * std::f64::consts::PI * hz * f64::from(i) / 48_000.0).sin();
        let s = (x * f64::from(i16::MAX)).round() as i16;
        wav.write_sample(s).unwrap();
        wav.write_sample(s).unwrap();
    }
    wav.finalize().unwrap();
}

fn free_ports() -> (u16, u16) {
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    (
        t.local_addr().unwrap().port(),
        u.local_addr().unwrap().port(),
    )
}

/// The sample (per channel) of the viewer's audio that arrived first at or after `at`.
fn offset_at(r: &PlayReport, at: Instant) -> usize {
    r.frame_arrivals
        .iter()
        .find(|a| a.at >= at)
        .map(|a| a.offset)
        .unwrap_or(r.pcm.len() / 2)
}

/// RMS (dBFS) of the left channel within ±10 Hz of `hz`, between two sample offsets.
fn level(left: &[f32], from: usize, to: usize, hz: f32) -> f32 {
    let s = Spectrum::new(&left[from..to.min(left.len())], SAMPLE_RATE);
    20.0 * s.band_rms(hz, 20.0).max(1e-9).log10()
}

#[test]
fn a_remote_whep_stream_is_mixed_in_and_comes_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("1k.wav");
    write_wav(&wav, f64::from(REMOTE_HZ));
    let remote_source = format!("remote=file:{}", wav.display());
    let (http, udp) = free_ports();
    let start_remote = || ServerBinary::start_on(http, udp, &["--source", &remote_source], &[]);
    let remote = start_remote();
    let mix_source = format!("mix=whep:http://127.0.0.1:{http}/remote/whep");
    let local = ServerBinary::start(&["--source", "mix=tone", "--source", &mix_source], &[]);

    let url = format!("http://{}/mix/whep", local.http);
    let viewer = std::thread::spawn(move || {
        play(&PlayOptions {
            url,
            token: None,
            duration: Duration::from_secs(17),
            bind: "127.0.0.1".parse().unwrap(),
            decode: true,
        })
    });
    std::thread::sleep(Duration::from_secs(5));
    let killed = Instant::now();
    drop(remote); // SIGKILL
    std::thread::sleep(Duration::from_secs(5));
    let restarted = Instant::now();
    let remote = start_remote();
    let report = viewer.join().unwrap().expect("the viewer plays 17 s");

    assert_eq!(report.lost_packets, 0, "no packet lost");
    assert_eq!(report.rtp_time_jumps, 0, "no jump in the viewer's stream");
    let (left, _) = deinterleave(&report.pcm);
    let rate = SAMPLE_RATE as usize;
    let k = offset_at(&report, killed);
    let r = offset_at(&report, restarted);
    assert!(
        k > 3 * rate && r > k + 4 * rate,
        "kill at {k}, restart at {r}"
    );

    let before = (
        level(&left, k - 3 * rate, k, REMOTE_HZ),
        level(&left, k - 3 * rate, k, LOCAL_HZ),
    );
    println!(
        "before the kill: 1 kHz {:.1} dBFS, 440 Hz {:.1} dBFS",
        before.0, before.1
    );
    assert!(
        before.0 > -20.0 && before.1 > -25.0,
        "both heard: {before:?}"
    );

    // While the remote is away: the local tone in every second, the remote silent.
    for s in 0..4 {
        let from = k + rate / 2 + s * rate;
        let local_db = level(&left, from, from + rate, LOCAL_HZ);
        let remote_db = level(&left, from, from + rate, REMOTE_HZ);
        println!(
            "{:.1} s after the kill: 440 Hz {local_db:.1}, 1 kHz {remote_db:.1} dBFS",
            0.5 + s as f32
        );
        assert!(
            local_db > -25.0,
            "the local tone goes on: {local_db:.1} dBFS"
        );
        assert!(
            remote_db < before.0 - 40.0,
            "the remote is gone: {remote_db:.1} dBFS"
        );
    }

    // Back: the first 100 ms after the restart whose 1 kHz is within 6 dB of before.
    let step = rate / 10;
    let back = (0..)
        .map(|i| r + i * step)
        .take_while(|&from| from + step <= left.len())
        .find(|&from| level(&left, from, from + step, REMOTE_HZ) > before.0 - 6.0)
        .map(|from| (from - r) as f32 / rate as f32);
    println!("the remote is heard again {back:?} s after its restart");
    let back = back.expect("the remote's 1 kHz comes back");
    assert!(back < 5.0, "back after {back:.1} s");

    let log = local.log();
    assert!(
        log.contains("whep:http://127.0.0.1") && log.contains("remote stream"),
        "the local server says what happened to its remote source:\n{log}"
    );
    drop(remote);
}
