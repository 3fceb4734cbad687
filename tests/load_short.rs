//! The load tool in short mode, as CI runs it: 200 real WHEP viewers (ICE, DTLS, SRTP over
//! UDP on 127.0.0.1) join an in-process server at 100 per second and hold a 5 s window.
//! A correctness check, not a timing one: it fails on any lost packet, failed session or
//! sampled packet that SRTP did not decrypt, and on a viewer whose stream stalled.

use mixcast::client::load::{self, LoadOptions};
use mixcast::config::Config;
use mixcast::server::Server;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const VIEWERS: usize = 200;
const RAMP_PER_SECOND: f64 = 100.0;
const WINDOW: Duration = Duration::from_secs(5);

#[test]
fn two_hundred_viewers_lose_nothing() {
    run_short(Config::loopback_ephemeral());
}

/// The same with two TX threads: the second serves its share of the viewers with the
/// frames the first one mixes, and every viewer hears every packet.
#[test]
fn two_tx_threads_lose_nothing() {
    let report_threads = run_short(Config {
        tx_threads: 2,
        ..Config::loopback_ephemeral()
    });
    let viewers = |t: usize| {
        report_threads
            .iter()
            .find(|(thread, _)| *thread == t)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    // Spread by signalling to the thread with fewer viewers: an even split, give or take
    // the viewers whose end was being counted at the time.
    assert_eq!(
        viewers(0) + viewers(1),
        VIEWERS as u64,
        "{report_threads:?}"
    );
    assert!(
        viewers(0).abs_diff(viewers(1)) <= 2,
        "viewers per TX thread: {report_threads:?}"
    );
}

/// Runs the short load against a server started with `config`; returns the viewers each
/// TX thread owned at the end of the window (`mixcast_tx_thread_viewers`).
fn run_short(config: Config) -> Vec<(usize, u64)> {
    let server = Server::start(config).expect("server starts on loopback");
    let url = format!("http://{}/live/whep", server.http_addr());
    let mut opts = LoadOptions::new(url, VIEWERS, RAMP_PER_SECOND, WINDOW);
    // The server is in this process: its CPU and RSS are not separable; /metrics still is.
    opts.server.metrics_url = Some(format!("http://{}/metrics", server.http_addr()));
    // Dropped with the server below; deleting 200 sessions would only add time.
    opts.delete_sessions = false;
    let stop = AtomicBool::new(false);
    let report = load::run(&opts, &stop).expect("the load runs");
    println!("{}", load::table(&[&report]));
    let threads = thread_viewers(&format!("http://{}/metrics", server.http_addr()));
    server.shutdown();

    assert_eq!(report.failed, 0, "failed sessions: {:?}", report.failures);
    assert_eq!(report.connected, VIEWERS);
    assert_eq!(
        report.packets_lost, 0,
        "{} of {} packets lost ({} viewers)",
        report.packets_lost, report.packets_expected, report.viewers_with_loss
    );
    // Every viewer decrypted at least its first five packets, and every sample decrypted.
    assert!(
        report.rtp_sampled >= 5 * VIEWERS as u64,
        "{}",
        report.rtp_sampled
    );
    assert_eq!(report.decrypt_failures, 0);
    // Loss by sequence number cannot see a stream that stopped: each viewer must also have
    // received at least half of the window's 50 packets per second (a loose bound, so that
    // a busy machine's late ticks do not fail a correctness check).
    let floor = (report.window_seconds * 50.0 * 0.5) as u64;
    for v in &report.per_viewer {
        assert!(
            v.window_received >= floor,
            "viewer {} received {} packets in the window, under {floor}",
            v.index,
            v.window_received
        );
    }
    threads
}

/// `mixcast_tx_thread_viewers{thread="i"} n` lines of the server's metrics.
fn thread_viewers(url: &str) -> Vec<(usize, u64)> {
    let text = ureq::get(url)
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("mixcast_tx_thread_viewers{thread=\"")?;
            let (thread, rest) = rest.split_once("\"} ")?;
            Some((thread.parse().ok()?, rest.trim().parse().ok()?))
        })
        .collect()
}
