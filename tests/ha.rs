//! High availability against a real primary and streaming standby (`ReplicatedPair`): every
//! `target_session_attrs` value compared with libpq (psql) on the same pair, the errors when no
//! server matches, a server that turns read-only under a pool, and a failover under load.
//!
//! Figures are printed to stderr (`cargo test --test ha -- --nocapture`). The failover runs
//! once (about 2 s); `NEON_CONNECT_HA_SOAK=N` repeats it on N fresh pairs and prints each run.

mod support;

use neon_connect::config::ServerRole;
use neon_connect::{ConnectionString, Diagnosis, Options, Pool};
use neon_connect_testing::{trust_test_ca_as_system_store, ReplicatedPair};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn start_pair() -> ReplicatedPair {
    trust_test_ca_as_system_store().expect("test CA bundle");
    ReplicatedPair::start().expect("start the replicated pair")
}

/// `base` (a URL without a query) with TLS verified against the test CA and `query` added.
fn with_query(pair: &ReplicatedPair, base: &str, query: &str) -> String {
    let ca = pair.primary().ca_file().display().to_string();
    let sep = if query.is_empty() { "" } else { "&" };
    format!("{base}?sslmode=verify-full&sslrootcert={ca}{sep}{query}")
}

/// The port of the server neon-connect lands on, or its error.
async fn our_port(url: &str) -> Result<(u16, Option<ServerRole>), neon_connect::Error> {
    let options = Options::new(url)?.connect_attempts(1);
    let (client, connection, info) = options.connect_one().await?;
    let task = tokio::spawn(connection);
    let row = client.query_one("SHOW port", &[]).await.expect("show port");
    let port: String = row.get(0);
    drop(client);
    let _ = task.await;
    Ok((port.parse().unwrap(), info.server_role))
}

fn port_of(pair: &ReplicatedPair, port: u16) -> &'static str {
    if port == pair.primary().port() {
        "primary"
    } else if port == pair.standby().port() {
        "standby"
    } else {
        "?"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_session_attrs_value_lands_where_libpq_does() {
    let pair = start_pair();
    let orders = [
        ("primary first", pair.url()),
        ("standby first", pair.url_standby_first()),
    ];
    let expected = |attrs: &str, order: &str| match (attrs, order) {
        ("any", "primary first") => "primary",
        ("any", _) => "standby",
        ("read-write" | "primary", _) => "primary",
        ("read-only" | "standby" | "prefer-standby", _) => "standby",
        _ => unreachable!(),
    };
    for attrs in ATTRS {
        for (order, base) in &orders {
            let url = with_query(&pair, base, &format!("target_session_attrs={attrs}"));
            let (port, role) = our_port(&url)
                .await
                .unwrap_or_else(|e| panic!("{attrs}, {order}: {e:#}"));
            let libpq: u16 = pair
                .libpq_psql(&url, "show port")
                .unwrap_or_else(|e| panic!("psql {attrs}, {order}: {e}"))
                .parse()
                .unwrap();
            eprintln!(
                "target_session_attrs={attrs:<14} {order}: neon-connect -> {} ({role:?}), libpq -> {}",
                port_of(&pair, port),
                port_of(&pair, libpq)
            );
            assert_eq!(
                port, libpq,
                "{attrs}, {order}: neon-connect and libpq differ"
            );
            assert_eq!(
                port_of(&pair, port),
                expected(attrs, order),
                "{attrs}, {order}"
            );
            let want_role = if port == pair.primary().port() {
                ServerRole::Primary
            } else {
                ServerRole::Standby
            };
            assert_eq!(role, Some(want_role), "{attrs}, {order}");
        }
    }

    // load_balance_hosts=random: read-write always finds the primary, any reaches both.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let rw = with_query(
            &pair,
            &pair.url(),
            "target_session_attrs=read-write&load_balance_hosts=random",
        );
        assert_eq!(our_port(&rw).await.unwrap().0, pair.primary().port());
        let any = with_query(&pair, &pair.url(), "load_balance_hosts=random");
        seen.insert(our_port(&any).await.unwrap().0);
    }
    assert_eq!(seen.len(), 2, "random order reached {seen:?}");

    // prefer-standby with no standby among the hosts: the second pass takes the primary.
    let primary_only = format!(
        "postgresql://neon:npg_TestSecret42@localhost:{}/neondb",
        pair.primary().port()
    );
    let url = with_query(&pair, &primary_only, "target_session_attrs=prefer-standby");
    assert_eq!(our_port(&url).await.unwrap().0, pair.primary().port());
    assert_eq!(
        pair.libpq_psql(&url, "show port").unwrap(),
        pair.primary().port().to_string()
    );
}

