//! Every diagnosis provoked for real, with the full text the user sees asserted: real
//! PostgreSQL servers where the failure can be made real, a scripted Neon-like proxy for the
//! answers only Neon's proxy gives.

mod support;

use neon_connect::Diagnosis;
use neon_connect::{ConnectionString, Error, ErrorKind, Options, Step};
use neon_connect_testing::neon::{FakeNeonProxy, Script};
use neon_connect_testing::{trust_test_ca_as_system_store, CertKind, PgServer, ServerOptions};
use std::time::Duration;

use support::shared_server as shared;

fn variant(kind: CertKind) -> PgServer {
    support::start_server(ServerOptions::default().cert(kind))
}

async fn fail(url: &str) -> Error {
    fail_with(url, |o| o).await
}

/// [`fail`] with more options set by `more`.
async fn fail_with(url: &str, more: impl FnOnce(Options) -> Options) -> Error {
    trust_test_ca_as_system_store().expect("test CA bundle");
    let opts = more(
        Options::from_connection_string(ConnectionString::parse(url).expect(url))
            .connect_timeout(Duration::from_secs(3)),
    );
    let err = opts.connect().await.expect_err(url);
    support::assert_no_secret("the error", &format!("{err} {err:#} {err:?}"), &["npg_"]);
    err
}

fn proxy_url(port: u16, host: &str, query: &str) -> String {
    format!("postgresql://neon:npg_ProxySecret1@{host}:{port}/neondb?connect_timeout=3{query}")
}

#[tokio::test]
async fn untrusted_ca() {
    let s = variant(CertKind::UntrustedCa);
    let err = fail(&s.url()).await;
    support::assert_diagnosis(&err, Diagnosis::CertificateUnknownIssuer);
    assert_eq!(err.step(), Some(Step::TlsHandshake));
    assert!(err.to_string().starts_with(&format!(
        "the certificate of \"localhost:{}\" was not issued by a trusted authority (checked against the system root store (from SSL_CERT_FILE=",
        s.port()
    )), "{err}");
    assert!(err.to_string().ends_with("; help: if the server uses a private CA, set `sslrootcert=/path/to/ca.pem`; if it uses a public CA, the server may be omitting its intermediate certificate"), "{err}");
}

#[tokio::test]
async fn wrong_host_expired_ca_as_leaf() {
    let wrong = variant(CertKind::WrongHost);
    let err = fail(&wrong.url()).await;
    support::assert_diagnosis(&err, Diagnosis::CertificateWrongName);
    assert_eq!(
        err.to_string(),
        format!("the certificate of \"localhost:{}\" is not valid for the name \"localhost\"; it is valid for wrong.example.com; help: connect with a host name the certificate holds (not an IP address or an alias); `hostaddr` can pin the address while `host` keeps the name", wrong.port())
    );

    let expired = variant(CertKind::Expired);
    let err = fail(&expired.url()).await;
    support::assert_diagnosis(&err, Diagnosis::CertificateExpired);
    let text = err.to_string();
    assert!(text.contains("has expired (it expired at 2020-"), "{text}");
    assert!(
        text.ends_with(
            "help: renew the server's certificate (or fix this machine's clock if it is wrong)"
        ),
        "{text}"
    );

    let ca = variant(CertKind::CaAsLeaf);
    let err = fail(&ca.url()).await;
    support::assert_diagnosis(&err, Diagnosis::CertificateCaAsLeaf);
    assert!(err
        .to_string()
        .contains("presented a CA certificate as its own certificate"));
}

#[tokio::test]
async fn not_yet_valid_certificate() {
    let s = variant(CertKind::NotYetValid);
    let err = fail(&s.url()).await;
    support::assert_diagnosis(&err, Diagnosis::CertificateNotYetValid);
    let text = err.to_string();
    assert!(text.contains("is not valid yet (valid from "), "{text}");
    assert!(
        text.ends_with("help: check this machine's clock, or the server certificate's start date"),
        "{text}"
    );
}

