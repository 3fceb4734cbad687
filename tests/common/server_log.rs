//! The in-process server's own log lines, as data: a `tracing` layer that keeps every
//! `mixcast` event at INFO or above (its message and fields as text), so that a test can
//! read the counters the server logs (e.g. the "publisher left" line) rather than guess
//! them. The usual `RUST_LOG` output to the test writer goes on beside it.
//!
//! Owns the process's global subscriber: install it once, first, in a test binary of its
//! own.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// One event: its message and fields, all as text (strings without quotes).
#[derive(Debug, Clone)]
pub struct LogLine {
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

impl LogLine {
    /// Field `name` as a number.
    pub fn u64(&self, name: &str) -> Result<u64, String> {
        let text = self
            .fields
            .get(name)
            .ok_or_else(|| format!("no field {name} in {self:?}"))?;
        text.parse()
            .map_err(|_| format!("field {name} = {text:?} is not a number in {self:?}"))
    }
}

/// The lines kept so far (cheap to clone).
#[derive(Clone, Default)]
pub struct ServerLog(Arc<Mutex<Vec<LogLine>>>);

impl ServerLog {
    /// Installs the capture (and `RUST_LOG`'s usual output) as the global subscriber.
    pub fn install() -> Result<ServerLog, String> {
        let log = ServerLog::default();
        let keep =
            tracing_subscriber::filter::Targets::new().with_target("mixcast", tracing::Level::INFO);
        let print = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(tracing_subscriber::EnvFilter::from_default_env());
        tracing_subscriber::registry()
            .with(print)
            .with(Capture(log.clone()).with_filter(keep))
            .try_init()
            .map_err(|e| format!("a tracing subscriber was already installed: {e}"))?;
        Ok(log)
    }

    /// Waits up to `limit` for a line with `message` whose `field` is `value`.
    pub fn wait_for(
        &self,
        message: &str,
        field: &str,
        value: &str,
        limit: Duration,
    ) -> Result<LogLine, String> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self
                .lock()
                .iter()
                .rev()
                .find(|l| {
                    l.message == message && l.fields.get(field).map(String::as_str) == Some(value)
                })
                .cloned();
            if let Some(line) = found {
                return Ok(line);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no {message:?} line with {field}={value} in the server's log within {limit:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line kept so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LogLine>> {
        // A test that panicked while holding it leaves the lines intact.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Capture(ServerLog);

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut line = LogLine {
            message: String::new(),
            fields: BTreeMap::new(),
        };
        event.record(&mut line);
        self.0.lock().push(line);
    }
}

impl Visit for LogLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl LogLine {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}