/// Every `target_session_attrs` value libpq 14+ knows.
const ATTRS: [&str; 6] = [
    "any",
    "read-write",
    "read-only",
    "primary",
    "standby",
    "prefer-standby",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_server_is_its_own_error_naming_each_host() {
    let pair = start_pair();
    let standby = pair.standby().port();
    // Two standbys (the same one twice) and a wish for a primary: every host answered, so it
    // fails at once, like libpq, naming what each host is.
    let base = format!(
        "postgresql://neon:npg_TestSecret42@localhost:{standby},localhost:{standby}/neondb"
    );
    let url = with_query(&pair, &base, "target_session_attrs=primary");
    let began = Instant::now();
    let e = Options::new(&url).unwrap().connect().await.unwrap_err();
    eprintln!("{}", e.report());
    support::assert_diagnosis(&e, Diagnosis::TargetSessionAttrsUnmatched);
    assert!(!e.is_retryable());
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    let expected = format!("no server matched `target_session_attrs=primary`: localhost:{standby} is a standby, localhost:{standby} is a standby");
    assert!(e.message().contains(&expected), "{}", e.message());
    let libpq = pair.libpq_psql(&url, "select 1").unwrap_err();
    eprintln!("libpq: {libpq}");
    assert!(libpq.contains("server is in hot standby mode"), "{libpq}");

    // One host: its own message.
    let one = format!("postgresql://neon:npg_TestSecret42@localhost:{standby}/neondb");
    let e = Options::new(&with_query(&pair, &one, "target_session_attrs=read-write"))
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    support::assert_diagnosis(&e, Diagnosis::TargetSessionAttrsUnmatched);
    assert!(
        e.message().contains(&format!("the server \"localhost:{standby}\" is a standby, and `target_session_attrs=read-write` asks for a server that accepts writes")),
        "{}",
        e.message()
    );

    // The primary is down and the standby not promoted yet: a failover may be in progress, so
    // it is retried within connect_timeout, then fails naming both hosts.
    pair.stop_primary().unwrap();
    let url = with_query(
        &pair,
        &pair.url(),
        "target_session_attrs=read-write&connect_timeout=2",
    );
    let began = Instant::now();
    let e = Options::new(&url).unwrap().connect().await.unwrap_err();
    let took = began.elapsed();
    eprintln!("after {took:?}: {}", e.report());
    support::assert_diagnosis(&e, Diagnosis::TargetSessionAttrsUnmatched);
    assert!(e.is_retryable());
    assert!(e.message().contains("attempts"), "{}", e.message());
    assert!(
        e.message().contains(&format!(
            "localhost:{} failed (network), localhost:{standby} is a standby",
            pair.primary().port()
        )),
        "{}",
        e.message()
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
}

/// A pooled connection whose server turns read-only (`default_transaction_read_only` on and
/// reloaded): its next write fails with 25006, and the pool retires it instead of handing it
/// out again; with no writable server left, `get` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_server_turned_read_only_is_retired() {
    let pair = start_pair();
    let primary = pair.primary();
    primary.psql("create table w (id int)").unwrap();
    let url = with_query(&pair, &pair.url(), "target_session_attrs=read-write");
    let pool = Options::new(&url)
        .unwrap()
        .pool_size(1)
        .connect()
        .await
        .unwrap();
    write(&pool).await.unwrap();

    primary
        .psql("alter system set default_transaction_read_only = on")
        .unwrap();
    primary.reload().unwrap();
    let e = write(&pool).await.unwrap_err();
    eprintln!("write after the server turned read-only: {e}");
    assert!(e.contains("25006") || e.contains("read-only"), "{e}");
    // The same pool now finds no writable server: the connection was not handed out again.
    let e = pool.get().await.unwrap_err();
    eprintln!("get: {e:#}");
    support::assert_diagnosis(&e, Diagnosis::TargetSessionAttrsUnmatched);
    assert!(
        e.message().contains("is a read-only primary"),
        "{}",
        e.message()
    );

    primary
        .psql("alter system reset default_transaction_read_only")
        .unwrap();
    primary.reload().unwrap();
    write(&pool).await.unwrap();
}

/// One write through the pool; the error as text (with its SQLSTATE).
async fn write(pool: &Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| format!("get: {e:#}"))?;
    client
        .execute("insert into w values (1)", &[])
        .await
        .map(drop)
        .map_err(|e| {
            format!(
                "{:?}: {}",
                e.code().map(|c| c.code()),
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_owned())
            )
        })
}

