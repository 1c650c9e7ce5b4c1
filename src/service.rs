//! What a service watches on the pool: metrics through the `metrics` facade (feature
//! `metrics`; every function here is an empty inline function without it) and leak detection.
//! Called from `pool/` at the few points where connections change state.

use crate::error::Error;
use std::panic::Location;
#[cfg(feature = "metrics")]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The metric names (feature `metrics`), for dashboards and tests. Install the recorder before
/// building the pool: the pool registers its per-checkout metrics once, with the recorder
/// installed then.
pub mod names {
    /// Histogram, seconds: how long `Pool::get` took, waiting, checking and opening included.
    pub const CHECKOUT_WAIT: &str = "neon_connect_checkout_wait_seconds";
    /// Counter: connections opened.
    pub const OPENED: &str = "neon_connect_connections_opened_total";
    /// Counter, label `diagnosis` (`Diagnosis::id`, or `other`): connections that could not be
    /// opened (or whose `after_connect` hook failed).
    pub const FAILED: &str = "neon_connect_connections_failed_total";
    /// Counter, label `reason`: idle connections closed instead of handed out (`closed`,
    /// `abandoned`, `max_lifetime`, `idle_timeout`, `suspect`, `idle_check_failed`,
    /// `rollback_failed`).
    pub const RETIRED: &str = "neon_connect_connections_retired_total";
    /// Gauge: connections checked out.
    pub const IN_USE: &str = "neon_connect_connections_in_use";
    /// Gauge: idle connections, sampled at each checkout and return.
    pub const IDLE: &str = "neon_connect_connections_idle";
    /// Gauge: callers waiting in `Pool::get`.
    pub const WAITING: &str = "neon_connect_checkout_waiting";
}

/// Describes the metrics to the installed recorder (units and help texts).
#[inline(always)]
pub(crate) fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::Unit;
        metrics::describe_histogram!(
            names::CHECKOUT_WAIT,
            Unit::Seconds,
            "how long pool.get() took"
        );
        metrics::describe_counter!(names::OPENED, "connections opened");
        metrics::describe_counter!(names::FAILED, "connections that could not be opened");
        metrics::describe_counter!(names::RETIRED, "idle connections closed instead of reused");
        metrics::describe_gauge!(names::IN_USE, "connections checked out");
        metrics::describe_gauge!(names::IDLE, "idle connections");
        metrics::describe_gauge!(names::WAITING, "callers waiting in pool.get()");
    }
}

/// A connection was opened.
#[inline(always)]
pub(crate) fn opened() {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::OPENED).increment(1);
}

/// A connection could not be opened.
#[inline(always)]
pub(crate) fn failed(_e: &Error) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::FAILED, "diagnosis" => _e.diagnosis().map_or("other", |d| d.id()))
        .increment(1);
}

/// An idle connection was closed instead of handed out.
#[inline(always)]
pub(crate) fn retired(_reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(names::RETIRED, "reason" => _reason).increment(1);
}

/// The pool's per-checkout metric handles (feature `metrics`), registered once when the pool is
/// built, with the recorder installed then: each update is an atomic operation on a handle,
/// not a lookup by name, and the in-use and idle gauges come from counters of the pool's own
/// (no lock on the pool). Empty (and free) without the feature.
#[derive(Clone, Default)]
pub(crate) struct Meters {
    #[cfg(feature = "metrics")]
    handles: Option<std::sync::Arc<Handles>>,
}

#[cfg(feature = "metrics")]
struct Handles {
    wait: metrics::Histogram,
    in_use: metrics::Gauge,
    idle: metrics::Gauge,
    waiting: metrics::Gauge,
    /// Connections checked out now.
    checked_out: AtomicUsize,
    /// Connections alive (the manager's count), checked out or idle.
    live: std::sync::Arc<AtomicUsize>,
}

