//! WHEP (and later WHIP) clients over real UDP, used by the CLI, the tests and the load tool.
//!
//! `whep` is the public face; `http` carries the signalling and `driver` runs one str0m
//! `Rtc` over one blocking socket.

mod driver;
mod http;
pub mod whep;

pub use http::REQUEST_TIMEOUT;