/// What one failover run measured.
#[derive(Debug)]
struct Failover {
    requests: usize,
    failed: usize,
    longest: Duration,
    /// From the `pg_promote()` call to the end of the first write that succeeded after it.
    promotion_to_write: Duration,
    /// How long `pg_promote()` took (until the standby accepted writes).
    promote_took: Duration,
    rows: i64,
    acknowledged: usize,
}

/// A pool on `primary,standby` with `target_session_attrs=read-write` writes every 50 ms from
/// two tasks; the primary is stopped, then the standby promoted.
async fn failover_once() -> Failover {
    let pair = Arc::new(start_pair());
    pair.primary()
        .psql("create table w (id bigserial primary key, at timestamptz default now())")
        .unwrap();
    pair.wait_for_catch_up().unwrap();
    let url = with_query(&pair, &pair.url(), "target_session_attrs=read-write");
    let cs = ConnectionString::parse(&url).unwrap();
    let pool = Options::from_connection_string(cs)
        .pool_size(4)
        .connect()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // (started, took, ok, error)
    type Log = Arc<Mutex<Vec<(Instant, Duration, Result<(), String>)>>>;
    let log: Log = Arc::default();
    let mut writers = Vec::new();
    for _ in 0..2 {
        let (pool, stop, log) = (pool.clone(), stop.clone(), log.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let began = Instant::now();
                let result = async {
                    let client = pool.get().await.map_err(|e| format!("get: {e}"))?;
                    client
                        .execute("insert into w default values", &[])
                        .await
                        .map(drop)
                        .map_err(|e| {
                            format!(
                                "insert: {}",
                                e.as_db_error().map_or(e.to_string(), |d| format!(
                                    "{}: {}",
                                    d.code().code(),
                                    d.message()
                                ))
                            )
                        })
                }
                .await;
                log.lock().unwrap().push((began, began.elapsed(), result));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = pair.clone();
    let stopped = tokio::task::spawn_blocking(move || {
        p.stop_primary().unwrap();
        Instant::now()
    })
    .await
    .unwrap();
    let p = pair.clone();
    let promote_began = Instant::now();
    let promoted = tokio::task::spawn_blocking(move || {
        p.promote_standby().unwrap();
        Instant::now()
    })
    .await
    .unwrap();
    // Write for a while on the new primary.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first_after = log
            .lock()
            .unwrap()
            .iter()
            .any(|(began, _, r)| *began > promoted && r.is_ok());
        if first_after || Instant::now() > deadline {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    let log = log.lock().unwrap();
    for (began, took, r) in log.iter() {
        if let Err(e) = r {
            let at = |t: Instant| began.saturating_duration_since(t).as_millis();
            eprintln!(
                "  failed: started {} ms after the primary stopped, took {} ms: {e}",
                at(stopped),
                took.as_millis()
            );
            // Requests fail only while no writable server exists: one that was running on the
            // old primary when it stopped, or that started before the promotion finished.
            assert!(
                *began + *took >= stopped - Duration::from_secs(2) && *began <= promoted,
                "a request failed outside the failover window: {e}"
            );
        }
    }
    let first_write = log
        .iter()
        .filter(|(began, took, r)| r.is_ok() && *began + *took > promote_began)
        .map(|(began, took, _)| *began + *took)
        .min()
        .expect("no write succeeded after the promotion");
    let acknowledged = log.iter().filter(|(_, _, r)| r.is_ok()).count();
    let rows: i64 = pair
        .standby()
        .psql("select count(*) from w")
        .unwrap()
        .parse()
        .unwrap();
    Failover {
        requests: log.len(),
        failed: log.iter().filter(|(_, _, r)| r.is_err()).count(),
        longest: log.iter().map(|(_, t, _)| *t).max().unwrap_or_default(),
        promotion_to_write: first_write - promote_began,
        promote_took: promoted - promote_began,
        rows,
        acknowledged,
    }
}

/// The bound the README states: writes succeed again within this long after `pg_promote()`
/// (the promotion itself, plus at most one capped backoff of the connect retries).
const PROMOTION_TO_WRITE_BOUND: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_loses_no_acknowledged_write() {
    let runs: usize = std::env::var("NEON_CONNECT_HA_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut worst = Duration::ZERO;
    for run in 1..=runs {
        let f = failover_once().await;
        eprintln!(
            "failover run {run}/{runs}: {} requests, {} failed, longest request {:?}, pg_promote took {:?}, promotion to first successful write {:?}; {} rows on the new primary for {} acknowledged writes",
            f.requests, f.failed, f.longest, f.promote_took, f.promotion_to_write, f.rows, f.acknowledged
        );
        assert!(
            f.promotion_to_write < PROMOTION_TO_WRITE_BOUND,
            "writes resumed {:?} after the promotion",
            f.promotion_to_write
        );
        assert!(
            f.rows >= f.acknowledged as i64,
            "acknowledged writes were lost: {f:?}"
        );
        assert!(f.failed <= 4, "{f:?}");
        worst = worst.max(f.promotion_to_write);
    }
    eprintln!("worst promotion to first successful write over {runs} run(s): {worst:?}");
}

/// A `standby` pool whose standby is promoted: the server reports `in_hot_standby=off` with
/// the next statement's answer, and the pool stops handing that connection out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_pool_lets_go_of_a_promoted_standby() {
    let pair = start_pair();
    let url = with_query(
        &pair,
        &pair.url(),
        "target_session_attrs=standby&connect_timeout=1",
    );
    let pool = Options::new(&url)
        .unwrap()
        .pool_size(1)
        .connect()
        .await
        .unwrap();
    assert_eq!(pool.info().unwrap().server_role, Some(ServerRole::Standby));
    pair.stop_primary().unwrap();
    pair.promote_standby().unwrap();
    let client = pool.get().await.unwrap();
    client.simple_query("select 1").await.unwrap();
    drop(client);
    // The answer carries `in_hot_standby=off`; the connection's task records it right after
    // handing the answer over, so the very next checkout may still see the old role: the
    // connection is let go within a few checkouts, never kept.
    let mut e = None;
    for _ in 0..20 {
        match pool.get().await {
            Err(err) => {
                e = Some(err);
                break;
            }
            Ok(client) => {
                drop(client);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let e = e.expect("the promoted standby is let go");
    eprintln!("get after the promotion: {e:#}");
    support::assert_diagnosis(&e, Diagnosis::TargetSessionAttrsUnmatched);
    assert!(
        e.message()
            .contains(&format!("localhost:{} is a primary", pair.standby().port())),
        "{}",
        e.message()
    );
}
