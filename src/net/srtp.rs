//! Our own SRTP sender for one RTP stream: AEAD_AES_128_GCM and AEAD_AES_256_GCM
//! (RFC 7714), keyed from a viewer's DTLS-SRTP keying material (RFC 5764) with the AES-CM
//! key derivation of RFC 3711 §4.3. Used by the `direct` fan-out, which builds a viewer's
//! audio packets without its `Rtc` (see [`crate::config::Fanout::Direct`]).
//!
//! Only protects RTP; never decrypts, never sends RTCP (str0m keeps doing that). AES-CM
//! profiles are not supported: such viewers stay on str0m's path.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use str0m::crypto::dtls::SrtpProfile;

/// RTP header length we write (no CSRC, no extensions).
pub const RTP_HEADER_LEN: usize = 12;
/// GCM authentication tag length (RFC 7714 §14.2: 16 octets).
pub const TAG_LEN: usize = 16;

/// RFC 3711 §4.3.1 labels.
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_SALT: u8 = 2;

/// The sending half of a viewer's SRTP for RTP packets, for the GCM profiles.
pub struct SrtpSender {
    key: LessSafeKey,
    salt: [u8; 12],
}

impl std::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SrtpSender")
    }
}

impl SrtpSender {
    /// Our sending context from DTLS-SRTP keying material `km` (RFC 5764 §4.2 layout:
    /// client key, server key, client salt, server salt) for `profile`. `dtls_client`: we
    /// were the DTLS client (active), so the client half is ours. `None` for profiles we
    /// do not implement or material of the wrong length.
    pub fn from_keying_material(
        km: &[u8],
        profile: SrtpProfile,
        dtls_client: bool,
    ) -> Option<SrtpSender> {
        let (key_len, salt_len) = match profile {
            SrtpProfile::AEAD_AES_128_GCM => (16, 12),
            SrtpProfile::AEAD_AES_256_GCM => (32, 12),
            _ => return None,
        };
        if km.len() != 2 * (key_len + salt_len) {
            return None;
        }
        let (k, s) = if dtls_client {
            (0, 2 * key_len)
        } else {
            (key_len, 2 * key_len + salt_len)
        };
        SrtpSender::from_master(&km[k..k + key_len], &km[s..s + salt_len])
    }

    /// Our sending context from a master key (16 or 32 bytes) and 12-byte master salt.
    pub fn from_master(master_key: &[u8], master_salt: &[u8]) -> Option<SrtpSender> {
        let mut session_key = [0u8; 32];
        let session_key = &mut session_key[..master_key.len()];
        derive(master_key, master_salt, LABEL_RTP_KEY, session_key)?;
        let mut salt = [0u8; 12];
        derive(master_key, master_salt, LABEL_RTP_SALT, &mut salt)?;
        SrtpSender::from_session(session_key, salt)
    }

    /// A sender from the derived session key (16 or 32 bytes) and session salt.
    fn from_session(session_key: &[u8], salt: [u8; 12]) -> Option<SrtpSender> {
        let algorithm = match session_key.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            _ => return None,
        };
        let key = LessSafeKey::new(UnboundKey::new(algorithm, session_key).ok()?);
        Some(SrtpSender { key, salt })
    }

    /// Protects the RTP packet in `buf[..len]` in place (its header is the first
    /// `header_len` bytes, the AAD) and appends the tag: returns the SRTP length, or
    /// `None` if `buf` has no room for the tag. `roc`: the rollover counter of the
    /// packet's sequence number.
    pub fn protect(
        &self,
        buf: &mut [u8],
        len: usize,
        header_len: usize,
        roc: u32,
    ) -> Option<usize> {
        if buf.len() < len + TAG_LEN || len < header_len || header_len < RTP_HEADER_LEN {
            return None;
        }
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&buf[8..12]); // SSRC
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&buf[2..4]); // sequence number
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        let (header, rest) = buf.split_at_mut(header_len);
        let (payload, tail) = rest.split_at_mut(len - header_len);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&*header),
                payload,
            )
            .ok()?;
        tail[..TAG_LEN].copy_from_slice(tag.as_ref());
        Some(len + TAG_LEN)
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.3 (key derivation rate 0), as str0m does it for every
/// profile: the master salt left-aligned in the 14-byte x, the label at byte 7, then AES
/// in counter mode over the 16-bit block counter.
fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) -> Option<()> {
    let algorithm = match master_key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return None,
    };
    if master_salt.len() > 14 {
        return None;
    }
    let aes = EncryptingKey::ecb(UnboundCipherKey::new(algorithm, master_key).ok()?).ok()?;
    let mut x = [0u8; 16];
    x[..master_salt.len()].copy_from_slice(master_salt);
    x[7] ^= label;
    for (round, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..].copy_from_slice(&(round as u16).to_be_bytes());
        aes.less_safe_encrypt(&mut block, EncryptionContext::None)
            .ok()?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Some(())
}

/// Writes a 12-byte RTP header (V=2, no padding, extensions or CSRCs) into `buf`.
pub fn write_rtp_header(buf: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    buf[0] = 0x80;
    buf[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc3711_b3_key_derivation() {
        let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut out = [0u8; 16];
        derive(&key, &salt, 0, &mut out).unwrap();
        assert_eq!(out.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut out = [0u8; 14];
        derive(&key, &salt, 2, &mut out).unwrap();
        assert_eq!(out.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut out = [0u8; 20];
        derive(&key, &salt, 1, &mut out).unwrap();
        assert_eq!(
            out.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    const PLAIN: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
        20646976 69736120 696e2070 61727465 73207472 6573";
    const SALT: &str = "517569642070726f2071756f";

    fn protect(key: &str) -> Vec<u8> {
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&hex(SALT));
        let s = SrtpSender::from_session(&hex(key), salt).unwrap();
        let mut buf = hex(PLAIN);
        let len = buf.len();
        buf.resize(len + TAG_LEN, 0);
        assert_eq!(s.protect(&mut buf, len, 12, 0), Some(len + TAG_LEN));
        buf
    }

    #[test]
    fn rfc7714_aes_128_gcm_rtp() {
        let expected = hex(
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
             0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        );
        assert_eq!(protect("000102030405060708090a0b0c0d0e0f"), expected);
    }

    #[test]
    fn rfc7714_aes_256_gcm_rtp() {
        let expected = hex(
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
             9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
        );
        assert_eq!(
            protect("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
            expected
        );
    }

    #[test]
    fn keying_material_halves() {
        // 16+16+12+12 bytes: client key 0x11.., server key 0x22.., salts 0x33/0x44.
        let mut km = vec![0x11; 16];
        km.extend([0x22; 16]);
        km.extend([0x33; 12]);
        km.extend([0x44; 12]);
        let p = SrtpProfile::AEAD_AES_128_GCM;
        assert!(SrtpSender::from_keying_material(&km, p, true).is_some());
        assert!(SrtpSender::from_keying_material(&km, p, false).is_some());
        assert!(SrtpSender::from_keying_material(&km[1..], p, false).is_none());
        assert!(
            SrtpSender::from_keying_material(&km, SrtpProfile::AES128_CM_SHA1_80, false).is_none()
        );
    }
}
