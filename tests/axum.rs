//! The axum example's router, served in-process against the real TLS test server: HTTP
//! requests through the pool, the health endpoint, and graceful shutdown.

#[path = "../examples/axum/app.rs"]
mod app;

use neon_connect_testing::PgServer;
use std::future::IntoFuture;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request with `Connection: close`; returns the status code and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the service");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).expect("utf-8 response");
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_service_queries_reports_health_and_shuts_down() {
    tokio::time::timeout(Duration::from_secs(60), run())
        .await
        .expect("the test took over 60 s");
}

async fn run() {
    let server = PgServer::shared();
    // The password comes from a password file, as for services with secrets in `~/.pgpass`:
    // the URL has none. (The other test of this binary reads no environment.)
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    let escaped = server.password().replace('\\', "\\\\").replace(':', "\\:");
    let lines = format!(
        "otherhost:*:*:*:wrong\n{}:{}:{}:{}:{escaped}\n*:*:*:*:wrong-too\n",
        server.host(),
        server.port(),
        server.dbname(),
        server.user(),
    );
    std::fs::write(&passfile, lines).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::env::set_var("PGPASSFILE", &passfile);
    std::env::remove_var("PGPASSWORD");
    let url = format!(
        "postgresql://{}@{}:{}/{}?sslrootcert={}",
        server.user(),
        server.host(),
        server.port(),
        server.dbname(),
        server.ca_file().display()
    );
    // The example's /metrics: a Prometheus recorder, installed before the pool opens its
    // first connection (the only global recorder of this test binary).
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the Prometheus recorder");
    let pool = neon_connect::Options::new(&url)
        .unwrap()
        .pool_size(3)
        .connect()
        .await
        .expect("pool to the test server");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(
        axum::serve(listener, app::app(pool.clone(), Some(metrics)))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );

    let (status, body) = http_get(addr, "/query?n=41").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], 42, "{body}");

    // Concurrent requests share the pool, which never grows past its size.
    let requests: Vec<_> = (0..12)
        .map(|i| tokio::spawn(async move { (i, http_get(addr, &format!("/query?n={i}")).await) }))
        .collect();
    for r in requests {
        let (i, (status, body)) = r.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["result"], i + 1, "{body}");
    }

    let (status, body) = http_get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true, "{body}");
    assert_eq!(v["max_size"], 3, "{body}");
    assert_eq!(v["waiting"], 0, "{body}");

    // The pool's metrics, in Prometheus' text format (recorded with the `metrics` feature,
    // which `scripts/test` turns on).
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    if cfg!(feature = "metrics") {
        let opened = body
            .lines()
            .find_map(|l| l.strip_prefix("neon_connect_connections_opened_total "))
            .unwrap_or_else(|| panic!("no connections-opened counter in:\n{body}"));
        let opened: u64 = opened.trim().parse().unwrap();
        assert!((1..=3).contains(&opened), "opened {opened}:\n{body}");
        // 14 checkouts so far (13 queries, one ping), each timed.
        let checkouts = body
            .lines()
            .find_map(|l| l.strip_prefix("neon_connect_checkout_wait_seconds_count "))
            .unwrap_or_else(|| panic!("no checkout-wait histogram in:\n{body}"));
        assert!(checkouts.trim().parse::<u64>().unwrap() >= 14, "{body}");
        assert!(body.contains("neon_connect_connections_in_use"), "{body}");
    }
    let size = v["size"].as_u64().unwrap();
    assert!((1..=3).contains(&size), "{body}");
    assert_eq!(
        v["available"].as_u64().unwrap(),
        size,
        "all connections idle: {body}"
    );

    // A bad parameter is the client's error, not the server's.
    let (status, _) = http_get(addr, "/query?n=abc").await;
    assert_eq!(status, 400);

    // A statement the server refuses: the response says what and why, in one line, not
    // `db error`.
    let (status, body) = http_get(addr, &format!("/query?n={}", i64::MAX)).await;
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["error"],
        "bigint out of range (SQLSTATE 22003 numeric_value_out_of_range); help: check the values passed to the statement",
        "{body}"
    );
    assert_eq!(v["diagnosis"], "query-data", "{body}");
    assert_eq!(v["sqlstate"], "22003", "{body}");
    assert_eq!(v["retryable"], false, "{body}");

    // The sessions the service opened carry the default application_name.
    let client = pool.get().await.unwrap();
    let name: String = client
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, neon_connect::DEFAULT_APPLICATION_NAME);
    drop(client);

    // Graceful shutdown: the server future completes without error, and the port is closed.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), service)
        .await
        .expect("shutdown within 10 s")
        .unwrap()
        .expect("serve ended without error");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
    pool.close();
    assert!(pool.get().await.is_err());
}

