//! The process's log output: `tracing`'s text lines go through a bounded queue to a thread
//! of their own that writes them to stdout, so no thread of the server ever waits for a
//! terminal, a pipe or a log shipper.
//!
//! Why: the TX thread logs sessions joining and leaving. Written straight to stdout, each
//! line is a `write` that blocks once the pipe's 64 KiB are full, and the 20 ms tick waits
//! for whoever reads the log: `examples/soak.rs` with a reader taking 20 ms a line measured
//! ticks up to 166 ms late that way. A line that finds the queue full is dropped and
//! counted; the writer says how many as soon as it catches up. Never blocks the caller;
//! one allocation per line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds before new ones are dropped (a few MiB at most).
pub const LOG_QUEUE_LINES: usize = 16_384;

/// How long [`LogGuard`]'s drop waits for the queue to be written out at exit.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Counters shared by the writers and the writer thread.
#[derive(Default)]
struct Tally {
    queued: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
}

/// The [`MakeWriter`] handed to `tracing_subscriber::fmt`: each event becomes one queued line.
#[derive(Clone)]
pub struct QueuedStdout {
    tx: Sender<Vec<u8>>,
    tally: Arc<Tally>,
}

/// Writes the queue out when the process ends (drop it last, at the end of `main`).
pub struct LogGuard {
    tally: Arc<Tally>,
}

/// Starts the writer thread; the writer to give `tracing_subscriber::fmt().with_writer`.
pub fn queued_stdout() -> std::io::Result<(QueuedStdout, LogGuard)> {
    queued(std::io::stdout)
}

/// As [`queued_stdout`], writing to what `out` returns (e.g. stderr).
pub fn queued<W: Write>(
    out: impl Fn() -> W + Send + 'static,
) -> std::io::Result<(QueuedStdout, LogGuard)> {
    let (tx, rx) = crossbeam_channel::bounded(LOG_QUEUE_LINES);
    let tally = Arc::new(Tally::default());
    let t = tally.clone();
    std::thread::Builder::new()
        .name("mixcast-log".into())
        .spawn(move || write_lines(rx, out, &t))?;
    Ok((
        QueuedStdout {
            tx,
            tally: tally.clone(),
        },
        LogGuard { tally },
    ))
}

fn write_lines<W: Write>(rx: Receiver<Vec<u8>>, out: impl Fn() -> W, tally: &Tally) {
    while let Ok(line) = rx.recv() {
        let mut w = out();
        let dropped = tally.dropped.swap(0, Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                w,
                "mixcast: {dropped} log lines dropped: the log output was too slow"
            );
        }
        let _ = w.write_all(&line);
        let _ = w.flush();
        tally.written.fetch_add(1, Relaxed);
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + FLUSH_AT_EXIT;
        while self.tally.written.load(Relaxed) < self.tally.queued.load(Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// One event's text, queued when tracing drops the writer.
pub struct QueuedLine {
    buf: Vec<u8>,
    tx: Sender<Vec<u8>>,
    tally: Arc<Tally>,
}

impl Write for QueuedLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.tx.try_send(std::mem::take(&mut self.buf)) {
            Ok(()) => {
                self.tally.queued.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.tally.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for QueuedStdout {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            buf: Vec::with_capacity(256),
            tx: self.tx.clone(),
            tally: self.tally.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that takes `pace` per line, like a slow terminal.
    #[derive(Clone)]
    struct Slow(Arc<Mutex<Vec<u8>>>, Duration);

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.1);
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_output_never_blocks_the_logger_and_loses_nothing_it_can_hold() {
        let sink = Slow(Arc::default(), Duration::from_millis(2));
        let s = sink.clone();
        let (w, guard) = queued(move || s.clone()).unwrap();
        let started = Instant::now();
        for i in 0..200 {
            let mut line = w.make_writer();
            writeln!(line, "line {i}").unwrap();
        }
        // 200 lines at 2 ms each take 400 ms to write; queuing them takes far less.
        let queuing = started.elapsed();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 200, "{text}");
        assert!(text.ends_with("line 199\n"));
        assert!(queuing < Duration::from_millis(200), "{queuing:?}");
    }

    /// A sink whose writes wait until the gate opens.
    #[derive(Clone)]
    struct Gated(Arc<Mutex<Vec<u8>>>, Arc<Mutex<()>>);

    impl Write for Gated {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            drop(self.1.lock().unwrap());
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_past_the_queue_are_dropped_and_reported() {
        let gate = Arc::new(Mutex::new(()));
        let closed = gate.lock().unwrap();
        let sink = Gated(Arc::default(), gate.clone());
        let s = sink.clone();
        let (w, guard) = queued(move || s.clone()).unwrap();
        let started = Instant::now();
        for i in 0..LOG_QUEUE_LINES + 100 {
            let mut line = w.make_writer();
            writeln!(line, "{i}").unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1), "never blocked");
        let dropped = w.tally.dropped.load(Relaxed);
        assert!((99..=100).contains(&dropped), "{dropped}");
        drop(closed);
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(&format!("mixcast: {dropped} log lines dropped")),
            "{}",
            &text[..200]
        );
        assert_eq!(
            text.lines().count() as u64,
            LOG_QUEUE_LINES as u64 + 100 - dropped + 1
        );
    }
}
