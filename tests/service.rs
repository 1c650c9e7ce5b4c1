//! What a service needs around the pool, against the real TLS test server: the
//! `after_connect` hook, lazy and warm pools, `ping`, spans, the pool's warnings and leak
//! detection.

mod support;

use neon_connect::{Options, Step};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{shared_server, verified_url};

#[tokio::test]
async fn after_connect_runs_on_every_new_connection_before_it_is_handed_out() {
    let url = verified_url(shared_server());
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let pool = Options::new(&url)
        .unwrap()
        .pool_size(2)
        .after_connect(move |client| {
            let counter = counter.clone();
            Box::pin(async move {
                client
                    .batch_execute(
                        "SET search_path TO hooked, public; SET statement_timeout = '7s'",
                    )
                    .await?;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        })
        .connect()
        .await
        .unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the first connection ran it"
    );
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap(); // a second, new connection
    for c in [&a, &b] {
        let row = c.query_one("SHOW search_path", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "hooked, public");
        let row = c.query_one("SHOW statement_timeout", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "7s");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    drop((a, b));
    // A reused connection does not run it again.
    let _c = pool.get().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failing_after_connect_fails_connect_with_a_readable_classified_error() {
    let url = verified_url(shared_server());
    let err = Options::new(&url)
        .unwrap()
        .after_connect(|client| {
            Box::pin(async move {
                client.batch_execute("SET ROLE no_such_role_here").await?;
                Ok(())
            })
        })
        .connect()
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("`after_connect` hook failed"), "{text}");
    assert!(text.contains("no_such_role_here"), "{text}");
    assert_eq!(err.step(), Some(Step::Startup), "{text}");
    assert_eq!(
        err.as_db_error().map(|db| db.code().code().to_string()),
        Some("22023".to_string()),
        "{text}"
    );

    // An error of the application's own is kept as the cause.
    let err = Options::new(&url)
        .unwrap()
        .after_connect(|_| Box::pin(async { Err("the tenant is not configured".into()) }))
        .connect()
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("`after_connect` hook failed"), "{text}");
    assert!(text.contains("the tenant is not configured"), "{text}");
}

#[tokio::test]
async fn connect_lazy_dials_nothing_but_still_refuses_bad_settings_at_once() {
    // Settings errors are not deferred to the first `get`.
    let err = Options::new("postgresql://app@127.0.0.1:1/app?sslmode=disable")
        .unwrap()
        .connect_lazy()
        .unwrap_err();
    assert_eq!(err.kind(), neon_connect::ErrorKind::TlsPolicy, "{err:#}");
    let err = Options::new(
        "postgresql://app@127.0.0.1/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    )
    .unwrap()
    .connect_lazy()
    .unwrap_err();
    assert_eq!(
        err.kind(),
        neon_connect::ErrorKind::RootCertificates,
        "{err:#}"
    );
    let err = Options::new("postgresql://app@127.0.0.1/app")
        .unwrap()
        .pool_size(0)
        .connect_lazy()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        neon_connect::ErrorKind::ConnectionString,
        "{err:#}"
    );

    // Nobody listens: building succeeds, `ping` says why it cannot connect.
    let server = shared_server();
    let url = format!(
        "postgresql://app:pw@127.0.0.1:{}/app?sslrootcert={}",
        support::free_port(),
        server.ca_file().display()
    );
    let pool = Options::new(&url)
        .unwrap()
        .connect_attempts(1)
        .connect_lazy()
        .expect("a lazy pool is built without dialing");
    assert_eq!(pool.status().size, 0);
    assert!(pool.info().is_none());
    let err = pool.ping().await.unwrap_err();
    assert_eq!(err.kind(), neon_connect::ErrorKind::Network, "{err:#}");
    support::assert_diagnosis(&err, neon_connect::Diagnosis::NetworkRefused);

    // A lazy pool to a live server opens its first connection on demand.
    let pool = Options::new(&verified_url(server))
        .unwrap()
        .connect_lazy()
        .unwrap();
    assert_eq!(pool.status().size, 0);
    pool.ping().await.expect("ping");
    assert_eq!(pool.status().size, 1);
    assert!(pool.info().is_some(), "ping remembers the first connection");
}

/// The backend pids of this application's connections, seen from another connection.
async fn backends(url: &str, app: &str) -> Vec<i32> {
    let (client, connection, _) = Options::new(url).unwrap().connect_one().await.unwrap();
    let task = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
            &[&app],
        )
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    rows.iter().map(|r| r.get(0)).collect()
}

