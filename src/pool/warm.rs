//! `Options::min_idle`: idle connections kept open in the background.

use super::*;

/// How often the background task of [`Options::min_idle`](crate::Options::min_idle) looks at
/// the pool (it opens connections only when fewer than `min_idle` are idle).
pub const MIN_IDLE_INTERVAL: Duration = Duration::from_secs(1);

/// One round of `Options::min_idle`: retires idle connections that their next checkout would
/// replace anyway (past `idle_timeout` or their lifetime), then, unless the server is full,
/// opens connections until `min` are idle (or the pool is at its size). False when opening
/// one failed.
pub(super) async fn fill(inner: &managed::Pool<Manager>, min: usize, full: &ServerFull) -> bool {
    let health = inner.manager().health;
    let retired = inner.retain(|conn, m| {
        if conn.retire_at.is_some_and(|at| Instant::now() >= at) {
            crate::service::retired("max_lifetime");
        } else if m.last_used() >= health.idle_timeout {
            crate::service::retired("idle_timeout");
        } else {
            return true;
        }
        false
    });
    if !retired.removed.is_empty() {
        tracing::debug!(target: "neon_connect", retired = retired.removed.len(), "min_idle: closing idle connections past idle_timeout or max_lifetime");
    }
    drop(retired);
    if full.limit().is_some() {
        return true;
    }
    let s = inner.status();
    let in_use = s.size - s.available;
    let want = min.min(s.max_size.saturating_sub(in_use));
    if s.available >= want {
        return true;
    }
    // deadpool opens a connection only when none is idle: hold the idle ones while opening
    // the missing ones, then return them all. Never wait: a caller that needs a slot has it.
    let no_wait = Timeouts {
        wait: Some(Duration::ZERO),
        create: None,
        recycle: None,
    };
    let mut held = Vec::with_capacity(want);
    let filled = loop {
        if held.len() >= want {
            break true;
        }
        match inner.timeout_get(&no_wait).await {
            Ok(object) => held.push(object),
            Err(managed::PoolError::Timeout(_) | managed::PoolError::Closed) => break true,
            Err(e) => {
                tracing::debug!(target: "neon_connect", "min_idle: could not open a connection: {e}");
                break false;
            }
        }
    };
    drop(held);
    inner.manager().meters.resample();
    filled
}