/// `/health` answers 503 with the error's one line when the database cannot be reached (a
/// lazy pool to a port nobody listens on).
#[tokio::test]
async fn health_is_503_with_the_errors_one_line_when_the_database_is_down() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let server = PgServer::shared();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!(
            "postgresql://app:secret-pw@127.0.0.1:{port}/app?sslrootcert={}",
            server.ca_file().display()
        );
        let pool = neon_connect::Options::from_connection_string(
            neon_connect::ConnectionString::parse(&url).unwrap(),
        )
        .connect_attempts(1)
        .connect_lazy()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = tokio::spawn(axum::serve(listener, app::app(pool, None)).into_future());
        let (status, body) = http_get(addr, "/health").await;
        assert_eq!(status, 503, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ok"], false, "{body}");
        assert_eq!(v["diagnosis"], "network-refused", "{body}");
        let error = v["error"].as_str().unwrap();
        assert!(!error.contains('\n'), "one line: {error}");
        assert!(
            error.starts_with("connection refused by \"127.0.0.1:"),
            "{error}"
        );
        assert!(error.contains("help: "), "{error}");
        assert!(!body.contains("secret-pw"), "{body}");
        service.abort();
    })
    .await
    .expect("the test took over 30 s");
}

/// Other drivers reuse the policy: plain tokio-postgres with `Options::tokio_postgres_config`
/// and `Options::rustls_connector` connects, and the connector still verifies the certificate.
#[tokio::test]
async fn plain_tokio_postgres_with_the_crates_connector() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let server = PgServer::shared();
        // Parsed without the environment: the other test in this binary changes it.
        let options = |ca: &std::path::Path| {
            let url = format!("{}?sslrootcert={}", server.url(), ca.display());
            neon_connect::Options::from_connection_string(
                neon_connect::ConnectionString::parse(&url).unwrap(),
            )
        };
        let good = options(server.ca_file());
        let config = good.tokio_postgres_config().await.unwrap();
        let (client, connection) = config
            .connect(good.rustls_connector().await.unwrap())
            .await
            .expect("tokio-postgres with our connector");
        let driver = tokio::spawn(connection);
        let n: i64 = client
            .query_one("SELECT $1::int8 + 1", &[&41i64])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 42);
        drop(client);
        driver.await.unwrap().unwrap();

        // A CA that did not sign the server's certificate: the connector refuses the server.
        let dir = tempfile::tempdir().unwrap();
        let other_ca = dir.path().join("other-ca.pem");
        let other = neon_connect_testing::TestCa::new("some other CA").unwrap();
        std::fs::write(&other_ca, other.cert_pem()).unwrap();
        let bad = options(&other_ca);
        let Err(err) = bad
            .tokio_postgres_config()
            .await
            .unwrap()
            .connect(bad.rustls_connector().await.unwrap())
            .await
        else {
            panic!("an unknown CA must be refused");
        };
        assert!(
            format!("{err:?}").to_lowercase().contains("certificate"),
            "{err:?}"
        );
    })
    .await
    .expect("the test took over 30 s");
}