#[tokio::test]
async fn channel_binding_required_but_not_offered() {
    let proxy = neon(Script::ScramWithoutPlus).await;
    let err = fail(&proxy_url(
        proxy.port(),
        "localhost",
        "&channel_binding=require",
    ))
    .await;
    support::assert_diagnosis(&err, Diagnosis::ChannelBindingNotOffered);
    assert_eq!(
        err.to_string(),
        format!("`channel_binding=require` failed at \"localhost:{}\": the server did not use channel binding; help: the server must offer SCRAM-SHA-256-PLUS over TLS (password_encryption = scram-sha-256 and a `hostssl ... scram-sha-256` line); a pooler or proxy in between can also prevent it", proxy.port())
    );
}

#[tokio::test]
async fn server_without_tls() {
    let s = PgServer::start(ServerOptions::default().tls(false)).expect("server");
    let err = fail(&s.url()).await;
    assert_eq!(err.kind(), ErrorKind::TlsRefused);
    assert_eq!(
        err.to_string(),
        format!("the server at \"localhost:{}\" does not support TLS, and neon-connect never connects without it; help: enable TLS on the server (`ssl = on` in postgresql.conf, with a certificate), or check that host and port point at the right server", s.port())
    );
}

#[tokio::test]
async fn wrong_password() {
    let s = shared();
    let err = fail(&format!(
        "postgresql://neon:npg_Wrong1@localhost:{}/neondb",
        s.port()
    ))
    .await;
    support::assert_diagnosis(&err, Diagnosis::AuthPassword);
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        format!("password authentication failed for user \"neon\" at \"localhost:{}\"; help: check the password in the connection string (or PGPASSWORD); reset it in the console if unsure", s.port())
    );
    // The server's own text stays reachable, once.
    assert!(
        format!("{err:#}").contains("caused by: db error"),
        "{err:#}"
    );
    assert_eq!(err.as_db_error().unwrap().code().code(), "28P01");
}

#[tokio::test]
async fn missing_database() {
    let s = shared();
    let err = fail(&format!(
        "postgresql://neon:{}@localhost:{}/nope",
        s.password(),
        s.port()
    ))
    .await;
    support::assert_diagnosis(&err, Diagnosis::DatabaseMissing);
    assert!(
        err.to_string().contains("database \"nope\" does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn closed_port_is_refused_and_retried_within_the_deadline() {
    let port = support::free_port();
    let err = fail(&format!(
        "postgresql://u:npg_x@127.0.0.1:{port}/db?connect_timeout=2"
    ))
    .await;
    support::assert_diagnosis(&err, Diagnosis::NetworkRefused);
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("connection refused by \"127.0.0.1:{port}\"")),
        "{text}"
    );
    assert!(text.ends_with("help: check the host and port, and that the server is running (a firewall that rejects port 5432 looks the same)"), "{text}");
}

#[tokio::test]
async fn unresolvable_name() {
    let err = fail("postgresql://u:npg_x@no-such-host.invalid/db").await;
    assert_eq!(err.kind(), ErrorKind::Dns);
    assert_eq!(
        err.to_string(),
        "could not resolve the host name \"no-such-host.invalid\"; help: check the host name for typos (copy it again from your provider's console) and this machine's DNS"
    );
}

#[tokio::test]
async fn every_host_of_a_multi_host_string_is_reported() {
    let free = support::free_port;
    let (a, b) = (free(), free());
    let err = fail(&format!(
        "postgresql://u:npg_x@127.0.0.1:{a},no-such-host.invalid:{b}/db?connect_timeout=2"
    ))
    .await;
    assert_eq!(err.attempts().len(), 2, "{err:#}");
    let report = err.report();
    assert!(
        report.starts_with("could not connect to any of the 2 hosts"),
        "{report}"
    );
    assert!(
        report.contains(&format!("  - connection refused by \"127.0.0.1:{a}\"")),
        "{report}"
    );
    assert!(
        report.contains("  - could not resolve the host name \"no-such-host.invalid\""),
        "{report}"
    );
}

#[tokio::test]
async fn pool_exhaustion_says_how_many_are_busy() {
    let s = shared();
    let pool = Options::new(&s.url())
        .unwrap()
        .pool_size(2)
        .wait_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let _a = pool.get().await.unwrap();
    let _b = pool.get().await.unwrap();
    let err = pool.get().await.unwrap_err();
    support::assert_diagnosis(&err, Diagnosis::PoolTimeout);
    assert_eq!(
        err.to_string(),
        "timed out after 0.3s waiting for a free connection: all 2 connections of the pool are in use (0 waiting); help: return connections sooner (drop clients after each request and avoid holding them across slow work), raise `pool_size`, or raise `wait_timeout`"
    );
}

