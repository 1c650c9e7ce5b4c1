//! `--loop`: one pooled loop alone, for callgrind (`scripts/bench-instructions`).

use crate::measure::futures_join_all;
use crate::target::{raw_deadpool, Target};
use neon_connect::Options;
use neon_connect_testing::{PgServer, ServerOptions};

/// `--loop pool-ours|pool-raw COUNT [TASKS]`: `COUNT` pooled checkouts + prepared `SELECT 1`
/// (16 connections, `TASKS` tasks, 32 by default as in section 2) on a single-threaded runtime,
/// neon-connect `Pool` or raw deadpool-postgres, against a local PostgreSQL 15 server.
/// Warm-up (server start, the 16 connections) is the same whatever `COUNT` is, so
/// `scripts/bench-instructions` runs two counts under callgrind and divides the difference.
pub(crate) fn one_loop(args: &[String]) {
    let (what, count) = match args {
        [what, count, ..] => (what.as_str(), count.parse::<usize>().expect("COUNT")),
        _ => panic!("usage: --loop pool-ours|pool-raw COUNT [TASKS]"),
    };
    let tasks: usize = args.get(2).map_or(32, |t| t.parse().expect("TASKS"));
    let server = PgServer::start(ServerOptions::default()).expect("PostgreSQL server");
    let t = Target::of(&server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let per_task = count / tasks;
        match what {
            "pool-ours" => {
                let pool = Options::new(&t.url)
                    .expect("options")
                    .pool_size(16)
                    .connect()
                    .await
                    .expect("pool");
                let mut held = Vec::new();
                for _ in 0..16 {
                    held.push(pool.get().await.expect("warm"));
                }
                drop(held);
                let pool = &pool;
                futures_join_all((0..tasks).map(|_| async move {
                    for _ in 0..per_task {
                        let c = pool.get().await.expect("get");
                        let st = c.prepare_cached("SELECT 1").await.expect("prepare");
                        c.query_one(&st, &[]).await.expect("query");
                    }
                }))
                .await;
            }
            "pool-raw" => {
                let raw = raw_deadpool(&t, 16);
                let mut held = Vec::new();
                for _ in 0..16 {
                    held.push(raw.get().await.expect("warm"));
                }
                drop(held);
                let raw = &raw;
                futures_join_all((0..tasks).map(|_| async move {
                    for _ in 0..per_task {
                        let c = raw.get().await.expect("get");
                        let st = c.prepare_cached("SELECT 1").await.expect("prepare");
                        c.query_one(&st, &[]).await.expect("query");
                    }
                }))
                .await;
            }
            other => panic!("unknown loop {other}: pool-ours or pool-raw"),
        }
    });
    println!("loop {what}: {} operations", per_task_total(count, tasks));
}

pub(crate) fn per_task_total(count: usize, tasks: usize) -> usize {
    count / tasks * tasks
}
