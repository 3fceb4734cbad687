//! The server's side of one DTLS handshake, as every WHEP viewer and WHIP publisher costs
//! it: certificate generation (str0m makes one per `Rtc`), the session, and every call the
//! handshake makes into it, with a browser-like peer (dimpl, str0m's default stack, with
//! a P-256 certificate) whose own time is not counted.
//!
//! - `server/dimpl`: str0m's default DTLS (what mixcast used before);
//! - `server/openssl`: mixcast's `net::dtls` provider (OpenSSL, vendored).
//!
//! `cargo bench --bench dtls_handshake`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use str0m::crypto::dtls::{DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion};

/// Moves `from`'s datagrams to `to` until `from` has nothing more; true when it connected.
/// The time spent inside `from` is added to `spent` when `timed`.
fn pump(
    from: &mut dyn DtlsInstance,
    to: &mut dyn DtlsInstance,
    buf: &mut [u8],
    timed: bool,
    spent: &mut Duration,
) -> (bool, bool) {
    let (mut connected, mut moved) = (false, false);
    loop {
        let t = Instant::now();
        let out = from.poll_output(buf);
        let packet = match out {
            DtlsOutput::Packet(p) => Some(p.to_vec()),
            DtlsOutput::Connected => {
                connected = true;
                None
            }
            DtlsOutput::Timeout(_) => {
                if timed {
                    *spent += t.elapsed();
                }
                return (connected, moved);
            }
            _ => None,
        };
        if timed {
            *spent += t.elapsed();
        }
        if let Some(p) = packet {
            moved = true;
            let t = Instant::now();
            let _ = to.handle_packet(&p);
            if !timed {
                *spent += t.elapsed();
            }
        }
    }
}

/// One handshake; returns the time spent in the server.
fn handshake(server_provider: &dyn DtlsProvider, client_provider: &dyn DtlsProvider) -> Duration {
    let now = Instant::now();
    let client_cert = client_provider.generate_certificate().unwrap();
    let mut client = client_provider
        .new_dtls(&client_cert, now, DtlsVersion::Dtls12, Some(1150))
        .unwrap();
    let start = Instant::now();
    let cert = server_provider.generate_certificate().unwrap();
    let mut server = server_provider
        .new_dtls(&cert, now, DtlsVersion::Dtls12, Some(1150))
        .unwrap();
    server.set_active(false);
    server.handle_timeout(now).unwrap();
    let mut spent = start.elapsed();
    client.set_active(true);
    client.handle_timeout(now).unwrap();
    let mut buf = vec![0u8; 4096];
    let (mut c_up, mut s_up) = (false, false);
    for _ in 0..20 {
        // The client's output, timing only the server's handling of it; then the server's
        // output, timing only the server's polls.
        let (c, _) = pump(&mut *client, &mut *server, &mut buf, false, &mut spent);
        let (s, _) = pump(&mut *server, &mut *client, &mut buf, true, &mut spent);
        c_up |= c;
        s_up |= s;
        if c_up && s_up {
            break;
        }
    }
    assert!(c_up && s_up, "the handshake completed");
    spent
}

fn dtls_handshake(c: &mut Criterion) {
    let stock = str0m::crypto::from_feature_flags();
    let ours = mixcast::net::dtls::crypto_provider();
    let mut group = c.benchmark_group("dtls handshake");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(6));
    for (name, server) in [
        ("dimpl", stock.dtls_provider),
        ("openssl", ours.dtls_provider),
    ] {
        group.bench_function(format!("server/{name}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| handshake(server, stock.dtls_provider))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dtls_handshake);
criterion_main!(benches);
