//! A counter that says "something changed" to whoever waits for it: the stream directory
//! and the session table bump theirs on every add, remove or count change, and the
//! server-sent event streams (`signal::events`) wake on it instead of polling. Bumping is a
//! short lock and no allocation, callable from any thread (signalling or a TX thread); it
//! happens once per session or stream event, never per packet.

use tokio::sync::watch;

/// See the module doc.
#[derive(Debug)]
pub struct ChangeSignal(watch::Sender<u64>);

impl Default for ChangeSignal {
    fn default() -> ChangeSignal {
        ChangeSignal(watch::Sender::new(0))
    }
}

impl ChangeSignal {
    /// Says that something changed (wakes every subscriber; none is fine).
    pub fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` resolves after the next bump.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bump_wakes_a_subscriber() {
        let s = ChangeSignal::default();
        let mut rx = s.subscribe();
        s.bump();
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .expect("woken")
            .expect("sender alive");
        assert_eq!(*rx.borrow_and_update(), 1);
    }
}