#[tokio::test]
async fn channel_binding_without_a_hash() {
    let s = variant(CertKind::Ed25519);
    let err = fail(&format!("{}?channel_binding=require", s.url())).await;
    support::assert_diagnosis(&err, Diagnosis::ChannelBindingNoHash);
    assert!(err
        .to_string()
        .contains("its certificate's signature algorithm gives no channel binding hash"));
}

async fn neon(script: Script) -> FakeNeonProxy {
    trust_test_ca_as_system_store().expect("test CA bundle");
    FakeNeonProxy::start(script).await.expect("proxy")
}

#[tokio::test]
async fn neon_endpoint_not_specified_without_sni() {
    let proxy = neon(Script::RequireSni {
        other: "unused".into(),
    })
    .await;
    // An IP address host: rustls sends no SNI, so Neon's proxy falls back to the password hack.
    let err = fail(&proxy_url(proxy.port(), "127.0.0.1", "&sslmode=require")).await;
    assert_eq!(proxy.server_names(), vec![None]);
    support::assert_diagnosis(&err, Diagnosis::NeonEndpointNotSpecified);
    assert_eq!(
        err.message(),
        format!("Neon could not tell which endpoint \"127.0.0.1:{}\" is for: no SNI was sent: the host is an IP address, `hostaddr` was given without a name, or `sslsni=0`", proxy.port())
    );

    // With channel_binding=require the password is never sent in cleartext.
    let err = fail(&proxy_url(
        proxy.port(),
        "127.0.0.1",
        "&sslmode=require&channel_binding=require",
    ))
    .await;
    support::assert_diagnosis(&err, Diagnosis::ChannelBindingCleartext);
    assert_eq!(
        proxy.cleartext_passwords(),
        1,
        "only the first attempt sent it"
    );
}

#[tokio::test]
async fn neon_errors_are_told_apart_by_their_text() {
    let cases = [
        ("password authentication failed for user 'neon'", "auth-password", false),
        ("Control plane request failed: endpoint is disabled", "neon-endpoint-disabled", false),
        ("Control plane request failed: endpoint cannot be found", "neon-endpoint-not-found", false),
        ("Control plane request failed: endpoint is temporarily unavailable. Check your quotas and/or contact our support.", "neon-quota", false),
        ("Too many connections attempts", "neon-rate-limited", true),
        ("This IP address 127.0.0.1 is not allowed to connect to this endpoint. Please add it to the allowed list in the Neon console. Make sure to check for IPv4 or IPv6 addresses.", "neon-ip-not-allowed", false),
        ("insecure connection: secure channel data mismatch", "neon-channel-binding-mismatch", false),
        ("connection is insecure (try using `sslmode=require`)", "neon-insecure", false),
        // The compute's own errors, which the proxy forwards with XX000, verbatim.
        ("the database system is starting up", "server-starting", true),
        ("remaining connection slots are reserved for non-replication superuser connections", "too-many-connections", true),
        ("sorry, too many clients already", "too-many-connections", true),
        ("database \"nosuchdb\" does not exist", "database-missing", false),
        ("too many connections for role \"alice\"", "role-connection-limit", true),
        // Neon's control plane and its user-facing texts.
        ("Control plane request failed", "neon-control-plane", true),
        ("error communicating with the server: early eof", "neon-control-plane", true),
        ("Inconsistent project name inferred from SNI ('ep-cool-darkness-123456') and project option ('ep-other-654321')", "neon-endpoint-option-mismatch", false),
        ("The endpoint has been disabled. Enable it using Neon API and retry.", "neon-endpoint-disabled", false),
        ("This connection is trying to access this endpoint from a blocked network.", "neon-blocked-network", false),
        ("The requested endpoint could not be found, or you don't have access to it.", "neon-endpoint-not-found", false),
    ];
    for (text, id, retryable) in cases {
        let proxy = neon(Script::Error(text.into())).await;
        let opts = Options::from_connection_string(
            ConnectionString::parse(&proxy_url(proxy.port(), "localhost", "")).unwrap(),
        )
        .connect_timeout(Duration::from_secs(1))
        // Three attempts end well before the budget. (And when a budget does run out inside an
        // attempt, the last substantive failure is what the error reports, not the timeout.)
        .connect_attempts(3);
        let err = opts.connect().await.unwrap_err();
        let want = *Diagnosis::ALL.iter().find(|d| d.id() == id).expect(id);
        support::assert_diagnosis(&err, want);
        assert_eq!(err.is_retryable(), retryable, "{text}");
        assert!(err.help().is_some());
        assert!(!err.to_string().contains('\n'), "{err}");
        // Retried exactly when retryable (within the 1 s budget).
        assert_eq!(proxy.connections() > 1, retryable, "{text}: {err:#}");
        assert!(
            proxy
                .server_names()
                .iter()
                .all(|n| n.as_deref() == Some("localhost")),
            "SNI was sent"
        );
    }
}

