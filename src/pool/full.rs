//! The pool's effective size while the server refuses new connections for lack of slots.

use super::*;

/// How long after the server last refused a connection for lack of slots the pool keeps its
/// reduced size before it tries to grow again.
pub const SERVER_FULL_BACKOFF: Duration = Duration::from_secs(30);

/// Whether `e` says the server has no connection slot left (not a fault of this client).
pub(crate) fn server_full(e: &Error) -> bool {
    matches!(
        e.diagnosis(),
        Some(Diagnosis::TooManyConnections | Diagnosis::RoleConnectionLimit)
    )
}

/// The pool's effective size while the server is full: 0 means no limit.
#[derive(Debug, Default)]
pub(super) struct ServerFull {
    pub(super) limit: AtomicUsize,
    /// When the server last refused (ms since `epoch`).
    pub(super) last: AtomicU64,
    pub(super) epoch: std::sync::OnceLock<Instant>,
}

impl ServerFull {
    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// The effective size, or `None` when the pool may grow to its configured size.
    pub(super) fn limit(&self) -> Option<usize> {
        let limit = self.limit.load(Ordering::Acquire);
        if limit == 0 {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.last.load(Ordering::Acquire));
        if since >= SERVER_FULL_BACKOFF.as_millis() as u64 {
            self.limit.store(0, Ordering::Release);
            tracing::info!(target: "neon_connect", "the pool may grow again: no connection was refused for lack of slots in {} s", SERVER_FULL_BACKOFF.as_secs());
            return None;
        }
        Some(limit)
    }

    /// The server refused a connection while the pool held `held`: stop growing past it.
    pub(super) fn shrink(&self, held: usize, e: &Error) {
        self.last.store(self.now_ms(), Ordering::Release);
        let before = self.limit.swap(held, Ordering::AcqRel);
        if before == 0 {
            tracing::warn!(target: "neon_connect", held, "the server has no connection slot left ({}): the pool stays at {held} connections and callers wait for a returned one; it tries to grow again {} s after the last refusal", e.message(), SERVER_FULL_BACKOFF.as_secs());
        }
    }
}
