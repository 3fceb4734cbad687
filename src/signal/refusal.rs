//! The log lines for requests refused by `signal::auth`: one line names the client, the
//! stream and the reason; repeats within [`REFUSAL_LOG_EVERY`] are only counted (the next
//! line says how many), so a client retrying in a loop cannot flood the log.

use std::net::SocketAddr;
use std::time::Duration;

use super::auth::AuthError;
use super::error::shown;
use super::origin::RequestOrigin;
use crate::log_throttle::{more_text, SharedThrottle};

/// At most one line per kind of refusal per this long.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

static NO_TOKEN: SharedThrottle = SharedThrottle::every(REFUSAL_LOG_EVERY);
static REMOTE_PUBLISHER: SharedThrottle = SharedThrottle::every(REFUSAL_LOG_EVERY);
static FOREIGN_PAGE: SharedThrottle = SharedThrottle::every(REFUSAL_LOG_EVERY);
static METRICS: SharedThrottle = SharedThrottle::every(REFUSAL_LOG_EVERY);

/// What the refused request wanted.
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// To publish to this stream (WHIP).
    Publish(&'a str),
    /// To read this stream (WHEP) or its existence.
    Read(&'a str),
    /// `/metrics`.
    Metrics,
}

impl std::fmt::Display for Wanted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wanted::Publish(s) => write!(f, "publisher for stream {}", shown(s)),
            Wanted::Read(s) => write!(f, "viewer of stream {}", shown(s)),
            Wanted::Metrics => f.write_str("/metrics request"),
        }
    }
}

/// Logs that `wanted`, from `client` (and `from`, when a page of another origin asked), was
/// refused for `e`: 401s at INFO (a client without its token), 403s at WARN (someone
/// trying what the configuration forbids), each kind throttled.
pub fn log_refused(
    wanted: Wanted<'_>,
    client: Option<SocketAddr>,
    from: &RequestOrigin,
    e: &AuthError,
) {
    let throttle = match e {
        AuthError::Missing | AuthError::Malformed | AuthError::WrongToken => &NO_TOKEN,
        AuthError::NotLoopback => &REMOTE_PUBLISHER,
        AuthError::CrossOrigin => &FOREIGN_PAGE,
        AuthError::MetricsNotLocal => &METRICS,
    };
    let Some(more) = throttle.tick() else {
        return;
    };
    let client = super::endpoint::client_text(client);
    let page = match from {
        RequestOrigin::Foreign(o) => format!(" (a page of {})", shown(o)),
        _ => String::new(),
    };
    let more = more_text(more);
    match e {
        AuthError::Missing | AuthError::Malformed | AuthError::WrongToken => {
            tracing::info!("refused a {wanted} from {client}{page}: {e}{more}")
        }
        _ => tracing::warn!("refused a {wanted} from {client}{page}: {e}{more}"),
    }
}
