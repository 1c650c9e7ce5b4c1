//! What a service watches on the pool: metrics through the `metrics` facade (feature
//! `metrics`; every function here is an empty inline function without it) and leak detection.
//! Called from `pool.rs` at the few points where connections change state.

use crate::error::Error;
use std::panic::Location;
use std::time::Duration;

/// The metric names (feature `metrics`), for dashboards and tests.
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

/// One `Pool::get`: counts it as waiting until it ends, then records how long it took.
pub(crate) struct Checkout {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Checkout {
    #[inline(always)]
    pub(crate) fn start() -> Checkout {
        #[cfg(feature = "metrics")]
        metrics::gauge!(names::WAITING).increment(1.0);
        Checkout {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// The checkout ended; `idle` is the pool's idle count after it when it succeeded (a
    /// closure: reading it locks the pool, which only the metrics need).
    #[inline(always)]
    pub(crate) fn end(self, _idle: Option<impl FnOnce() -> usize>) {
        #[cfg(feature = "metrics")]
        {
            metrics::gauge!(names::WAITING).decrement(1.0);
            if let Some(idle) = _idle.map(|f| f()) {
                metrics::histogram!(names::CHECKOUT_WAIT).record(self.started.elapsed());
                metrics::gauge!(names::IN_USE).increment(1.0);
                metrics::gauge!(names::IDLE).set(idle as f64);
            }
        }
    }
}

/// A checked-out connection goes back; `_idle` is the pool's idle count once it is back.
#[inline(always)]
pub(crate) fn returned(_idle: impl FnOnce() -> usize) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!(names::IN_USE).decrement(1.0);
        metrics::gauge!(names::IDLE).set(_idle() as f64);
    }
}

/// The idle count changed outside a checkout (the `min_idle` task).
#[inline(always)]
pub(crate) fn idle(_idle: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(names::IDLE).set(_idle as f64);
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
