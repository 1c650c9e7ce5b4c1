//! `--loop`: one pooled loop alone, for callgrind (`scripts/bench-instructions`).

use crate::measure::futures_join_all;
use crate::target::{raw_deadpool, raw_deadpool_with_deadlines, Target};
use neon_connect::Options;
use neon_connect_testing::{PgServer, ServerOptions};

/// The loops: neon-connect's `Pool`; the same with a metrics recorder (Prometheus' exporter,
/// with the `metrics` feature) and a tracing subscriber that records the DEBUG spans (checkout,
/// connect), as a service that watches its pool runs it; raw deadpool-postgres as configured in
/// section 2 (no deadlines); raw deadpool-postgres with the deadlines a service sets on it
/// (wait 15 s, create 15 s, recycle 2 s, neon-connect's defaults).
const LOOPS: &str = "pool-ours|pool-ours-observed|pool-raw|pool-raw-deadlines";

/// `--loop NAME COUNT [TASKS]`: `COUNT` pooled checkouts + prepared `SELECT 1` (16
/// connections, `TASKS` tasks, 32 by default as in section 2) on a single-threaded runtime,
/// one of [`LOOPS`], against a local PostgreSQL 15 server.
/// Warm-up (server start, the 16 connections) is the same whatever `COUNT` is, so
/// `scripts/bench-instructions` runs two counts under callgrind and divides the difference.
pub(crate) fn one_loop(args: &[String]) {
    let (what, count) = match args {
        [what, count, ..] => (what.as_str(), count.parse::<usize>().expect("COUNT")),
        _ => panic!("usage: --loop {LOOPS} COUNT [TASKS]"),
    };
    let tasks: usize = args.get(2).map_or(32, |t| t.parse().expect("TASKS"));
    let server = PgServer::start(ServerOptions::default()).expect("PostgreSQL server");
    let t = Target::of(&server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let per_task = count / tasks;
    // The same loop for every pool: check out, prepare (cached), query, return.
    macro_rules! run {
        ($pool:expr) => {{
            let pool = &$pool;
            let mut held = Vec::new();
            for _ in 0..16 {
                held.push(pool.get().await.expect("warm"));
            }
            drop(held);
            futures_join_all((0..tasks).map(|_| async move {
                for _ in 0..per_task {
                    let c = pool.get().await.expect("get");
                    let st = c.prepare_cached("SELECT 1").await.expect("prepare");
                    c.query_one(&st, &[]).await.expect("query");
                }
            }))
            .await;
        }};
    }
    runtime.block_on(async {
        match what {
            "pool-ours" | "pool-ours-observed" => {
                if what == "pool-ours-observed" {
                    observe();
                }
                let pool = Options::new(&t.url)
                    .expect("options")
                    .pool_size(16)
                    .connect()
                    .await
                    .expect("pool");
                run!(pool)
            }
            "pool-raw" => run!(raw_deadpool(&t, 16)),
            "pool-raw-deadlines" => run!(raw_deadpool_with_deadlines(&t, 16)),
            other => panic!("unknown loop {other}: {LOOPS}"),
        }
    });
    println!("loop {what}: {} operations", per_task_total(count, tasks));
}

pub(crate) fn per_task_total(count: usize, tasks: usize) -> usize {
    count / tasks * tasks
}

/// What a service that watches its pool installs: a metrics recorder (with the `metrics`
/// feature) and a tracing subscriber at DEBUG, so the checkout and connect spans are recorded
/// (formatted into the subscriber's span store; written nowhere), or at INFO.
pub(crate) fn observe() {
    #[cfg(feature = "metrics")]
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the Prometheus recorder");
    // DEBUG records every checkout span; `NEON_CONNECT_BENCH_OBSERVE=info` installs the
    // subscriber at INFO, the usual production level, where the spans are off.
    let level = match std::env::var("NEON_CONNECT_BENCH_OBSERVE").as_deref() {
        Ok("info") => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::sink)
        .init();
}