#[tokio::test]
async fn neon_pooler_startup_parameter() {
    let proxy = neon(Script::Error("unsupported startup parameter: search_path. Please use unpooled connection or remove this parameter from the startup package.".into())).await;
    let err = fail(&proxy_url(
        proxy.port(),
        "localhost",
        "&options=-c%20search_path%3Dapp",
    ))
    .await;
    support::assert_diagnosis(&err, Diagnosis::NeonPoolerStartupParameter);
    assert!(err.help().unwrap().contains("without -pooler"));
}

#[tokio::test]
async fn neon_compute_unreachable_is_retryable() {
    let proxy = neon(Script::Error("Couldn't connect to compute node".into())).await;
    // Three attempts end long before the 3 s budget, so the last failure is the proxy's answer,
    // never a deadline that happened to land inside an attempt.
    let err = fail_with(&proxy_url(proxy.port(), "localhost", ""), |o| {
        o.connect_attempts(3)
    })
    .await;
    support::assert_diagnosis(&err, Diagnosis::NeonComputeUnreachable);
    assert!(err.is_retryable());
    assert!(proxy.connections() > 1, "it was retried");
}

#[tokio::test]
async fn idle_connection_terminated_by_the_server_is_replaced() {
    let s = shared();
    let pool = Options::new(&format!("{}?application_name=errors-57p01", s.url()))
        .unwrap()
        .pool_size(1)
        .connect()
        .await
        .unwrap();
    s.psql("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'errors-57p01'").unwrap();
    // Wait until the backend has exited (it sends 57P01 first), however slow the machine, then
    // let the connection task read it: a fixed 200 ms alone raced a slow backend exit.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s
        .psql("select count(*) from pg_stat_activity where application_name = 'errors-57p01'")
        .unwrap()
        != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backend did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = pool.get().await.expect("a fresh connection");
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// No error, for any password, contains the password or its percent-encoded form.
    #[test]
    fn no_error_contains_the_password(password in "npg_[ -~]{4,24}", bad in 0usize..6) {
        let enc = percent_encoding::utf8_percent_encode(&password, percent_encoding::NON_ALPHANUMERIC).to_string();
        let broken = ["?sslmode=verify", "?sslmod=require", ":99999", "?port=x", "%zz", "?connect_timeout=soon"][bad];
        let inputs = [
            format!("postgresql://u:{enc}@h/db{broken}"),
            format!("postgresql://u:{enc}{broken}@h/db"),
            format!("host=h password='{}' {}", password.replace('\\', "\\\\").replace('\'', "\\'"), broken.trim_start_matches('?')),
        ];
        for input in inputs {
            if let Err(e) = ConnectionString::parse(&input) {
                let all = format!("{e} {e:#} {e:?}");
                proptest::prop_assert!(!all.contains(&password), "{}", all);
                proptest::prop_assert!(!all.contains(&enc), "{}", all);
            }
        }
    }
}

#[tokio::test]
async fn no_connection_error_contains_a_wrong_password() {
    let s = shared();
    for password in ["npg_a%b@c:d/e", "npg_' OR 1=1", "npg_ünïcødé"] {
        let enc =
            percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let err = fail(&format!(
            "postgresql://neon:{enc}@localhost:{}/neondb",
            s.port()
        ))
        .await;
        let all = format!("{err} {err:#} {err:?}");
        assert!(!all.contains(password) && !all.contains(&enc), "{all}");
    }
}
