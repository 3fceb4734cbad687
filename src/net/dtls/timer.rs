//! When a lost handshake flight is sent again.
//!
//! OpenSSL's own schedule (RFC 6347 §4.2.4.1's suggestion) waits 1 s, then doubles: one
//! lost flight costs a second, two cost three. Found through a 10% lossy path with 100 ms
//! each way (tests/faults.rs): FFmpeg 8's WHIP muxer gives its handshake 5 s in all, and a
//! handshake that lost our flight twice ran out of it. libwebrtc starts from its ICE round
//! trip, clamped to 50 ms–3 s; we know no round trip here, so we start at
//! [`FIRST_RETRANSMIT`], well above a continent's round trip (a flight sent again too early
//! costs a few hundred bytes), double, and stop growing at [`LONGEST_RETRANSMIT`].
//! OpenSSL still gives up after its count of retransmissions, and a session that never
//! connects is ended by the engine first (15 s).

use std::time::Duration;

/// The wait before a flight's first retransmission.
pub const FIRST_RETRANSMIT: Duration = Duration::from_millis(250);
/// The longest wait between two retransmissions of a flight.
pub const LONGEST_RETRANSMIT: Duration = Duration::from_secs(3);

/// OpenSSL's `DTLS_timer_cb` (ssl.h, OpenSSL 1.1.1 and later).
type TimerCallback = unsafe extern "C" fn(*mut openssl_sys::SSL, libc::c_uint) -> libc::c_uint;

extern "C" {
    // In the libssl that openssl-sys links (vendored: built by the `openssl` crate), not
    // bound by openssl-sys.
    fn DTLS_set_timer_cb(s: *mut openssl_sys::SSL, cb: Option<TimerCallback>);
}

/// The next wait, in microseconds, after a wait of `previous_us` (0: a new flight).
fn next_wait_us(previous_us: u32) -> u32 {
    let first = FIRST_RETRANSMIT.as_micros() as u32;
    let longest = LONGEST_RETRANSMIT.as_micros() as u32;
    if previous_us == 0 {
        first
    } else {
        previous_us.saturating_mul(2).clamp(first, longest)
    }
}

unsafe extern "C" fn on_timer(_: *mut openssl_sys::SSL, previous_us: libc::c_uint) -> libc::c_uint {
    next_wait_us(previous_us)
}

/// Puts `ssl` on our retransmission schedule.
pub fn use_schedule(ssl: &openssl::ssl::SslRef) {
    use foreign_types::ForeignTypeRef;
    // SAFETY: the pointer is the live SSL's; OpenSSL keeps the function pointer, which is
    // a plain function valid for the program's life and touches nothing but its argument.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(on_timer)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_250_ms_doubles_and_stops_at_3_s() {
        let mut waits = vec![next_wait_us(0)];
        for _ in 0..6 {
            waits.push(next_wait_us(*waits.last().unwrap()));
        }
        assert_eq!(
            waits,
            [250_000, 500_000, 1_000_000, 2_000_000, 3_000_000, 3_000_000, 3_000_000]
        );
        assert_eq!(next_wait_us(u32::MAX), 3_000_000);
    }
}
