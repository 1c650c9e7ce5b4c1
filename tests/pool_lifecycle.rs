//! After the connect: a pooled client that never hangs, never serves a dead or busy connection
//! twice, and cancels what its caller abandoned. Real PostgreSQL servers; a relay that freezes
//! its open flows (a stuck NAT or L4 proxy); a private network namespace whose loopback goes
//! down (a packet-level black hole). Each test prints the figure it measured.

mod support;

use neon_connect::{Diagnosis, Error, Options, Pool};
use neon_connect_testing::{PgServer, Relay, ServerOptions};
use std::time::{Duration, Instant};

/// A pool on `url` with the shared test CA as the system store.
async fn pool(url: &str, size: usize) -> Pool {
    support::shared_server();
    Options::new(url)
        .unwrap()
        .pool_size(size)
        .connect()
        .await
        .expect("pool")
}

/// Whether the server still runs a statement whose text starts with `prefix`, after waiting
/// up to `within` for it to stop.
fn still_running(server: &PgServer, prefix: &str, within: Duration) -> bool {
    let started = Instant::now();
    loop {
        let n = server
            .psql(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '{prefix}%'"
            ))
            .unwrap();
        if n.trim() == "0" {
            return false;
        }
        if started.elapsed() > within {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn an_abandoned_statement_is_cancelled_and_does_not_block_the_next_user() {
    let server = support::shared_server();
    let pool = pool(&support::verified_url(server), 1).await;
    let client = pool.get().await.unwrap();
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        client.query("SELECT pg_sleep(5) /* abandoned */", &[]),
    )
    .await;
    assert!(abandoned.is_err(), "the caller's timeout fired");
    drop(client);

    let started = Instant::now();
    let client = pool.get().await.expect("the next user gets a connection");
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    let took = started.elapsed();
    assert_eq!(one, 1);
    println!("next get() + SELECT 1 after an abandoned pg_sleep(5): {took:?} (before: 4.81 s)");
    // It does not wait behind the abandoned statement (which had almost 5 s left).
    assert!(took < Duration::from_secs(2), "{took:?}");
    // And the server stopped running it.
    let s = server;
    let gone = tokio::task::spawn_blocking(move || {
        !still_running(s, "SELECT pg_sleep(5) /* abandoned", Duration::from_secs(2))
    })
    .await
    .unwrap();
    assert!(gone, "the abandoned statement was cancelled on the server");
}

#[tokio::test]
async fn a_transaction_left_open_is_rolled_back_before_the_next_user() {
    let server = support::shared_server();
    let pool = pool(&support::verified_url(server), 1).await;
    let client = pool.get().await.unwrap();
    client
        .batch_execute("BEGIN; SET LOCAL application_name = 'leaked-transaction'")
        .await
        .unwrap();
    drop(client); // no COMMIT, no ROLLBACK

    let client = pool.get().await.unwrap();
    let name: String = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(
        name, "leaked-transaction",
        "the transaction was rolled back"
    );
    // A savepoint exists only inside a transaction block: the next user is not in one.
    let err = client
        .batch_execute("SAVEPOINT probe")
        .await
        .expect_err("no transaction");
    assert_eq!(err.code().map(|c| c.code()), Some("25P01"), "{err}");
}

#[tokio::test]
async fn a_stuck_path_costs_one_timeout_not_every_request() {
    let server = support::shared_server();
    let relay = Relay::start(server.port()).unwrap();
    let url = support::verified_url(server).replace(
        &format!("localhost:{}", server.port()),
        &format!("localhost:{}", relay.port()),
    );
    let pool = pool(&url, 2).await;
    assert_eq!(support::select_one(&pool).await, Ok(1));
    // The middlebox loses its open flows; new connections still pass.
    relay.freeze();
    let mut ok = 0;
    for _ in 0..20 {
        let client = pool.get().await.expect("get");
        let r =
            tokio::time::timeout(Duration::from_secs(1), client.query_one("SELECT 1", &[])).await;
        if matches!(r, Ok(Ok(_))) {
            ok += 1;
        }
    }
    println!("stuck path: {ok} of 20 requests succeeded (before: 0 of 20)");
    assert!(ok >= 19, "{ok} of 20");
}

#[tokio::test]
async fn dead_idle_connections_cost_one_check_whatever_the_pool_size() {
    let server = support::shared_server();
    let relay = Relay::start(server.port()).unwrap();
    let url = support::verified_url(server).replace(
        &format!("localhost:{}", server.port()),
        &format!("localhost:{}", relay.port()),
    );
    support::shared_server();
    let pool = Options::new(&url)
        .unwrap()
        .pool_size(10)
        .check_after_idle(Duration::ZERO)
        .recycle_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    // Ten idle connections.
    let clients: Vec<_> = futures_join_all((0..10).map(|_| pool.get())).await;
    assert_eq!(clients.len(), 10);
    drop(clients);
    assert_eq!(pool.status().available, 10);
    relay.freeze();

    let started = Instant::now();
    let client = pool.get().await.expect("a fresh connection");
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    let took = started.elapsed();
    assert_eq!(one, 1);
    println!("get() with 10 dead idle connections (1 s check deadline): {took:?} (before: 10 checks, over 10 s)");
    // One failed check (1 s) and one new connection; not ten checks.
    assert!(took < Duration::from_secs(4), "{took:?}");
}

/// `get()` on every future at once, in order.
async fn futures_join_all<F, T, E>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    let mut out = Vec::new();
    let pending: Vec<_> = futures.map(Box::pin).collect();
    for f in pending {
        out.push(f.await.unwrap());
    }
    out
}

