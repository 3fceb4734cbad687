//! WHEP and WHIP clients over real UDP, used by the CLI, the tests and the load tool.
//!
//! `whep` (play) and `whip` (publish) are the public faces; `http` carries the signalling
//! and `driver` runs one str0m `Rtc` over one blocking socket.

mod driver;
mod http;
pub mod load;
pub mod whep;
pub mod whip;

pub use http::REQUEST_TIMEOUT;
