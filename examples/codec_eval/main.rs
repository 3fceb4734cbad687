//! Compares the Opus implementations mixcast could use (see docs/codec.md).
//!
//! For every encoder: encode the built-in test signal (440 Hz left, 660 Hz right) at
//! 128 kbit/s, write it as an Ogg Opus file (for the browser check, `browser.sh`),
//! and decode it with every decoder (cross-decoding included): dominant frequency and
//! separation per channel, silence gaps, and one concealed (lost) frame.
//!
//! ```text
//! cargo run --release --example codec_eval --features codec-eval,libopus -- [OUT_DIR]
//! ```

mod candidates;
mod signal;

use candidates::{Candidate, FRAME, FRAME_LEN};
use signal::RATE;
use std::fmt::Write as _;

const SECONDS: usize = 4;
const BITRATE: u32 = 128_000;
/// Largest packet we let an encoder write.
const MAX_PACKET: usize = 1500;

fn main() -> anyhow::Result<()> {
    let out_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/codec-eval".to_string());
    std::fs::create_dir_all(&out_dir)?;
    let pcm = signal::tone(SECONDS);
    let cands = candidates::all();
    anyhow::ensure!(
        !cands.is_empty(),
        "build with --features codec-eval and/or libopus"
    );

    let mut table = String::new();
    writeln!(
        table,
        "| encoder | decoder | L Hz (worst) | R Hz (worst) | L sep dB (min) | R sep dB (min) | L/R RMS | gap RMS | ok |"
    )?;
    writeln!(table, "|---|---|---|---|---|---|---|---|---|")?;

    let mut streams: Vec<(&Candidate, Vec<Vec<u8>>)> = Vec::new();
    for enc in &cands {
        match encode_all(enc, &pcm) {
            Ok(packets) => {
                let bytes: usize = packets.iter().map(Vec::len).sum();
                let kbps = bytes as f64 * 8.0 / SECONDS as f64 / 1000.0;
                let toc = packets[10][0];
                println!(
                    "{:8} encoder: {} packets, {:.1} kbit/s, TOC config {} stereo {} (first 3 sizes {:?})",
                    enc.name,
                    packets.len(),
                    kbps,
                    toc >> 3,
                    toc & 0x04 != 0,
                    packets.iter().take(3).map(Vec::len).collect::<Vec<_>>()
                );
                let path = format!("{out_dir}/{}.opus", enc.name);
                write_ogg_opus(&path, &packets)?;
                streams.push((enc, packets));
            }
            Err(e) => println!("{:8} encoder FAILED: {e}", enc.name),
        }
    }

    for (enc, packets) in &streams {
        for dec in &cands {
            let row = match decode_all(dec, packets) {
                Ok(out) => judge(&out),
                Err(e) => format!("decode error: {e} | | | | | | no |"),
            };
            writeln!(table, "| {} | {} | {row}", enc.name, dec.name)?;
        }
    }
    println!("\n{table}");

    // Quality: SNR of each encoder's stream decoded by the reference decoder (the first
    // candidate, libopus when built in) against the input, at the best delay.
    let ref_dec = &cands[0];
    println!(
        "Encoder SNR against the input, decoded by {}:",
        ref_dec.name
    );
    for (enc, packets) in &streams {
        match decode_all(ref_dec, packets) {
            Ok(out) => {
                let (lag, snr) = best_snr(&pcm, &out);
                println!("  {:8} {snr:.1} dB (delay {lag} samples)", enc.name);
            }
            Err(e) => println!("  {:8} error: {e}", enc.name),
        }
    }
    let music = signal::chords(SECONDS);
    println!(
        "Encoder SNR on a chord signal (signal::chords), decoded by {}:",
        ref_dec.name
    );
    for enc in &cands {
        let r = encode_all(enc, &music).and_then(|p| {
            let kbps = p.iter().map(Vec::len).sum::<usize>() as f64 * 8.0 / SECONDS as f64 / 1e3;
            decode_all(ref_dec, &p).map(|out| (kbps, best_snr(&music, &out)))
        });
        match r {
            Ok((kbps, (lag, snr))) => {
                println!(
                    "  {:8} {snr:.1} dB (delay {lag}), {kbps:.1} kbit/s",
                    enc.name
                )
            }
            Err(e) => println!("  {:8} error: {e}", enc.name),
        }
    }
    // Decoder agreement: each decoder's output against the reference decoder's, same packets.
    println!(
        "Decoder output against {}'s on the same packets (SNR, dB):",
        ref_dec.name
    );
    for (enc, packets) in &streams {
        let Ok(reference) = decode_all(ref_dec, packets) else {
            continue;
        };
        let mut line = format!("  {:8} stream:", enc.name);
        for dec in &cands {
            match decode_all(dec, packets) {
                Ok(out) => write!(line, " {} {:.1}", dec.name, snr_db(&reference, &out, 0))?,
                Err(e) => write!(line, " {} error {e}", dec.name)?,
            }
        }
        println!("{line}");
    }
    // Robustness: garbage and damaged packets must give errors, never panics.
    println!("Decoders fed {FUZZ_PACKETS} random and {FUZZ_PACKETS} damaged packets:");
    for dec in &cands {
        println!("  {:8} {}", dec.name, fuzz(dec, &streams[0].1));
    }
    println!("Encoders fed out-of-range input (±4.0, NaN, ±inf):");
    for enc in &cands {
        println!("  {:8} {}", enc.name, abuse_encoder(enc));
    }

    // Timing, interleaved (benches/opus.rs is the criterion version, one after another).
    println!(
        "CPU time per 20 ms stereo frame, {TIMING_PASSES} interleaved passes over {SECONDS} s \
         (µs, min / median; ratio of the medians to {}'s):",
        cands[0].name
    );
    let times = interleaved_timing(&cands, &pcm, &streams[0].1);
    for (c, t) in cands.iter().zip(&times) {
        println!(
            "  {:8} encode {:6.1} / {:6.1} ({:.2}x)   decode {:6.1} / {:6.1} ({:.2}x)",
            c.name,
            t[0],
            t[1],
            t[1] / times[0][1],
            t[2],
            t[3],
            t[3] / times[0][3]
        );
    }

    // Concealment: decode 1 s of the reference stream, lose the next packet, conceal it.
    let (ref_enc, ref_packets) = &streams[0];
    println!("Concealment of one lost frame in {}'s stream (RMS of the concealed frame / RMS of the frame before):", ref_enc.name);
    for dec in &cands {
        match conceal_check(dec, ref_packets) {
            Ok((l, r)) => println!("  {:8} L {:.2}  R {:.2}", dec.name, l, r),
            Err(e) => println!("  {:8} error: {e}", dec.name),
        }
    }
    Ok(())
}