#[tokio::test]
async fn closing_the_pool_says_goodbye() {
    let server = support::start_server(
        ServerOptions::default()
            .conf("log_connections = on")
            .conf("log_disconnections = on"),
    );
    let pool = pool(&support::verified_url(&server), 3).await;
    let clients = futures_join_all((0..3).map(|_| pool.get())).await;
    for c in &clients {
        c.simple_query("").await.unwrap();
    }
    drop(clients);
    pool.close();
    // The goodbyes are sent by the connections' tasks: give them their bound.
    let started = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(server.log_file()).unwrap();
        if log.matches("disconnection:").count() >= 3 || started.elapsed() > Duration::from_secs(5)
        {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(log.matches("disconnection:").count(), 3, "{log}");
    for rude in [
        "unexpected eof",
        "could not receive data from client",
        "unexpected EOF",
    ] {
        assert!(
            !log.contains(rude),
            "a connection ended without a goodbye:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_connection_killed_under_a_checked_out_client_is_replaced_on_the_next_checkout() {
    let server = support::shared_server();
    let pool = pool(&support::verified_url(server), 1).await;
    let client = pool.get().await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    server
        .psql(&format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    let err: Error = client
        .query_one("SELECT 1", &[])
        .await
        .map_err(Error::from)
        .expect_err("terminated");
    support::assert_diagnosis(&err, Diagnosis::QueryConnectionLost);
    drop(client);
    assert_eq!(
        support::select_one(&pool).await,
        Ok(1),
        "replaced, not served again"
    );
}

/// A packet-level black hole: the test binary runs itself again inside a private network
/// namespace (`unshare -n`, as root), starts a server there, runs a long statement, and takes
/// the namespace's loopback down under it. The connection string's keepalive and
/// `tcp_user_timeout` values (short here) must end the statement with an error in bounded
/// time instead of a hang.
#[test]
fn a_black_hole_under_a_running_statement_ends_it_within_tcp_user_timeout() {
    black_hole("short");
}

/// The same with the crate's defaults (no keepalive or `tcp_user_timeout` in the string): the
/// statement must fail in about 30 s. On demand: it takes that long.
#[test]
#[ignore = "on demand (about 30 s): cargo test --test pool_lifecycle -- --ignored black_hole_with_the_defaults"]
fn black_hole_with_the_defaults() {
    black_hole("defaults");
}

/// Runs `black_hole_inner` inside a private network namespace with these settings.
fn black_hole(settings: &str) {
    if std::env::var_os("NEON_CONNECT_IN_BLACK_HOLE").is_some() {
        return; // the inner run: see `black_hole_inner`
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("unshare")
        .arg("-n")
        .arg(&exe)
        .args([
            "--exact",
            "black_hole_inner",
            "--nocapture",
            "--include-ignored",
        ])
        .env("NEON_CONNECT_IN_BLACK_HOLE", settings)
        .output()
        .expect("run unshare (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the black-hole run inside `unshare -n` failed (it needs root):\n{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("black hole:")) {
        println!("{line}");
    }
}

#[test]
#[ignore = "runs inside `unshare -n`, started by the black-hole tests above"]
fn black_hole_inner() {
    let settings =
        std::env::var("NEON_CONNECT_IN_BLACK_HOLE").expect("only runs inside the namespace");
    let defaults = settings == "defaults";
    let ip = |args: &[&str]| {
        let s = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(s.success(), "ip {args:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    let server = support::start_server(ServerOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = if defaults {
            support::verified_url(&server)
        } else {
            format!(
                "{}&tcp_user_timeout=2000&keepalives_idle=1&keepalives_interval=1&keepalives_count=2",
                support::verified_url(&server)
            )
        };
        let (wait, bound) = if defaults { (60, 45) } else { (20, 10) };
        let pool = pool(&url, 1).await;
        let client = pool.get().await.unwrap();
        let statement = tokio::spawn(async move {
            let r = client.query_one("SELECT pg_sleep(30)", &[]).await;
            r.map(|_| ()).map_err(Error::from)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        ip(&["link", "set", "lo", "down"]);
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(wait), statement)
            .await
            .expect("the statement ended instead of hanging")
            .unwrap();
        let took = started.elapsed();
        let err = result.expect_err("the path is gone");
        println!("black hole: ({settings} settings) the statement failed after {took:?}: {err}");
        support::assert_diagnosis(&err, Diagnosis::QueryConnectionLost);
        assert!(took < Duration::from_secs(bound), "{took:?}");
        ip(&["link", "set", "lo", "up"]);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_makes_callers_wait_for_a_returned_connection_instead_of_failing() {
    // 8 slots in all; 3 are held by another client, so 5 are left for a pool of 20.
    let server = support::start_server(ServerOptions::default().conf("max_connections = 8"));
    let url = support::verified_url(&server);
    let other = pool(&url, 3).await;
    let held = futures_join_all((0..3).map(|_| other.get())).await;

    let pool = Options::new(&url)
        .unwrap()
        .pool_size(20)
        .connect()
        .await
        .unwrap();
    let run = |pool: Pool, n: usize| async move {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut failed = Vec::new();
                    for _ in 0..8 {
                        let r: Result<(), Error> = async {
                            let c = pool.get().await?;
                            c.execute("SELECT pg_sleep(0.01)", &[]).await?;
                            Ok(())
                        }
                        .await;
                        if let Err(e) = r {
                            failed.push(e.to_string());
                        }
                    }
                    failed
                })
            })
            .collect();
        let mut failed = Vec::new();
        for t in tasks {
            failed.extend(t.await.unwrap());
        }
        failed
    };
    let failed = run(pool.clone(), 50).await;
    let size = pool.status().size;
    println!(
        "server full: {} of 400 requests failed; the pool settled at {size} connections (before: 7 of 400 failed)",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        size <= 5,
        "the pool grew past the server's free slots: {size}"
    );

    // Slots free up; the pool keeps its size for a while, and a burst waits for returns.
    drop(held);
    other.close();
    let failed = run(pool.clone(), 20).await;
    println!(
        "burst of 20 after slots freed: {} failed (before: 5 of 20)",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test]
async fn a_query_timeout_answers_the_caller_cancels_the_statement_and_retires_the_connection() {
    let server = support::shared_server();
    support::shared_server();
    let pool = Options::new(&support::verified_url(server))
        .unwrap()
        .pool_size(1)
        .query_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    let started = Instant::now();
    let err = Error::from(
        client
            .query_one("SELECT pg_sleep(5) /* past query_timeout */", &[])
            .await
            .expect_err("the deadline fires"),
    );
    let took = started.elapsed();
    println!("query_timeout=300ms on pg_sleep(5): the caller got its error after {took:?}: {err}");
    support::assert_diagnosis(&err, Diagnosis::QueryTimeout);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!err.to_string().contains('\n'));
    drop(client);
    let s = server;
    let gone = tokio::task::spawn_blocking(move || {
        !still_running(
            s,
            "SELECT pg_sleep(5) /* past query_timeout",
            Duration::from_secs(2),
        )
    })
    .await
    .unwrap();
    assert!(gone, "the statement was cancelled on the server");
    assert_eq!(
        support::select_one(&pool).await,
        Ok(1),
        "a fresh connection"
    );
}

#[tokio::test]
async fn a_query_timeout_fires_on_a_stuck_path() {
    let server = support::shared_server();
    let relay = Relay::start(server.port()).unwrap();
    let url = support::verified_url(server).replace(
        &format!("localhost:{}", server.port()),
        &format!("localhost:{}", relay.port()),
    );
    let pool = Options::new(&url)
        .unwrap()
        .pool_size(1)
        .query_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    relay.freeze();
    let client = pool.get().await.unwrap();
    let started = Instant::now();
    let err = Error::from(
        client
            .query_one("SELECT 1", &[])
            .await
            .expect_err("no answer through a frozen path"),
    );
    let took = started.elapsed();
    println!("query_timeout=500ms through a stuck middlebox: error after {took:?}");
    support::assert_diagnosis(&err, Diagnosis::QueryTimeout);
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop(client);
    assert_eq!(
        support::select_one(&pool).await,
        Ok(1),
        "a fresh connection"
    );
}