#[cfg(feature = "metrics")]
impl Handles {
    fn set_gauges(&self, checked_out: usize) {
        self.in_use.set(checked_out as f64);
        let live = self.live.load(Ordering::Acquire);
        self.idle.set(live.saturating_sub(checked_out) as f64);
    }
}

impl Meters {
    /// Registers the handles with the recorder installed now (`live`: the manager's count of
    /// connections alive).
    pub(crate) fn register(_live: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Meters {
        Meters {
            #[cfg(feature = "metrics")]
            handles: Some(std::sync::Arc::new(Handles {
                wait: metrics::histogram!(names::CHECKOUT_WAIT),
                in_use: metrics::gauge!(names::IN_USE),
                idle: metrics::gauge!(names::IDLE),
                waiting: metrics::gauge!(names::WAITING),
                checked_out: AtomicUsize::new(0),
                live: _live.clone(),
            })),
        }
    }

    /// One `Pool::get` starts: counted as waiting until it ends.
    #[inline(always)]
    pub(crate) fn checkout(&self) -> Checkout {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.waiting.increment(1.0);
        }
        Checkout {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// A checked-out connection went back to the pool.
    #[inline(always)]
    pub(crate) fn returned(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            let now = h
                .checked_out
                .fetch_sub(1, Ordering::AcqRel)
                .saturating_sub(1);
            h.set_gauges(now);
        }
    }

    /// The number of connections changed outside a checkout (the `min_idle` task).
    #[inline(always)]
    pub(crate) fn resample(&self) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &self.handles {
            h.set_gauges(h.checked_out.load(Ordering::Acquire));
        }
    }
}

/// One `Pool::get` ([`Meters::checkout`]): records how long it took when it ends.
pub(crate) struct Checkout {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Checkout {
    /// The checkout ended, with a connection when `ok`.
    #[inline(always)]
    pub(crate) fn end(self, _meters: &Meters, _ok: bool) {
        #[cfg(feature = "metrics")]
        if let Some(h) = &_meters.handles {
            h.waiting.decrement(1.0);
            if _ok {
                h.wait.record(self.started.elapsed());
                let now = h.checked_out.fetch_add(1, Ordering::AcqRel) + 1;
                h.set_gauges(now);
            }
        }
    }
}

/// Leak detection (`Options::leak_detection`): logs once, with where it was taken, a checkout
/// held past the threshold. Only exists while enabled; dropping it (the connection's return)
/// stops its timer.
#[derive(Debug)]
pub(crate) struct LeakWatch(tokio::task::JoinHandle<()>);

impl LeakWatch {
    pub(crate) fn start(
        after: Duration,
        caller: &'static Location<'static>,
        host: &str,
    ) -> Option<LeakWatch> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let host = host.to_string();
        Some(LeakWatch(runtime.spawn(async move {
            tokio::time::sleep(after).await;
            tracing::warn!(target: "neon_connect", host = %host, checked_out_at = %caller, "a pooled connection taken at {caller} has been checked out for over {:.1}s (leak_detection): return it (drop the client) when the request's work is done", after.as_secs_f64());
        })))
    }
}

impl Drop for LeakWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection's own maximum lifetime: `max` less up to 10%, drawn per connection, so that
/// connections opened together are not all replaced at once.
pub(crate) fn jittered_lifetime(max: Duration, random: u64) -> Duration {
    let tenth = max.as_nanos() / 10;
    if tenth == 0 {
        return max;
    }
    let less = (random as u128) % (tenth + 1);
    max - Duration::from_nanos(less.min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_jitter_takes_off_at_most_a_tenth() {
        let max = Duration::from_secs(1800);
        let mut seen = std::collections::HashSet::new();
        for r in [0u64, 1, 7, 1 << 40, u64::MAX, 123_456_789_012] {
            let d = jittered_lifetime(max, r);
            assert!(d <= max && d >= max - max / 10, "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 3, "the jitter varies: {seen:?}");
        assert_eq!(jittered_lifetime(Duration::ZERO, 5), Duration::ZERO);
    }
}
