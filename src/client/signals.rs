//! Ctrl-C and SIGTERM for the client commands: a flag that turns true when either arrives,
//! so a push or pull can end its session with a DELETE and close its file properly.
//!
//! Owns one small thread with a single-threaded tokio runtime that only waits for the
//! signals; the client's own threads just read the flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag set once SIGINT (Ctrl-C) or SIGTERM arrives.
#[derive(Debug, Clone)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag no signal sets (for embedding the commands in other code, and tests).
    pub fn manual() -> StopFlag {
        StopFlag(Arc::new(AtomicBool::new(false)))
    }

    /// Catches SIGINT and SIGTERM from now on (they no longer kill the process).
    pub fn on_signals() -> std::io::Result<StopFlag> {
        let flag = StopFlag::manual();
        let set = flag.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        // Registering inside the runtime, before this returns: a signal that comes right
        // after is caught, not fatal.
        let waiter = runtime.block_on(async { Waiter::register() })?;
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                runtime.block_on(waiter.wait());
                set.stop();
            })?;
        Ok(flag)
    }

    /// Sets the flag.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a signal (or [`stop`](Self::stop)) came.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`, waking early (within 50 ms) when the flag is set. True if set.
    pub fn sleep(&self, d: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + d;
        loop {
            if self.is_set() {
                return true;
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
        }
    }
}

#[cfg(unix)]
struct Waiter {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Waiter {
    fn register() -> std::io::Result<Waiter> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Waiter {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
    }
}

#[cfg(not(unix))]
struct Waiter;

#[cfg(not(unix))]
impl Waiter {
    fn register() -> std::io::Result<Waiter> {
        Ok(Waiter)
    }

    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
