//! The deadline of a `Pool::get` that waits, and the trace of where its time went.

use super::*;

/// What one `Pool::get` spent its time on, for the message when its deadline runs out.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct GetTrace {
    pub(super) checks: u32,
    pub(super) checking: Duration,
    pub(super) replaced: u32,
    pub(super) opening: Option<Instant>,
}

std::thread_local! {
    /// The trace of the `Pool::get` being polled on this thread (see [`traced_poll`]).
    static TRACE: Cell<Option<GetTrace>> = const { Cell::new(None) };
}

/// Records into the current `Pool::get`'s trace, if there is one.
pub(super) fn trace(f: impl FnOnce(&mut GetTrace)) {
    TRACE.with(|t| {
        if let Some(mut trace) = t.get() {
            f(&mut trace);
            t.set(Some(trace));
        }
    });
}

/// Polls one step of a `Pool::get` with its trace as this thread's [`TRACE`]: deadpool calls
/// the manager's `recycle` and `create` without a context, and they record where the time goes
/// through it. A thread-local set around each poll costs less than a task-local scope (the
/// checkout's fast path pays it too).
pub(super) fn traced_poll<F: Future>(
    trace: &mut GetTrace,
    fut: Pin<&mut F>,
    cx: &mut std::task::Context<'_>,
) -> Poll<F::Output> {
    /// Puts the trace back, and the outer one (a `get` inside an `after_connect` hook), even
    /// when the poll panics.
    struct Restore<'a> {
        trace: &'a mut GetTrace,
        outer: Option<GetTrace>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            if let Some(t) = TRACE.replace(self.outer) {
                *self.trace = t;
            }
        }
    }
    let outer = TRACE.replace(Some(*trace));
    let _restore = Restore { trace, outer };
    fut.poll(cx)
}

/// The deadlines of the `Pool::get`s waiting for a connection, kept by one ticking task per
/// pool instead of a timer per call (registering a timer cost more than the rest of a waiting
/// checkout): while anyone waits, the task wakes the waiters every tick, and each checks its
/// own deadline. A deadline is kept to within one tick: 1/16 of `wait_timeout`, between 1 and
/// 100 ms. The task runs only while some `get` waits.
pub(super) struct Ticker {
    /// The deadline of a whole `get` (`Options::wait_timeout`).
    wait_timeout: Duration,
    tick: Duration,
    /// `get`s waiting now.
    waiters: AtomicUsize,
    /// Whether the ticking task runs.
    running: std::sync::atomic::AtomicBool,
    /// Notified at every tick.
    ticks: tokio::sync::Notify,
}

impl Ticker {
    pub(super) fn new(wait_timeout: Duration) -> Ticker {
        Ticker {
            wait_timeout,
            tick: (wait_timeout / 16).clamp(Duration::from_millis(1), Duration::from_millis(100)),
            waiters: AtomicUsize::new(0),
            running: std::sync::atomic::AtomicBool::new(false),
            ticks: tokio::sync::Notify::new(),
        }
    }

    /// Polls `fut`, with `spent` as its trace, until it is ready, or `None` once `started` +
    /// `wait_timeout` has passed (noticed at the next tick).
    pub(super) async fn until_deadline<F: Future>(
        self: &Arc<Ticker>,
        mut fut: Pin<&mut F>,
        started: Instant,
        spent: &mut GetTrace,
    ) -> Option<F::Output> {
        // `None`: a deadline too far to compute, never reached.
        let deadline = started.checked_add(self.wait_timeout);
        let _waiting = self.enter();
        let mut tick = std::pin::pin!(self.ticks.notified());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = traced_poll(spent, fut.as_mut(), cx) {
                return Poll::Ready(Some(r));
            }
            // Woken by a tick: the deadline, then wait for the next tick.
            while tick.as_mut().poll(cx).is_ready() {
                tick.set(self.ticks.notified());
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Counts a waiting `get` until the guard is dropped, and makes sure the task ticks.
    fn enter(self: &Arc<Ticker>) -> Waiting<'_> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        if !self.running.swap(true, Ordering::AcqRel) {
            let ticker = self.clone();
            tokio::spawn(async move { ticker.run().await });
        }
        Waiting(self)
    }

    /// Ticks while anyone waits, then ends (a later waiter starts it again).
    async fn run(&self) {
        loop {
            tokio::time::sleep(self.tick).await;
            self.ticks.notify_waiters();
            if self.waiters.load(Ordering::Acquire) == 0 {
                self.running.store(false, Ordering::Release);
                // A waiter that came meanwhile saw `running` still set and started nothing.
                if self.waiters.load(Ordering::Acquire) == 0
                    || self.running.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        }
    }
}

/// A waiting `get`, counted by its [`Ticker`].
struct Waiting<'a>(&'a Ticker);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}
