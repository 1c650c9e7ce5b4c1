//! sqlx 0.8 as a peer of `benches/connect` (what most users would pick instead): its own
//! connection options, `verify-full` against the benchmark's CA, ring through its `tls-rustls`
//! feature. A separate package, so that sqlx's features (it turns on `tracing`'s `log`) never
//! reach the benchmark binary, which must build neon-connect as its users do. The benchmark
//! runs this binary once per round and reads one line from its standard output:
//!
//! ```text
//! neon-connect-sqlx-peer connect-rate SECONDS     TARGET   # connections/s, CPU ms per connection
//! neon-connect-sqlx-peer pooled SECONDS TASKS SIZE TARGET  # queries/s
//! neon-connect-sqlx-peer connect-times N          TARGET   # median connect time, ms
//! neon-connect-sqlx-peer idle-memory N            TARGET   # VmRSS KiB, live heap KiB
//! TARGET = HOST PORT USER PASSWORD DBNAME CAFILE
//! ```
//!
//! The measuring code is the benchmark's own (`benches/connect/measure.rs`), so rates, CPU
//! time and heap are counted the same way as for the rows next to these.

#[allow(dead_code)]
#[path = "../../connect/measure.rs"]
mod measure;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};
use sqlx::Connection;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: measure::Counting = measure::Counting;

const USAGE: &str = "usage: neon-connect-sqlx-peer \
    connect-rate SECONDS | pooled SECONDS TASKS SIZE | connect-times N | idle-memory N, \
    then HOST PORT USER PASSWORD DBNAME CAFILE";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        usage()
    };
    let arity = match command.as_str() {
        "connect-rate" | "connect-times" | "idle-memory" => 1,
        "pooled" => 3,
        _ => usage(),
    };
    if rest.len() != arity + 6 {
        usage()
    }
    let (numbers, target) = rest.split_at(arity);
    let opts = options(target);
    if command == "idle-memory" {
        measure::count_heap();
    }
    let runtime = measure::runtime(2);
    runtime.block_on(async {
        match command.as_str() {
            "connect-rate" => {
                let round = Duration::from_secs_f64(number(&numbers[0]));
                let before = measure::cpu_time();
                let r = measure::rate(round, || connect_query_close(&opts)).await;
                let spent = measure::cpu_time() - before;
                let cpu_ms = spent.as_secs_f64() * 1000.0 / (r * round.as_secs_f64());
                println!("{r} {cpu_ms}");
            }
            "pooled" => {
                let round = Duration::from_secs_f64(number(&numbers[0]));
                let tasks = number(&numbers[1]) as usize;
                let size = number(&numbers[2]) as u32;
                let pool = pool(&opts, size).await;
                warm(&pool, size as usize).await;
                let q = measure::throughput(round, tasks, || pooled_select1(&pool)).await;
                println!("{q}");
                pool.close().await;
            }
            "connect-times" => {
                let n = number(&numbers[0]) as usize;
                let ms = measure::connect_times(n, || timed_connect(&opts)).await;
                println!("{ms}");
            }
            _ => {
                let n = number(&numbers[0]) as u32;
                let pool = pool(&opts, n).await;
                warm(&pool, n as usize).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let rss = measure::rss_kib("self").unwrap_or(f64::NAN);
                println!("{rss} {}", measure::live_heap_kib());
            }
        }
    });
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn number(s: &str) -> f64 {
    s.parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}\n{USAGE}"))
}

fn options(target: &[String]) -> PgConnectOptions {
    let [host, port, user, password, dbname, ca] = target else {
        usage()
    };
    PgConnectOptions::new_without_pgpass()
        .host(host)
        .port(port.parse().expect("PORT"))
        .username(user)
        .password(password)
        .database(dbname)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(ca)
}

/// Connect, a prepared `SELECT 1` (as tokio-postgres's `query_one`), close.
async fn connect_query_close(opts: &PgConnectOptions) {
    let mut c = PgConnection::connect_with(opts)
        .await
        .expect("sqlx connect");
    sqlx::query("SELECT 1")
        .fetch_one(&mut c)
        .await
        .expect("sqlx SELECT 1");
    c.close().await.expect("sqlx close");
}

/// Connect only; then a simple-protocol `SELECT 1` and close, outside the returned time.
async fn timed_connect(opts: &PgConnectOptions) -> Duration {
    let started = Instant::now();
    let mut c = PgConnection::connect_with(opts)
        .await
        .expect("sqlx connect");
    let took = started.elapsed();
    sqlx::raw_sql("SELECT 1")
        .execute(&mut c)
        .await
        .expect("sqlx SELECT 1");
    c.close().await.expect("sqlx close");
    took
}

/// A pool of `size` connections with sqlx's defaults (among them `test_before_acquire`: a
/// ping per checkout).
async fn pool(opts: &PgConnectOptions, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .connect_with(opts.clone())
        .await
        .expect("sqlx pool")
}

/// Opens every connection of the pool (all checked out at once), each runs `SELECT 1`, then
/// all go back idle.
async fn warm(pool: &PgPool, size: usize) {
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(pool.acquire().await.expect("sqlx acquire"));
    }
    for c in &mut held {
        sqlx::query("SELECT 1")
            .fetch_one(&mut **c)
            .await
            .expect("sqlx SELECT 1");
    }
}

/// One pooled checkout + prepared `SELECT 1`.
async fn pooled_select1(pool: &PgPool) {
    sqlx::query("SELECT 1")
        .fetch_one(pool)
        .await
        .expect("sqlx pooled SELECT 1");
}
