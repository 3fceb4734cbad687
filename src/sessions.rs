//! The table of live sessions, shared by signalling (which adds them and looks them up by
//! the id in their URL) and the owner threads (which remove them when they end).
//! Touched once per session event, never per packet.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::engine::offer::Role;
use crate::engine::PeerKey;

/// What signalling remembers of a session.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// The engine's key.
    pub key: PeerKey,
    /// The stream's name.
    pub stream: String,
    /// Viewer (WHEP) or publisher (WHIP).
    pub role: Role,
    /// The current strong ETag, quoted.
    pub etag: String,
    /// The client's current ICE ufrag, to tell trickle from ICE restart.
    pub remote_ufrag: Option<String>,
    /// The TX thread that owns it.
    pub owner: usize,
}

/// Ended sessions remembered so that a late DELETE (a player that closed its connection
/// first) still gets 200, as WHEP clients expect. Oldest forgotten first.
const RECENTLY_ENDED: usize = 4096;

#[derive(Default)]
struct Table {
    by_id: HashMap<String, SessionEntry>,
    id_of: HashMap<PeerKey, String>,
    /// Ended ids, oldest first, and each one's stream.
    ended: VecDeque<String>,
    ended_stream: HashMap<String, String>,
    /// Live sessions per role: [viewers, publishers].
    live: [usize; 2],
}

fn slot(role: Role) -> usize {
    match role {
        Role::Viewer => 0,
        Role::Publisher => 1,
    }
}

/// Live sessions by URL id and by key.
#[derive(Default)]
pub struct Sessions {
    table: Mutex<Table>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned lock means a thread panicked mid-insert; the maps stay consistent
        // because every update is a single insert or remove pair.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session under `id`.
    pub fn insert(&self, id: String, entry: SessionEntry) {
        let mut t = self.lock();
        t.id_of.insert(entry.key, id.clone());
        t.live[slot(entry.role)] += 1;
        if let Some(old) = t.by_id.insert(id, entry) {
            t.live[slot(old.role)] -= 1; // an id is never reused; keep counts right anyway
        }
    }

    /// The session with URL id `id`.
    pub fn get(&self, id: &str) -> Option<SessionEntry> {
        self.lock().by_id.get(id).cloned()
    }

    /// Replaces the ETag and remote ufrag after an ICE restart.
    pub fn restarted(&self, id: &str, etag: String, remote_ufrag: String) {
        if let Some(e) = self.lock().by_id.get_mut(id) {
            e.etag = etag;
            e.remote_ufrag = Some(remote_ufrag);
        }
    }

    /// Removes the session `key` (it ended).
    pub fn remove_key(&self, key: PeerKey) -> Option<SessionEntry> {
        let mut t = self.lock();
        let id = t.id_of.remove(&key)?;
        let entry = t.by_id.remove(&id)?;
        t.live[slot(entry.role)] -= 1;
        if t.ended.len() >= RECENTLY_ENDED {
            if let Some(old) = t.ended.pop_front() {
                t.ended_stream.remove(&old);
            }
        }
        t.ended_stream.insert(id.clone(), entry.stream.clone());
        t.ended.push_back(id);
        Some(entry)
    }

    /// True if session `id` of `stream` ended recently.
    pub fn recently_ended(&self, id: &str, stream: &str) -> bool {
        self.lock()
            .ended_stream
            .get(id)
            .is_some_and(|s| s == stream)
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// True when none is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live sessions of `role`.
    pub fn count_role(&self, role: Role) -> usize {
        self.lock().live[slot(role)]
    }

    /// Live sessions of `stream` in `role`.
    pub fn count_of(&self, stream: &str, role: Role) -> usize {
        self.lock()
            .by_id
            .values()
            .filter(|e| e.stream == stream && e.role == role)
            .count()
    }
}