/// Polls `check` every 100 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for _ in 0..100 {
        match check().await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_idle_keeps_connections_open_refills_them_and_renews_them_after_idle_timeout() {
    let url = verified_url(shared_server());
    let app = "service-min-idle";
    let pool = Options::new(&url)
        .unwrap()
        .application_name(app)
        .pool_size(4)
        .min_idle(2)
        .idle_timeout(Duration::from_secs(2))
        .connect_lazy()
        .unwrap();
    eventually("two idle connections opened in the background", || async {
        let s = pool.status();
        let pids = backends(&url, app).await;
        if s.size == 2 && s.available == 2 && pids.len() == 2 {
            Ok(())
        } else {
            Err(format!("{s:?}, backends {pids:?}"))
        }
    })
    .await;
    let first = backends(&url, app).await;

    // Two in use: two more are opened so that two stay idle.
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    eventually("refilled while two are in use", || async {
        let s = pool.status();
        if s.size == 4 && s.available == 2 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    drop((a, b));

    // Past idle_timeout, idle connections are closed and new ones opened.
    eventually("idle connections renewed after idle_timeout", || async {
        let now = backends(&url, app).await;
        if now.len() >= 2 && now.iter().all(|p| !first.contains(p)) {
            Ok(())
        } else {
            Err(format!("first {first:?}, now {now:?}"))
        }
    })
    .await;
    assert!(pool.status().available >= 2);
    pool.close();
}

#[tokio::test]
async fn leak_detection_logs_a_long_checkout_once_with_where_it_was_taken() {
    let log = support::LogCapture::default();
    let _guard = log.install(tracing::Level::WARN);
    let pool = Options::new(&verified_url(shared_server()))
        .unwrap()
        .leak_detection(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    // Returned in time: nothing is logged.
    let quick = pool.get().await.unwrap();
    drop(quick);
    let line = line!() + 1;
    let held = pool.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = log.text();
    let at = format!("tests/service.rs:{line}:");
    assert_eq!(text.matches("(leak_detection)").count(), 1, "{text}");
    assert!(text.contains(&at), "names {at}: {text}");
    assert!(text.contains("checked out for over 0.2s"), "{text}");
}

#[tokio::test]
async fn the_pool_lists_its_warnings_and_words_channel_binding_precisely() {
    let server = shared_server();
    // verify-full on a direct endpoint: nothing to warn about.
    let pool = Options::new(&verified_url(server))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert!(pool.warnings().is_empty(), "{:?}", pool.warnings());

    // require without roots: the server could be impersonated.
    let pool = Options::new(&format!("{}?sslmode=require", server.url()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(pool.warnings().len(), 1, "{:?}", pool.warnings());
    assert!(
        pool.warnings()[0].contains("could impersonate the server"),
        "{:?}",
        pool.warnings()
    );

    // With channel binding required, the login cannot be completed by a man in the middle:
    // the warning says what stays open instead.
    let pool = Options::new(&format!(
        "{}?sslmode=require&channel_binding=require",
        server.url()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let info = pool.info().unwrap();
    assert!(info.channel_binding_required, "{info:?}");
    let w = pool.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(!w[0].contains("could impersonate"), "{w:?}");
    assert!(w[0].contains("cannot complete the SCRAM login"), "{w:?}");
    assert!(w[0].contains("guess the password offline"), "{w:?}");

    // A pooled endpoint (not dialed: a lazy pool) and prefer.
    let pool = Options::new(
        "postgresql://app:pw@ep-cool-123456-pooler.us-east-2.aws.neon.tech/app?sslmode=prefer",
    )
    .unwrap()
    .connect_lazy()
    .unwrap();
    let w = pool.warnings();
    assert!(
        w.iter()
            .any(|w| w.contains("sslmode=prefer is treated as `require`")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w.contains("pooled (-pooler) endpoint")),
        "{w:?}"
    );
}

#[tokio::test]
async fn connection_info_debug_is_a_summary_not_the_certificates_der() {
    let pool = Options::new(&verified_url(shared_server()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let text = format!("{:?}", pool.info().unwrap());
    assert!(text.len() < 1200, "{} bytes: {text}", text.len());
    assert!(text.contains("peer_certificates: [\""), "{text}");
    assert!(text.contains("CN=localhost (sha256:"), "{text}");
    assert!(text.contains("(sha256:"), "{text}");
    assert!(text.contains("protocol: \"TLSv1.3\""), "{text}");
}
