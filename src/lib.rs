//! # mixcast
//!
//! A WebRTC media server: publishers push over WHIP, viewers pull over WHEP, and each
//! stream's audio inputs are mixed every 20 ms into one 48 kHz stereo Opus frame that is
//! encoded **once** and fanned out to every viewer.
//!
//! ```text
//!  HTTP (tokio + axum)        signalling only: parse the offer, build a str0m Rtc and its
//!   POST/PATCH/DELETE ──────► answer, hand the Rtc to the TX thread over a bounded channel
//!                                          │
//!  UDP socket (one port) ──► RX thread: recv, demux in O(1) (STUN ufrag on first contact,
//!                            then source address), push onto the owner's SPSC ring
//!                                          │
//!                        TX thread, spin-timed every 20 ms: drain datagrams and commands,
//!                        mix each stream, encode once, write the frame to each viewer's
//!                        Rtc, drain it, send
//! ```
//!
//! ## Threads
//! - `mixcast-http` (tokio): [`signal`], the HTTP API. Never touches a running `Rtc`.
//! - `mixcast-rx`: [`net::rx`], reads the socket, routes with [`net::demux`].
//! - `mixcast-tx`: [`media::tx`], owns every viewer through [`engine::egress::Egress`].
//! - `mixcast-record` (only when a stream is recorded): [`record`], writes the files; the
//!   TX thread hands it each recorded stream's packet over a bounded queue.
//!
//! ## Where to start reading
//! [`server::Server::start`] wires everything; [`engine::egress`] is the heart (sans-IO,
//! tested with a virtual clock in `tests/core_virtual_clock.rs`); [`engine::offer`] turns
//! an offer into an `Rtc` and its answer. Two-way peers (a `sendrecv` WHIP session, a WHEP
//! session with `?minus=`) hear their mix-minus: [`media::mix_minus`].
//!
//! ## What it does not do (yet)
//! WHIP ingress, video forwarding and multi-threaded fan-out are later work.
#![deny(missing_docs)]

pub mod change_signal;
pub mod client;
pub mod config;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod log_throttle;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod net;
pub mod record;
pub mod server;
pub mod sessions;
pub mod signal;
pub mod streams;