/// This thread's CPU time in µs: unlike wall time, it leaves out the time other processes
/// hold the CPU (this machine is shared).
fn thread_cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

/// Encode and decode CPU time per frame (µs), measured interleaved: every pass times
/// each candidate in turn, so whatever else the machine does hits all of them alike.
/// Returns, per candidate, (encode min, encode median, decode min, decode median).
fn interleaved_timing(cands: &[Candidate], pcm: &[f32], packets: &[Vec<u8>]) -> Vec<[f64; 4]> {
    let frames: Vec<&[f32]> = pcm.chunks_exact(FRAME_LEN).collect();
    let mut enc_t = vec![Vec::new(); cands.len()];
    let mut dec_t = vec![Vec::new(); cands.len()];
    let mut buf = [0u8; MAX_PACKET];
    let mut out = [0f32; FRAME_LEN];
    for _ in 0..TIMING_PASSES {
        for (k, c) in cands.iter().enumerate() {
            let (Ok(mut enc), Ok(mut dec)) = ((c.encoder)(BITRATE), (c.decoder)()) else {
                continue;
            };
            let t = thread_cpu_us();
            for f in &frames {
                std::hint::black_box(enc.encode(f, &mut buf).ok());
            }
            enc_t[k].push((thread_cpu_us() - t) / frames.len() as f64);
            let t = thread_cpu_us();
            for p in packets {
                std::hint::black_box(dec.decode(p, &mut out).ok());
            }
            dec_t[k].push((thread_cpu_us() - t) / packets.len() as f64);
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (
            v.first().copied().unwrap_or(f64::NAN),
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN),
        )
    };
    enc_t
        .iter_mut()
        .zip(dec_t.iter_mut())
        .map(|(e, d)| {
            let (emin, emed) = stats(e);
            let (dmin, dmed) = stats(d);
            [emin, emed, dmin, dmed]
        })
        .collect()
}

