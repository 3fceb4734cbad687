//! The table of live sessions, shared by signalling (which adds them and looks them up by
//! the id in their URL) and the owner threads (which remove them when they end), and the
//! count of sessions still pending (answered, not yet connected) per client address.
//! Touched once per session event, never per packet.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::change_signal::ChangeSignal;
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
    /// The HTTP client's address, for the logs (`None` when the router is called without a
    /// socket).
    pub client: Option<SocketAddr>,
    /// When it was answered.
    pub created: Instant,
    /// How long after that it connected (ICE and DTLS), if it has.
    pub connected_after: Option<Duration>,
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
    /// Pending sessions per HTTP client address, and the address each pending one holds.
    pending_by_ip: HashMap<IpAddr, usize>,
    pending_of: HashMap<PeerKey, IpAddr>,
}

/// Sessions one HTTP client address may have pending (answered, not yet connected) at
/// once by default: each holds a viewer or publisher slot for up to 15 s
/// (`engine::egress::CONNECT_TIMEOUT`), so without a cap one address could fill
/// `--max-viewers` with POSTs it never connects. A household or a small office behind one
/// address joins far fewer at the same instant; a refused client is told to retry soon.
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 8;

fn release_pending(t: &mut Table, key: PeerKey) {
    let Some(ip) = t.pending_of.remove(&key) else {
        return;
    };
    if let Some(n) = t.pending_by_ip.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            t.pending_by_ip.remove(&ip);
        }
    }
}

fn slot(role: Role) -> usize {
    match role {
        Role::Viewer => 0,
        Role::Publisher => 1,
    }
}

/// Live sessions by URL id and by key.
pub struct Sessions {
    table: Mutex<Table>,
    max_pending_per_ip: usize,
    /// Bumped when a session is added, connects or ends (the event streams wait on it).
    changes: ChangeSignal,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::with_max_pending_per_ip(DEFAULT_MAX_PENDING_PER_IP)
    }
}

/// A session refused because its address has too many pending already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyPending {
    /// The address.
    pub ip: IpAddr,
    /// Its pending sessions (the cap).
    pub pending: usize,
}

impl Sessions {
    /// An empty table whose addresses may each have `max` sessions pending.
    pub fn with_max_pending_per_ip(max: usize) -> Sessions {
        Sessions {
            table: Mutex::default(),
            max_pending_per_ip: max,
            changes: ChangeSignal::default(),
        }
    }

    /// Resolves after the next session added, connected or ended.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Counts session `key` as pending for `ip` until it connects or ends, unless `ip`
    /// has its share pending already. `None` (no address known, as when the router is
    /// called without a socket) is not counted.
    pub fn hold_pending(&self, key: PeerKey, ip: Option<IpAddr>) -> Result<(), TooManyPending> {
        let Some(ip) = ip else {
            return Ok(());
        };
        let mut t = self.lock();
        let pending = t.pending_by_ip.get(&ip).copied().unwrap_or(0);
        if pending >= self.max_pending_per_ip {
            return Err(TooManyPending { ip, pending });
        }
        t.pending_by_ip.insert(ip, pending + 1);
        t.pending_of.insert(key, ip);
        Ok(())
    }

    /// Session `key` connected: it no longer counts as pending. Returns its URL id and
    /// entry the first time (for the log), `None` after or for an unknown key.
    pub fn connected(&self, key: PeerKey) -> Option<(String, SessionEntry)> {
        let mut t = self.lock();
        release_pending(&mut t, key);
        let id = t.id_of.get(&key)?.clone();
        let e = t.by_id.get_mut(&id)?;
        if e.connected_after.is_some() {
            return None;
        }
        e.connected_after = Some(e.created.elapsed());
        let out = (id, e.clone());
        drop(t);
        self.changes.bump();
        Some(out)
    }

    /// Sessions pending for `ip`.
    pub fn pending_from(&self, ip: IpAddr) -> usize {
        self.lock().pending_by_ip.get(&ip).copied().unwrap_or(0)
    }

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
        drop(t);
        self.changes.bump();
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

    /// Removes the session `key` (it ended), and its pending hold if it never connected.
    pub fn remove_key(&self, key: PeerKey) -> Option<(String, SessionEntry)> {
        let mut t = self.lock();
        release_pending(&mut t, key);
        let id = t.id_of.remove(&key)?;
        let entry = t.by_id.remove(&id)?;
        t.live[slot(entry.role)] -= 1;
        if t.ended.len() >= RECENTLY_ENDED {
            if let Some(old) = t.ended.pop_front() {
                t.ended_stream.remove(&old);
            }
        }
        t.ended_stream.insert(id.clone(), entry.stream.clone());
        t.ended.push_back(id.clone());
        drop(t);
        self.changes.bump();
        Some((id, entry))
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

    /// Live viewers per stream, in one pass (streams without viewers are absent).
    pub fn viewers_by_stream(&self) -> HashMap<String, usize> {
        let t = self.lock();
        let mut out: HashMap<String, usize> = HashMap::new();
        for e in t.by_id.values().filter(|e| e.role == Role::Viewer) {
            *out.entry(e.stream.clone()).or_default() += 1;
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_sessions_are_capped_per_address() {
        let s = Sessions::with_max_pending_per_ip(2);
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(s.hold_pending(1, Some(a)), Ok(()));
        assert_eq!(s.hold_pending(2, Some(a)), Ok(()));
        assert_eq!(
            s.hold_pending(3, Some(a)),
            Err(TooManyPending { ip: a, pending: 2 })
        );
        assert_eq!(s.hold_pending(4, Some(b)), Ok(()), "another address");
        assert_eq!(s.hold_pending(5, None), Ok(()), "no address: not counted");
        // One connects, one ends before connecting: room for two again.
        s.connected(1);
        s.connected(1); // twice is harmless
        assert_eq!(s.pending_from(a), 1);
        s.remove_key(2);
        assert_eq!(s.pending_from(a), 0);
        assert_eq!(s.hold_pending(6, Some(a)), Ok(()));
        assert_eq!(s.hold_pending(7, Some(a)), Ok(()));
        assert!(s.hold_pending(8, Some(a)).is_err());
        // A connected session that ends later does not free a slot twice.
        s.connected(6);
        s.remove_key(6);
        assert_eq!(s.pending_from(a), 1);
    }
}
