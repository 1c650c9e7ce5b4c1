//! Measuring: interleaved rounds, rates, medians, CPU time, resident memory and live heap.
//! The sqlx peer (`benches/sqlx-peer`, a process of its own) compiles this same file, so its
//! rows are measured as the rows next to them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The system allocator, counting live heap bytes once [`count_heap`] is called (only the
/// fresh processes of the memory section do; elsewhere the cost is one relaxed load per
/// allocation).
pub(crate) struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Relaxed) {
        LIVE.fetch_add(delta, Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged; only the counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// Starts counting live heap bytes (allocated from now on and not yet freed).
pub(crate) fn count_heap() {
    COUNTING.store(true, Relaxed);
}

/// Live heap counted since [`count_heap`], in KiB.
pub(crate) fn live_heap_kib() -> f64 {
    LIVE.load(Relaxed) as f64 / 1024.0
}

/// Runs `rounds` rounds of `variants` variants, in a rotating order (A B C, B C A, ...).
pub(crate) async fn interleave<F, Fut>(rounds: usize, variants: usize, mut f: F) -> Vec<Vec<f64>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = f64>,
{
    let mut out = vec![Vec::new(); variants];
    for round in 0..rounds {
        for i in 0..variants {
            let v = (round + i) % variants;
            out[v].push(f(v).await);
        }
    }
    out
}

/// Operations per second of `op`, run back to back for `dur` (after one warm-up call).
pub(crate) async fn rate<F, Fut>(dur: Duration, mut op: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    op().await;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < dur {
        op().await;
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Operations per second of `op` run by `tasks` concurrent tasks for `dur`.
pub(crate) async fn throughput<F, Fut>(dur: Duration, tasks: usize, op: F) -> f64
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    let deadline = started + dur;
    let op = &op;
    let workers = (0..tasks).map(|_| async move {
        let mut n = 0u64;
        while Instant::now() < deadline {
            op().await;
            n += 1;
        }
        n
    });
    let total: u64 = futures_join_all(workers).await.into_iter().sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// Joins futures on the current task (no spawn: they borrow).
pub(crate) async fn futures_join_all<Fut: Future>(
    futs: impl Iterator<Item = Fut>,
) -> Vec<Fut::Output> {
    let mut set: Vec<std::pin::Pin<Box<Fut>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<Fut::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("done")).collect()
}

/// The median connect time in milliseconds of `n` connections; `op` connects, returns the
/// time that took, then runs its first query and closes.
pub(crate) async fn connect_times<F, Fut>(n: usize, mut op: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(op().await.as_secs_f64() * 1000.0);
        // Let the server reap the backend before the next one.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    median(&mut times)
}

/// A multi-threaded tokio runtime with `workers` threads, as every timed part uses.
pub(crate) fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// VmRSS of a process in KiB.
pub(crate) fn rss_kib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) of this process.
pub(crate) fn cpu_time() -> Duration {
    stat_ticks(11)
}

/// CPU time (user + system) of this process's children that were waited for: `pgbench`.
pub(crate) fn children_cpu_time() -> Duration {
    stat_ticks(13)
}

/// The sum of two adjacent tick fields of /proc/self/stat, from `at` (0 = the state field).
fn stat_ticks(at: usize) -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(at).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(at + 1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}