const TIMING_PASSES: usize = 30;

const FUZZ_PACKETS: usize = 20_000;

/// A tiny deterministic PRNG (xorshift64*), so runs are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Feeds random packets and valid packets with flipped bytes or cut short; counts
/// results, errors and panics.
fn fuzz(c: &Candidate, valid: &[Vec<u8>]) -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut err, mut panics, mut bad_len) = (0, 0, 0, 0);
    let mut frame = [0f32; FRAME_LEN];
    let Ok(mut dec) = (c.decoder)() else {
        return "no decoder".into();
    };
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..2 * FUZZ_PACKETS {
        let packet: Vec<u8> = if i < FUZZ_PACKETS {
            let len = 1 + (rng.next() % 1275) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut p = valid[(rng.next() as usize) % valid.len()].clone();
            for _ in 0..1 + rng.next() % 8 {
                let at = (rng.next() as usize) % p.len();
                p[at] ^= 1 << (rng.next() % 8);
            }
            if rng.next().is_multiple_of(4) {
                let keep = 1 + (rng.next() as usize) % p.len();
                p.truncate(keep);
            }
            p
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dec.decode(&packet, &mut frame)
        }));
        match r {
            Ok(Ok(n)) if n <= FRAME => ok += 1,
            Ok(Ok(_)) => bad_len += 1,
            Ok(Err(_)) => err += 1,
            Err(_) => {
                panics += 1;
                // A panic may leave the decoder inconsistent: start a fresh one.
                match (c.decoder)() {
                    Ok(d) => dec = d,
                    Err(_) => break,
                }
            }
        }
    }
    std::panic::set_hook(prev);
    format!("{ok} decoded, {err} rejected, {bad_len} oversized, {panics} PANICS")
}

/// Out-of-range input must not panic the encoder (the mixer clamps, but be sure).
fn abuse_encoder(c: &Candidate) -> String {
    let Ok(mut enc) = (c.encoder)(BITRATE) else {
        return "no encoder".into();
    };
    let mut buf = [0u8; MAX_PACKET];
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    for (name, v) in [
        ("4.0", 4.0f32),
        ("-4.0", -4.0),
        ("NaN", f32::NAN),
        ("inf", f32::INFINITY),
    ] {
        let frame = vec![v; FRAME_LEN];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            enc.encode(&frame, &mut buf)
        }));
        report.push(match r {
            Ok(Ok(n)) => format!("{name}: {n} B"),
            Ok(Err(e)) => format!("{name}: error {e}"),
            Err(_) => {
                if let Ok(e) = (c.encoder)(BITRATE) {
                    enc = e;
                }
                format!("{name}: PANIC")
            }
        });
    }
    std::panic::set_hook(prev);
    report.join(", ")
}

/// SNR of `b` against `a` (interleaved stereo), `b` delayed by `lag` samples per channel.
fn snr_db(a: &[f32], b: &[f32], lag: usize) -> f32 {
    let n = (a.len() / 2).min(b.len() / 2 - lag);
    let (mut sig, mut noise) = (0f64, 0f64);
    for i in 0..n * 2 {
        let (x, y) = (f64::from(a[i]), f64::from(b[i + lag * 2]));
        sig += x * x;
        noise += (x - y) * (x - y);
    }
    (10.0 * (sig / noise.max(1e-30)).log10()) as f32
}

/// The delay (samples per channel, 0..1000) that gives the best SNR, and that SNR.
fn best_snr(input: &[f32], out: &[f32]) -> (usize, f32) {
    (0..1000)
        .map(|lag| (lag, snr_db(input, out, lag)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f32::NAN))
}

fn encode_all(c: &Candidate, pcm: &[f32]) -> Result<Vec<Vec<u8>>, String> {
    let mut enc = (c.encoder)(BITRATE)?;
    let mut buf = [0u8; MAX_PACKET];
    pcm.chunks_exact(FRAME_LEN)
        .map(|frame| {
            let n = enc.encode(frame, &mut buf)?;
            Ok(buf[..n].to_vec())
        })
        .collect()
}

