//! Encode and decode time of one 20 ms 48 kHz stereo frame of the test signal
//! (440 Hz left, 660 Hz right) at 128 kbit/s.
//!
//! ```text
//! cargo bench --bench opus                                  # mixcast's codec only
//! cargo bench --bench opus --features codec-eval,libopus    # every candidate, side by side
//! ```
//!
//! `mixcast(..)` is `media::opus` (the codec this build selected); the others are the
//! crates compared in docs/codec.md, configured alike (examples/codec_eval/candidates.rs).
//!
//! Measures the benchmark thread's CPU time, not wall time: on a shared machine wall
//! time also counts whoever else held the CPU; on an idle one the two agree (the codecs
//! are single-threaded).

#[path = "../examples/codec_eval/candidates.rs"]
mod candidates;
#[path = "../examples/codec_eval/signal.rs"]
mod signal;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mixcast::media::{opus, Frame, FRAME_LEN};
use std::hint::black_box;

const BITRATE: u32 = 128_000;
/// What `media::opus` is built on in this build.
const MIXCAST: &str = if cfg!(feature = "libopus") {
    "mixcast(libopus)"
} else {
    "mixcast(ropus)"
};

/// Two seconds of the test signal, sounding and silent parts, as frames.
fn frames() -> Vec<Frame> {
    signal::tone(2)
        .chunks_exact(FRAME_LEN)
        .map(|c| {
            let mut f = [0f32; FRAME_LEN];
            f.copy_from_slice(c);
            f
        })
        .collect()
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = f64;
    type Value = f64;
    fn start(&self) -> f64 {
        thread_cpu_ns()
    }
    fn end(&self, start: f64) -> f64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, v: &f64) -> f64 {
        *v
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Shows nanoseconds as µs (every figure here is tens to hundreds of µs).
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v /= 1e3);
        "µs (CPU)"
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per_iter = match *t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) | Throughput::Elements(n) => n,
        } as f64;
        values.iter_mut().for_each(|v| *v = per_iter * 1e9 / *v);
        "frames/s (CPU)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let frames = frames();
    let mut enc_group = c.benchmark_group("encode_20ms_stereo");
    enc_group.throughput(Throughput::Elements(1));

    // mixcast's own wrapper.
    // Cannot fail: 128 kbit/s stereo is a valid configuration of every backend.
    let mut enc = opus::Encoder::new(BITRATE).expect("encoder");
    let mut buf = [0u8; opus::MAX_PACKET];
    let mut i = 0;
    enc_group.bench_function(BenchmarkId::from_parameter(MIXCAST), |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(enc.encode(black_box(&frames[i]), &mut buf).expect("encode"))
        })
    });
    let mut packets = Vec::with_capacity(frames.len());
    let mut enc = opus::Encoder::new(BITRATE).expect("encoder");
    for f in &frames {
        let n = enc.encode(f, &mut buf).expect("encode");
        packets.push(buf[..n].to_vec());
    }

    for cand in candidates::all() {
        let mut enc = (cand.encoder)(BITRATE).expect("encoder");
        let mut i = 0;
        enc_group.bench_function(BenchmarkId::from_parameter(cand.name), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(enc.encode(black_box(&frames[i]), &mut buf).expect("encode"))
            })
        });
    }
    enc_group.finish();

    // Every decoder decodes the same packets: those of mixcast's encoder.
    let mut dec_group = c.benchmark_group("decode_20ms_stereo");
    dec_group.throughput(Throughput::Elements(1));
    let mut dec = opus::Decoder::new().expect("decoder");
    let mut out = [0f32; FRAME_LEN];
    let mut i = 0;
    dec_group.bench_function(BenchmarkId::from_parameter(MIXCAST), |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            black_box(
                dec.decode(black_box(&packets[i]), &mut out)
                    .expect("decode"),
            )
        })
    });
    for cand in candidates::all() {
        let mut dec = (cand.decoder)().expect("decoder");
        let mut i = 0;
        dec_group.bench_function(BenchmarkId::from_parameter(cand.name), |b| {
            b.iter(|| {
                i = (i + 1) % packets.len();
                black_box(
                    dec.decode(black_box(&packets[i]), &mut out)
                        .expect("decode"),
                )
            })
        });
    }
    dec_group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);
