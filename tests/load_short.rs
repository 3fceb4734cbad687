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
    let server = Server::start(Config::loopback_ephemeral()).expect("server starts on loopback");
    let url = format!("http://{}/live/whep", server.http_addr());
    let mut opts = LoadOptions::new(url, VIEWERS, RAMP_PER_SECOND, WINDOW);
    // The server is in this process: its CPU and RSS are not separable; /metrics still is.
    opts.server.metrics_url = Some(format!("http://{}/metrics", server.http_addr()));
    // Dropped with the server below; deleting 200 sessions would only add time.
    opts.delete_sessions = false;
    let stop = AtomicBool::new(false);
    let report = load::run(&opts, &stop).expect("the load runs");
    println!("{}", load::table(&[&report]));
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
}