fn decode_all(c: &Candidate, packets: &[Vec<u8>]) -> Result<Vec<f32>, String> {
    let mut dec = (c.decoder)()?;
    let mut out = Vec::with_capacity(packets.len() * FRAME_LEN);
    let mut frame = [0f32; FRAME_LEN];
    for p in packets {
        let n = dec.decode(p, &mut frame)?;
        if n != FRAME {
            return Err(format!("decoded {n} samples per channel, expected {FRAME}"));
        }
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

/// One table row: worst case over the sounding 100..700 ms of every second.
fn judge(out: &[f32]) -> String {
    let (mut lf, mut rf) = (440.0f32, 660.0f32);
    let (mut ls, mut rs) = (f32::INFINITY, f32::INFINITY);
    let (mut lr, mut rr) = (0.0f32, 0.0f32);
    let mut gap = 0.0f32;
    for s in 0..SECONDS {
        let (from, to) = (s * RATE + RATE / 10, s * RATE + 7 * RATE / 10);
        let l = signal::analyse(out, 0, from, to, 440.0, 660.0);
        let r = signal::analyse(out, 1, from, to, 660.0, 440.0);
        if (l.freq - 440.0).abs() > (lf - 440.0).abs() {
            lf = l.freq;
        }
        if (r.freq - 660.0).abs() > (rf - 660.0).abs() {
            rf = r.freq;
        }
        ls = ls.min(l.separation_db);
        rs = rs.min(r.separation_db);
        lr = lr.max(l.rms);
        rr = rr.max(r.rms);
        let (gf, gt) = (s * RATE + 85 * RATE / 100, s * RATE + 95 * RATE / 100);
        gap = gap.max(signal::rms(out, 0, gf, gt).max(signal::rms(out, 1, gf, gt)));
    }
    let ok = (lf - 440.0).abs() < 2.0
        && (rf - 660.0).abs() < 2.0
        && ls > 30.0
        && rs > 30.0
        && gap < 0.01
        && lr > 0.12
        && rr > 0.12;
    format!(
        "{lf:.1} | {rf:.1} | {ls:.0} | {rs:.0} | {lr:.3}/{rr:.3} | {gap:.4} | {} |",
        if ok { "yes" } else { "NO" }
    )
}

/// RMS of a concealed frame relative to the last decoded frame, per channel.
fn conceal_check(c: &Candidate, packets: &[Vec<u8>]) -> Result<(f32, f32), String> {
    let mut dec = (c.decoder)()?;
    let mut frame = [0f32; FRAME_LEN];
    // Frame 25 ends at 520 ms: well inside the sounding part of the first second.
    for p in &packets[..25] {
        dec.decode(p, &mut frame)?;
    }
    let before = (
        signal::rms(&frame, 0, 0, FRAME),
        signal::rms(&frame, 1, 0, FRAME),
    );
    let n = dec.decode(&[], &mut frame)?;
    if n != FRAME {
        return Err(format!("concealed {n} samples per channel"));
    }
    Ok((
        signal::rms(&frame, 0, 0, FRAME) / before.0,
        signal::rms(&frame, 1, 0, FRAME) / before.1,
    ))
}

/// Writes `packets` (20 ms each, 48 kHz stereo) as an Ogg Opus file (RFC 7845).
fn write_ogg_opus(path: &str, packets: &[Vec<u8>]) -> anyhow::Result<()> {
    use ogg::writing::{PacketWriteEndInfo, PacketWriter};
    const SERIAL: u32 = 0x6d69_7863;
    const PRE_SKIP: u16 = 312;
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(2); // channels
    head.extend_from_slice(&PRE_SKIP.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family 0: mono/stereo
    let vendor = b"mixcast codec_eval";
    let mut tags = Vec::new();
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());

    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = PacketWriter::new(file);
    w.write_packet(head, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
    w.write_packet(tags, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
    for (i, p) in packets.iter().enumerate() {
        let granule = ((i + 1) * FRAME) as u64;
        let end = if i + 1 == packets.len() {
            PacketWriteEndInfo::EndStream
        } else if (i + 1) % 50 == 0 {
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        w.write_packet(p.clone(), SERIAL, end, granule)?;
    }
    Ok(())
}
