//! SRTP cost of one Opus packet (550 bytes of RTP, what the fan-out bench's tone makes) per
//! profile, through str0m's crypto provider (aws-lc-rs), as str0m's `protect_rtp` calls
//! it: the cipher, and for AES-CM the HMAC-SHA1 tag through the shared HMAC provider.
//!
//! - `cm_sha1_80/stock`: str0m-aws-lc-rs: the AES key schedule and the HMAC key are
//!   rebuilt for every packet;
//! - `cm_sha1_80/kept_keys`: the same work with both kept across packets (what our own
//!   provider could do);
//! - `aead_aes_128_gcm`, `aead_aes_256_gcm/stock`: str0m-aws-lc-rs, whose GCM keeps its
//!   key (the profile dimpl's DTLS 1.2 server picks first when the viewer offers it).
//!
//! `cargo bench --bench srtp`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::hmac;

const RTP_LEN: usize = 550;
const HEADER_LEN: usize = 20;

fn srtp(c: &mut Criterion) {
    let provider = str0m::crypto::from_feature_flags();
    let packet: Vec<u8> = (0..RTP_LEN).map(|i| i as u8).collect();
    let body = &packet[HEADER_LEN..];
    let mut out = vec![0u8; RTP_LEN + 64];
    let roc = 0u32.to_be_bytes();
    let iv16 = [7u8; 16];
    let iv12 = [7u8; 12];
    let auth_key = [9u8; 20];

    let mut group = c.benchmark_group("srtp per packet");
    group.throughput(Throughput::Elements(1));

    let mut cm = provider
        .srtp_provider
        .aes_128_cm_sha1_80()
        .create_cipher([1; 16], true);
    group.bench_function("cm_sha1_80/stock", |b| {
        b.iter(|| {
            cm.encrypt(&iv16, body, &mut out[HEADER_LEN..]).unwrap();
            out[..HEADER_LEN].copy_from_slice(&packet[..HEADER_LEN]);
            let tag = provider
                .sha1_hmac_provider
                .sha1_hmac(&auth_key, &[&out[..RTP_LEN], &roc]);
            black_box(tag);
        })
    });

    let aes = EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &[1; 16]).unwrap()).unwrap();
    let mac = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth_key);
    group.bench_function("cm_sha1_80/kept_keys", |b| {
        b.iter(|| {
            out[HEADER_LEN..RTP_LEN].copy_from_slice(body);
            let iv = aws_lc_rs::iv::FixedLength::from(iv16);
            aes.less_safe_encrypt(&mut out[HEADER_LEN..RTP_LEN], EncryptionContext::Iv128(iv))
                .unwrap();
            out[..HEADER_LEN].copy_from_slice(&packet[..HEADER_LEN]);
            let mut ctx = hmac::Context::with_key(&mac);
            ctx.update(&out[..RTP_LEN]);
            ctx.update(&roc);
            black_box(ctx.sign());
        })
    });

    let mut gcm128 = provider
        .srtp_provider
        .aead_aes_128_gcm()
        .create_cipher([1; 16], true);
    group.bench_function("aead_aes_128_gcm/stock", |b| {
        b.iter(|| {
            gcm128
                .encrypt(&iv12, &packet[..HEADER_LEN], body, &mut out[HEADER_LEN..])
                .unwrap();
            black_box(&out);
        })
    });

    let mut gcm256 = provider
        .srtp_provider
        .aead_aes_256_gcm()
        .create_cipher([1; 32], true);
    group.bench_function("aead_aes_256_gcm/stock", |b| {
        b.iter(|| {
            gcm256
                .encrypt(&iv12, &packet[..HEADER_LEN], body, &mut out[HEADER_LEN..])
                .unwrap();
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, srtp);
criterion_main!(benches);
