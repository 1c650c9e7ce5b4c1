//! Tests of the real-server fixture (`neon_connect_testing`) itself.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use neon_connect_testing::{CertKind, LeafSpec, PgServer, ServerOptions, TestCa};

/// `None` when openssl is not installed (the check is skipped), else whether the server's
/// certificate verified against `ca_file` for host name `localhost`.
fn openssl_verifies(port: u16, ca_file: &Path) -> Option<bool> {
    if Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("openssl not found: skipping the s_client check");
        return None;
    }
    let out = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-starttls", "postgres", "-CAfile"])
        .arg(ca_file)
        .args(["-verify_return_error", "-verify_hostname", "localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    Some(out.status.success() && stdout.contains("Verify return code: 0 (ok)"))
}

/// psql over TCP (not the fixture's Unix socket) with the given sslmode (and more libpq settings).
fn psql_tcp(server: &PgServer, sslmode: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .arg("-XAtq")
        .arg(format!(
            "host={} hostaddr=127.0.0.1 port={} user={} dbname={} sslmode={sslmode} sslrootcert={}",
            server.host(),
            server.port(),
            server.user(),
            server.dbname(),
            server.ca_file().display()
        ))
        .args(["-c", "select 1"])
        .env("PGPASSWORD", server.password())
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn tls_and_plaintext_servers_start_concurrently() {
    let t0 = Instant::now();
    let tls = thread::spawn(|| PgServer::start(ServerOptions::default()));
    let plain = thread::spawn(|| PgServer::start(ServerOptions::default().tls(false)));
    let wrong =
        thread::spawn(|| PgServer::start(ServerOptions::default().cert(CertKind::WrongHost)));
    let tls = tls.join().unwrap().unwrap();
    let plain = plain.join().unwrap().unwrap();
    let wrong = wrong.join().unwrap().unwrap();
    eprintln!(
        "three servers (first of the process, includes initdb) in {:?}",
        t0.elapsed()
    );

    let t1 = Instant::now();
    let fourth = PgServer::start(ServerOptions::default()).unwrap();
    eprintln!("one more server from the template in {:?}", t1.elapsed());
    drop(fourth);

    for server in [&tls, &plain, &wrong] {
        assert_eq!(server.psql("select 1").unwrap(), "1");
    }
    assert_eq!(
        tls.psql("select current_user, current_database()").unwrap(),
        "neon|neondb"
    );
    assert_eq!(
        tls.url(),
        format!(
            "postgresql://neon:npg_TestSecret42@localhost:{}/neondb",
            tls.port()
        )
    );
    assert!(tls.tls() && !plain.tls());
    assert!(!format!("{tls:?}").contains("npg_TestSecret42"));

    // TCP: TLS-only server refuses plaintext, accepts verified TLS; the plaintext server is plain.
    assert_eq!(psql_tcp(&tls, "verify-full").unwrap(), "1");
    let refused = psql_tcp(&tls, "disable").unwrap_err();
    assert!(refused.contains("no encryption"), "{refused}");
    assert_eq!(psql_tcp(&plain, "disable").unwrap(), "1");
    assert!(psql_tcp(&plain, "require").is_err());
    let wrong_name = psql_tcp(&wrong, "verify-full").unwrap_err();
    assert!(
        wrong_name.contains("does not match host name"),
        "{wrong_name}"
    );

    if let Some(ok) = openssl_verifies(tls.port(), tls.ca_file()) {
        assert!(ok, "the Valid certificate should verify");
        assert_eq!(openssl_verifies(wrong.port(), wrong.ca_file()), Some(false));
    }
}

#[test]
fn stop_start_again_and_swap_certificate() {
    let server = PgServer::start(ServerOptions::default()).unwrap();
    let port = server.port();
    server
        .psql("create table kept (x int); insert into kept values (7)")
        .unwrap();

    let t = Instant::now();
    server.stop().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    server.stop().unwrap(); // idempotent
    server.start_again().unwrap();
    eprintln!("stop + start_again in {:?}", t.elapsed());
    assert_eq!(server.port(), port);
    assert_eq!(server.psql("select x from kept").unwrap(), "7");

    server.set_certificate(CertKind::UntrustedCa).unwrap();
    server.reload().unwrap();
    assert_eq!(server.cert_kind(), CertKind::UntrustedCa);
    assert!(psql_tcp(&server, "verify-full").is_err());
    if let Some(ok) = openssl_verifies(port, server.ca_file()) {
        assert!(!ok);
    }
    server.set_certificate(CertKind::Valid).unwrap();
    server.restart().unwrap();
    assert_eq!(psql_tcp(&server, "verify-full").unwrap(), "1");
}

#[test]
fn client_certificate_required() {
    let server = PgServer::start(ServerOptions::default().client_cert(true)).unwrap();
    // Without a client certificate: refused.
    assert!(psql_tcp(&server, "verify-full").is_err());
    // With one for the right user: accepted.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = TestCa::shared()
        .issue(&LeafSpec::client(server.user()))
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("c.crt"), dir.path().join("c.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = Command::new("psql")
        .arg("-XAtq")
        .arg(format!(
            "host=localhost hostaddr=127.0.0.1 port={} user={} dbname={} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            server.port(),
            server.user(),
            server.dbname(),
            server.ca_file().display(),
            cert_path.display(),
            key_path.display(),
        ))
        .args(["-c", "select 1"])
        .env("PGPASSWORD", server.password())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_cert_kind_is_served() {
    // Every kind generates, and PostgreSQL accepts it as its certificate.
    let server = PgServer::start(ServerOptions::default()).unwrap();
    for kind in CertKind::ALL {
        server.set_certificate(kind).unwrap();
        server.reload().unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(server.psql("select 1").unwrap(), "1");
        // libpq (OpenSSL) accepts a CA certificate as a server certificate, unlike webpki, so
        // CaAsLeaf verifies here; rustls must reject it. libpq also reads the host name from
        // the common name when there is no subjectAltName (CommonNameOnly); rustls does not.
        // OpenSSL allows deeper chains (ChainTooDeep) and larger certificate messages
        // (Oversized) than rustls does.
        let expect_ok = matches!(
            kind,
            CertKind::Valid
                | CertKind::CaAsLeaf
                | CertKind::CommonNameOnly
                | CertKind::Ed25519
                | CertKind::ChainTooDeep
                | CertKind::Oversized
        );
        // channel_binding=disable: libpq cannot hash an Ed25519 signature (see below).
        let verified = psql_tcp(&server, "verify-full channel_binding=disable");
        assert_eq!(verified.is_ok(), expect_ok, "{kind:?}: {verified:?}");
        if kind == CertKind::Ed25519 {
            // No hash for tls-server-end-point: channel binding is impossible.
            let err = psql_tcp(&server, "verify-full channel_binding=require").unwrap_err();
            assert!(err.contains("digest"), "{err}");
        }
    }
}

#[test]
fn shared_server_and_system_store() {
    let path = neon_connect_testing::trust_test_ca_as_system_store().unwrap();
    assert_eq!(
        std::env::var_os("SSL_CERT_FILE").as_deref(),
        Some(path.as_os_str())
    );
    assert_eq!(
        neon_connect_testing::trust_test_ca_as_system_store().unwrap(),
        path
    );
    let server = PgServer::shared();
    assert!(std::ptr::eq(server, PgServer::shared()));
    assert_eq!(server.psql("select 1").unwrap(), "1");
    assert_eq!(server.ca_file(), path);
}

/// `cargo test -p neon-connect-testing --test fixture -- --ignored --nocapture start_timings`
#[test]
#[ignore = "prints timings; run on demand"]
fn start_timings() {
    let t = Instant::now();
    let first = PgServer::start(ServerOptions::default()).unwrap();
    eprintln!(
        "first start (initdb + createdb into the template, copy, start): {:?}",
        t.elapsed()
    );
    for _ in 0..5 {
        let t = Instant::now();
        let server = PgServer::start(ServerOptions::default()).unwrap();
        eprintln!("start from the template: {:?}", t.elapsed());
        let t = Instant::now();
        drop(server);
        eprintln!("drop: {:?}", t.elapsed());
    }
    let t = Instant::now();
    first.restart().unwrap();
    eprintln!("restart: {:?}", t.elapsed());
    let t = Instant::now();
    first.set_certificate(CertKind::WrongHost).unwrap();
    first.reload().unwrap();
    eprintln!("set_certificate + reload: {:?}", t.elapsed());
}

const CHILD_ENV: &str = "NEON_CONNECT_FIXTURE_ABORT_CHILD";

/// Run by `servers_die_with_their_process` in a child process: starts servers, prints what
/// must disappear, and aborts (no destructors, no atexit).
#[test]
#[ignore = "helper of servers_die_with_their_process"]
fn child_starts_servers_then_aborts() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    use std::io::Write;
    let private = PgServer::start(ServerOptions::default().tls(false)).unwrap();
    for server in [PgServer::shared(), &private] {
        let pid_file = std::fs::read_to_string(server.data_dir().join("postmaster.pid")).unwrap();
        let pid = pid_file.lines().next().unwrap();
        println!(
            "SERVER {pid} {}",
            server.data_dir().parent().unwrap().display()
        );
    }
    println!("DIR 0 {}", private.ca_file().parent().unwrap().display());
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

fn process_alive(pid: &str) -> bool {
    // A zombie (state Z) is dead for our purposes: its parent is gone and init reaps it.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn servers_die_with_their_process() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_starts_servers_then_aborts",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child should have aborted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let things: Vec<(String, String)> = stdout
        .lines()
        .filter(|l| l.starts_with("SERVER ") || l.starts_with("DIR "))
        .map(|l| {
            let mut parts = l.splitn(3, ' ').skip(1);
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(things.len(), 3, "child output: {stdout}");
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    for (pid, dir) in &things {
        while (pid != "0" && process_alive(pid)) || Path::new(dir).exists() {
            assert!(
                Instant::now() < deadline,
                "postgres {pid} or {dir} outlived its process"
            );
            thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
