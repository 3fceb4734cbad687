//! The recordings this server has written since it started, for `GET /api/recordings`:
//! [`Recordings`]. The writer thread updates an entry when its file opens, once a page
//! (about a second) and when it closes; request handlers read copies.

use std::sync::Mutex;

/// One recording file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recording {
    /// Its file name in the recording folder.
    pub file: String,
    /// The stream recorded.
    pub stream: String,
    /// `audio` (Ogg Opus) or `video` (IVF, Annex B).
    pub media: &'static str,
    /// Bytes written so far.
    pub bytes: u64,
    /// When it started (UTC, RFC 3339).
    pub started: String,
    /// Seconds of the stream it holds.
    pub duration_seconds: f64,
    /// Whether it is still being written.
    pub recording: bool,
}

/// Every recording of this run, in the order they started.
#[derive(Debug, Default)]
pub struct Recordings {
    list: Mutex<Vec<Recording>>,
}

impl Recordings {
    /// A copy of the list.
    pub fn list(&self) -> Vec<Recording> {
        // A poisoned lock only means a writer panicked mid-update: the entries are whole.
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds `r` or replaces the entry with its file name.
    pub(super) fn update(&self, r: &Recording) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        match list.iter_mut().find(|x| x.file == r.file) {
            Some(x) => x.clone_from(r),
            None => list.push(r.clone()),
        }
    }
}
