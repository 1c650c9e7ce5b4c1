//! Every row of the TLS policy table, against real PostgreSQL servers with real certificates.
//! The "system" root store is the test CA, given through `SSL_CERT_FILE`.

mod support;

use neon_connect::Diagnosis;
use neon_connect::{ConnectionString, ErrorKind, Options, Verification};
use neon_connect_testing::{CertKind, PgServer, ServerOptions};
use std::sync::OnceLock;

use support::shared_server as setup;

fn server(kind: CertKind) -> &'static PgServer {
    static SERVERS: OnceLock<std::sync::Mutex<Vec<(CertKind, &'static PgServer)>>> =
        OnceLock::new();
    let servers = SERVERS.get_or_init(Default::default);
    let mut servers = servers.lock().unwrap();
    if let Some((_, s)) = servers.iter().find(|(k, _)| *k == kind) {
        return s;
    }
    let s: &'static PgServer = Box::leak(Box::new(support::start_server(ServerOptions {
        cert: kind,
        ..ServerOptions::default()
    })));
    servers.push((kind, s));
    s
}

fn no_tls_server() -> &'static PgServer {
    static S: OnceLock<PgServer> = OnceLock::new();
    S.get_or_init(|| {
        PgServer::start(ServerOptions {
            tls: false,
            ..ServerOptions::default()
        })
        .expect("start plain server")
    })
}

fn url(s: &PgServer, query: &str) -> String {
    if query.is_empty() {
        s.url()
    } else {
        format!("{}?{query}", s.url())
    }
}

async fn connect(url: &str) -> Result<neon_connect::Pool, neon_connect::Error> {
    Options::from_connection_string(ConnectionString::parse(url)?)
        .pool_size(2)
        .connect()
        .await
}

#[tokio::test]
async fn no_sslmode_is_verify_full_against_the_system_store() {
    let s = setup();
    let pool = connect(&url(s, "")).await.expect("connect");
    assert_eq!(support::select_one(&pool).await, Ok(1));
    let tls = pool.info().unwrap().tls.as_ref().expect("tls");
    assert_eq!(tls.verification, Verification::Full);
    assert!(tls.roots.contains("system root store"), "{}", tls.roots);
    assert!(tls.roots.contains("SSL_CERT_FILE"), "{}", tls.roots);
    assert_eq!(tls.protocol, "TLSv1.3");
}

#[tokio::test]
async fn no_sslmode_refuses_a_server_whose_ca_is_not_in_the_system_store() {
    let s = server(CertKind::UntrustedCa);
    let err = connect(&url(s, "")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Certificate, "{err:#}");
    support::assert_diagnosis(&err, Diagnosis::CertificateUnknownIssuer);
    assert!(
        err.to_string()
            .contains("not issued by a trusted authority"),
        "{err}"
    );
    assert!(err.to_string().contains("sslrootcert="), "{err}");
}

#[tokio::test]
async fn sslrootcert_file_replaces_the_system_store() {
    let s = setup();
    let ca = s.ca_file().display().to_string();
    let pool = connect(&url(s, &format!("sslrootcert={ca}")))
        .await
        .expect("connect");
    let tls = pool.info().unwrap().tls.clone().unwrap();
    assert_eq!(tls.verification, Verification::Full);
    assert!(tls.roots.contains(&ca), "{}", tls.roots);

    // A root file that does not hold the server's CA is not topped up from the system store.
    let other = server(CertKind::UntrustedCa);
    let err = connect(&url(other, &format!("sslrootcert={ca}")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Certificate, "{err:#}");
    support::assert_diagnosis(&err, Diagnosis::CertificateUnknownIssuerFile);
    assert!(
        err.to_string().contains(&ca),
        "names the file it checked against: {err}"
    );
}

#[tokio::test]
async fn pgsslrootcert_from_the_environment_is_used() {
    let s = setup();
    let ca = s.ca_file().display().to_string();
    let env = |k: &str| (k == "PGSSLROOTCERT").then(|| ca.clone());
    let cs = ConnectionString::parse_with_env(&s.url(), env).unwrap();
    let pool = Options::from_connection_string(cs)
        .connect()
        .await
        .expect("connect");
    assert!(pool
        .info()
        .unwrap()
        .tls
        .as_ref()
        .unwrap()
        .roots
        .contains(&ca));
}

#[tokio::test]
async fn sslrootcert_system_is_verify_full_and_refuses_weaker_modes() {
    let s = setup();
    let pool = connect(&url(s, "sslrootcert=system"))
        .await
        .expect("connect");
    assert_eq!(
        pool.info().unwrap().tls.as_ref().unwrap().verification,
        Verification::Full
    );
    for mode in ["require", "verify-ca", "prefer", "allow"] {
        let err = connect(&url(s, &format!("sslrootcert=system&sslmode={mode}")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TlsPolicy);
        assert_eq!(
            err.message(),
            format!("weak sslmode \"{mode}\" may not be used with sslrootcert=system (use \"verify-full\")")
        );
    }
    connect(&url(s, "sslrootcert=system&sslmode=verify-full"))
        .await
        .expect("verify-full");
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let s = server(CertKind::WrongHost);
    let ca = s.ca_file().display().to_string();
    let err = connect(&url(s, "sslmode=verify-full")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Certificate, "{err:#}");
    assert!(
        err.to_string()
            .contains("not valid for the name \"localhost\""),
        "{err}"
    );
    assert!(
        err.to_string().contains("wrong.example.com"),
        "names what the certificate holds: {err}"
    );

    let pool = connect(&url(s, &format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca ignores the name");
    assert_eq!(
        pool.info().unwrap().tls.as_ref().unwrap().verification,
        Verification::Chain
    );
    assert_eq!(support::select_one(&pool).await, Ok(1));
}

#[tokio::test]
async fn verify_ca_checks_the_chain() {
    let s = server(CertKind::UntrustedCa);
    let ca = s.ca_file().display().to_string();
    let err = connect(&url(s, &format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Certificate, "{err:#}");
}

#[tokio::test]
async fn verify_ca_needs_a_root_file() {
    let s = setup();
    let err = connect(&url(s, "sslmode=verify-ca")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TlsPolicy);
    assert!(err.help().unwrap().contains("sslrootcert"));
}

#[tokio::test]
async fn require_without_roots_encrypts_but_does_not_verify() {
    let s = server(CertKind::UntrustedCa);
    let pool = connect(&url(s, "sslmode=require"))
        .await
        .expect("require connects");
    let tls = pool.info().unwrap().tls.clone().expect("encrypted");
    assert_eq!(tls.verification, Verification::Unverified);
    assert_eq!(support::select_one(&pool).await, Ok(1));
}

#[tokio::test]
async fn require_with_a_root_file_verifies_like_verify_ca() {
    let trusted = setup();
    let ca = trusted.ca_file().display().to_string();
    let untrusted = server(CertKind::UntrustedCa);
    let err = connect(&url(
        untrusted,
        &format!("sslmode=require&sslrootcert={ca}"),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Certificate, "{err:#}");

    let wrong_host = server(CertKind::WrongHost);
    let pool = connect(&url(
        wrong_host,
        &format!("sslmode=require&sslrootcert={ca}"),
    ))
    .await
    .expect("chain only");
    assert_eq!(
        pool.info().unwrap().tls.as_ref().unwrap().verification,
        Verification::Chain
    );
}

#[tokio::test]
async fn prefer_and_allow_are_treated_as_require() {
    let s = server(CertKind::UntrustedCa);
    for mode in ["prefer", "allow"] {
        let pool = connect(&url(s, &format!("sslmode={mode}")))
            .await
            .expect(mode);
        assert!(pool.info().unwrap().tls.is_some(), "{mode} is encrypted");
        assert_eq!(support::select_one(&pool).await, Ok(1));
    }
    // ... and never fall back to plaintext.
    let plain = no_tls_server();
    for mode in ["prefer", "allow"] {
        let err = connect(&url(plain, &format!("sslmode={mode}")))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TlsRefused, "{mode}: {err:#}");
    }
}

#[tokio::test]
async fn disable_is_refused_with_the_fix() {
    let s = no_tls_server();
    let err = connect(&url(s, "sslmode=disable")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TlsPolicy);
    let text = err.to_string();
    assert!(text.contains("`sslmode=disable` is refused"), "{text}");
    assert!(text.contains("help: remove `sslmode=disable`"), "{text}");
}

#[tokio::test]
async fn a_server_without_tls_is_refused_in_every_mode() {
    let s = no_tls_server();
    for query in [
        "",
        "sslmode=require",
        "sslmode=verify-full",
        "sslmode=verify-ca&sslrootcert=system",
    ] {
        let query = query.replace(
            "sslrootcert=system",
            &format!("sslrootcert={}", s.ca_file().display()),
        );
        let err = connect(&url(s, &query)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TlsRefused, "{query}: {err:#}");
        assert!(err.to_string().contains("does not support TLS"), "{err}");
    }
}

#[tokio::test]
async fn unix_socket_hosts_skip_tls_as_in_libpq() {
    let s = setup();
    let kv = format!(
        "host={} port={} user={} password={} dbname={}",
        s.socket_dir().display(),
        s.port(),
        s.user(),
        s.password(),
        s.dbname()
    );
    let pool = connect(&kv).await.expect("unix socket");
    assert!(pool.info().unwrap().tls.is_none());
    assert_eq!(support::select_one(&pool).await, Ok(1));
    // sslmode=disable is harmless there.
    connect(&format!("{kv} sslmode=disable"))
        .await
        .expect("disable over a socket");
}

#[tokio::test]
async fn channel_binding_require_works_against_scram() {
    let s = setup();
    let pool = connect(&url(s, "channel_binding=require"))
        .await
        .expect("channel binding");
    let info = pool.info().unwrap();
    assert!(info.channel_binding_required);
    assert_eq!(
        info.tls.as_ref().unwrap().channel_binding_digest,
        Some("SHA-256")
    );
    assert_eq!(
        info.authentication,
        Some("SCRAM-SHA-256-PLUS (with channel binding)")
    );
    assert_eq!(support::select_one(&pool).await, Ok(1));
}

#[tokio::test]
async fn the_authentication_method_is_reported_as_seen_on_the_wire() {
    let s = setup();
    // channel_binding=disable: plain SCRAM; the default (prefer) uses the binding.
    let pool = connect(&url(s, "channel_binding=disable")).await.unwrap();
    assert_eq!(
        pool.info().unwrap().authentication,
        Some("SCRAM-SHA-256 (without channel binding)")
    );
    let pool = connect(&url(s, "")).await.unwrap();
    assert_eq!(
        pool.info().unwrap().authentication,
        Some("SCRAM-SHA-256-PLUS (with channel binding)")
    );
}

#[tokio::test]
async fn neon_style_url_with_verify_full_and_channel_binding() {
    // The three parameters plain tokio-postgres rejects, together.
    let s = setup();
    let u = url(
        s,
        &format!(
            "sslmode=verify-full&sslrootcert={}&channel_binding=require",
            s.ca_file().display()
        ),
    );
    assert!(u.parse::<neon_connect::tokio_postgres::Config>().is_err());
    let pool = neon_connect::neon_connect(&u).await.expect("connect");
    assert_eq!(support::select_one(&pool).await, Ok(1));
}

#[tokio::test]
async fn expired_certificate_is_refused_with_dates() {
    let s = server(CertKind::Expired);
    let err = connect(&url(s, "")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Certificate, "{err:#}");
    assert!(err.to_string().contains("has expired"), "{err}");
}

#[tokio::test]
async fn wrong_password_fails_at_startup_without_echoing_it() {
    let s = setup();
    let u = format!(
        "postgresql://{}:npg_WrongPassw0rd@localhost:{}/{}",
        s.user(),
        s.port(),
        s.dbname()
    );
    let err = connect(&u).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err:#}");
    let all = format!("{err} {err:#} {err:?}");
    assert!(!all.contains("npg_WrongPassw0rd"), "{all}");
    assert!(
        err.to_string()
            .contains("password authentication failed for user \"neon\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_serves_concurrent_tasks_within_its_size() {
    let s = setup();
    let pool = Options::new(&s.url())
        .unwrap()
        .pool_size(4)
        .connect()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let client = pool.get().await?;
            let row = client.query_one("SELECT $1::int + 1", &[&i]).await.unwrap();
            Ok::<i32, neon_connect::Error>(row.get(0))
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), i as i32 + 1);
    }
    let status = pool.status();
    assert!(status.size <= 4, "{status:?}");
    assert_eq!(status.max_size, 4);
}

#[tokio::test]
async fn no_password_in_debug_of_options_pool_or_connection_string() {
    let s = setup();
    let opts = Options::new(&s.url()).unwrap();
    let pool = opts.clone().connect().await.unwrap();
    let texts = [
        format!("{opts:?}"),
        format!("{pool:?}"),
        format!("{:?}", opts.connection_string()),
        opts.connection_string().to_string(),
    ];
    for t in texts {
        assert!(!t.contains(s.password()), "{t}");
    }
}

#[tokio::test]
async fn neon_hosts_try_direct_tls_and_fall_back_once_per_host() {
    // A Neon host name pinned to a PostgreSQL 15 server, which does not speak direct TLS: the
    // first connection tries direct TLS (PostgreSQL logs the ClientHello as a bad startup
    // packet), falls back to the TLS request at once, and later connections go straight there.
    let s = PgServer::start(ServerOptions::default()).expect("server");
    let kv = |extra: &str| {
        format!(
            "host=ep-cool-name-123456.us-east-2.aws.neon.tech hostaddr=127.0.0.1 port={} user={} password={} dbname={} sslmode=require {extra}",
            s.port(),
            s.user(),
            s.password(),
            s.dbname()
        )
    };
    let log = || std::fs::read_to_string(s.log_file()).unwrap_or_default();
    let bad_packets = || log().matches("invalid length of startup packet").count();
    for _ in 0..3 {
        let pool = connect(&kv(""))
            .await
            .expect("falls back to the TLS request");
        let info = pool.info().unwrap();
        assert!(!info.tls.as_ref().unwrap().direct);
        assert_eq!(info.attempts, 1);
        assert_eq!(support::select_one(&pool).await, Ok(1));
    }
    assert_eq!(bad_packets(), 1, "{}", log());

    // Written out, the choice is the user's: sslnegotiation=direct does not fall back.
    let err = connect(&kv("sslnegotiation=direct"))
        .await
        .expect_err("no fallback for an explicit sslnegotiation=direct");
    assert_eq!(err.kind(), ErrorKind::TlsHandshake, "{err:#}");
    support::assert_diagnosis(&err, Diagnosis::TlsDirectUnsupported);
    assert!(!err.is_retryable());
    assert_eq!(bad_packets(), 2, "tried once: {}", log());
}

// ---------------------------------------------------------------------------------------------
// Certificate revocation lists (`sslcrl`, `sslcrldir`)
// ---------------------------------------------------------------------------------------------

mod revocation {
    use super::*;
    use neon_connect_testing::{LeafSpec, TestCa};
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    fn in_a_week() -> SystemTime {
        SystemTime::now() + Duration::from_secs(7 * 24 * 3600)
    }

    /// A list from the shared CA that revokes `revoked` (certificate PEMs).
    fn list(revoked: &[&str], next_update: SystemTime) -> String {
        TestCa::shared()
            .revocation_list(revoked, next_update)
            .expect("CRL")
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn with_ca(s: &PgServer, mode: &str, extra: &str) -> String {
        url(
            s,
            &format!(
                "sslmode={mode}&sslrootcert={}&{extra}",
                s.ca_file().display()
            ),
        )
    }

    #[tokio::test]
    async fn a_revoked_server_certificate_is_refused_naming_certificate_list_and_date() {
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        let crl = write(&dir, "revoked.pem", &list(&[&s.cert_pem()], in_a_week()));
        for mode in ["verify-full", "verify-ca", "require"] {
            let err = connect(&with_ca(s, mode, &format!("sslcrl={}", crl.display())))
                .await
                .expect_err(mode);
            support::assert_diagnosis(&err, Diagnosis::CertificateRevoked);
            assert_eq!(err.kind(), ErrorKind::Certificate, "{err:#}");
            let text = err.to_string();
            assert!(text.contains("CN=localhost"), "{text}");
            assert!(text.contains("revoked on 2024-01-02"), "{text}");
            assert!(text.contains(&crl.display().to_string()), "{text}");
            assert!(!err.is_retryable());
        }
    }

    #[tokio::test]
    async fn a_revoked_server_certificate_is_refused_from_a_crl_directory() {
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        // Another file without a list (as in a directory prepared with `openssl rehash`) is skipped.
        write(&dir, "ca.pem", &TestCa::shared().cert_pem());
        write(&dir, "a.r0", &list(&[&s.cert_pem()], in_a_week()));
        let url = with_ca(
            s,
            "verify-full",
            &format!("sslcrldir={}", dir.path().display()),
        );
        let err = connect(&url).await.expect_err("revoked");
        support::assert_diagnosis(&err, Diagnosis::CertificateRevoked);
        assert!(err.to_string().contains("a.r0"), "{err}");
    }

    #[tokio::test]
    async fn a_list_that_does_not_revoke_the_server_lets_it_in() {
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        let (other, _) = TestCa::shared().issue(&LeafSpec::server()).unwrap();
        let crl = write(&dir, "other.pem", &list(&[&other], in_a_week()));
        let empty = write(&dir, "empty.pem", &list(&[], in_a_week()));
        for query in [
            format!("sslcrl={}", crl.display()),
            format!("sslcrl={}", empty.display()),
            format!("sslcrldir={}", dir.path().display()),
        ] {
            let pool = connect(&with_ca(s, "verify-full", &query))
                .await
                .expect(&query);
            assert_eq!(support::select_one(&pool).await, Ok(1));
        }
    }

    #[tokio::test]
    async fn a_missing_list_file_or_directory_is_ignored_as_in_libpq() {
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        for query in [
            format!("sslcrl={}", missing.display()),
            format!("sslcrldir={}", dir.path().join("nodir").display()),
        ] {
            let pool = connect(&with_ca(s, "verify-full", &query))
                .await
                .expect(&query);
            assert_eq!(support::select_one(&pool).await, Ok(1));
        }
    }

    #[tokio::test]
    async fn an_unparsable_list_is_a_clear_error() {
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        let garbage = write(
            &dir,
            "bad.pem",
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        );
        let err = connect(&with_ca(
            s,
            "verify-full",
            &format!("sslcrl={}", garbage.display()),
        ))
        .await
        .expect_err("bad CRL");
        let text = err.to_string();
        assert!(text.contains("is not valid"), "{text}");
        assert!(text.contains("bad.pem"), "{text}");
        // A file with no list at all is refused too (libpq would silently check nothing).
        let cert = write(&dir, "cert.pem", &TestCa::shared().cert_pem());
        let err = connect(&with_ca(
            s,
            "verify-full",
            &format!("sslcrl={}", cert.display()),
        ))
        .await
        .expect_err("no CRL");
        assert!(
            err.to_string().contains("holds no revocation list"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_expired_list_is_refused_as_openssl_refuses_it() {
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        let past = SystemTime::now() - Duration::from_secs(60);
        // Issued an hour ago, expired a minute ago; it revokes another certificate.
        let (other, _) = TestCa::shared().issue(&LeafSpec::server()).unwrap();
        let crl = write(&dir, "old.pem", &list(&[&other], past));
        let err = connect(&with_ca(
            s,
            "verify-full",
            &format!("sslcrl={}", crl.display()),
        ))
        .await
        .expect_err("expired CRL");
        support::assert_diagnosis(&err, Diagnosis::CertificateRevocationUnchecked);
        assert!(err.to_string().contains("expired at"), "{err}");
    }

    #[tokio::test]
    async fn a_chain_without_a_list_from_its_issuer_is_refused_as_in_libpq() {
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        let stranger = TestCa::new("some other CA").unwrap();
        let crl = write(
            &dir,
            "stranger.pem",
            &stranger.revocation_list(&[], in_a_week()).unwrap(),
        );
        let err = connect(&with_ca(
            s,
            "verify-full",
            &format!("sslcrl={}", crl.display()),
        ))
        .await
        .expect_err("unknown status");
        support::assert_diagnosis(&err, Diagnosis::CertificateRevocationUnchecked);
        assert!(err.to_string().contains("is unknown"), "{err}");
    }

    #[tokio::test]
    async fn require_without_a_root_file_checks_no_list() {
        // Nothing is verified, so there is nothing to check a list against (libpq alike).
        let s = setup();
        let dir = tempfile::tempdir().unwrap();
        let crl = write(&dir, "revoked.pem", &list(&[&s.cert_pem()], in_a_week()));
        let pool = connect(&url(
            s,
            &format!("sslmode=require&sslcrl={}", crl.display()),
        ))
        .await
        .expect("require");
        assert_eq!(support::select_one(&pool).await, Ok(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Where we differ from libpq on purpose (the README's TLS policy table)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_common_name_is_never_used_as_the_host_name() {
    // libpq accepts this certificate for `localhost` (testing/tests/fixture.rs shows it).
    let s = server(CertKind::CommonNameOnly);
    let ca = s.ca_file().display().to_string();
    let err = connect(&url(s, &format!("sslmode=verify-full&sslrootcert={ca}")))
        .await
        .expect_err("no subjectAltName");
    support::assert_diagnosis(&err, Diagnosis::CertificateWrongName);
    assert!(
        err.to_string().contains(
            "it is valid for no name: the certificate has no subjectAltName (a name only in its Common Name is never used)"
        ),
        "{err}"
    );
    // The chain itself is fine.
    let pool = connect(&url(s, &format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca");
    assert_eq!(support::select_one(&pool).await, Ok(1));
}

#[tokio::test]
async fn an_intermediate_ca_alone_is_accepted_as_a_trust_anchor() {
    // The Ed25519 server presents its leaf and the intermediate that signed it; trusting only
    // the intermediate is enough for rustls (OpenSSL under libpq wants a self-signed root
    // unless X509_V_FLAG_PARTIAL_CHAIN is set, which libpq does not set).
    let s = server(CertKind::Ed25519);
    let chain = s.cert_pem();
    let at = chain.rfind("-----BEGIN CERTIFICATE-----").unwrap();
    assert!(at > 0, "the server presents a chain");
    let dir = tempfile::tempdir().unwrap();
    let intermediate = dir.path().join("intermediate.pem");
    std::fs::write(&intermediate, &chain[at..]).unwrap();
    let pool = connect(&url(
        s,
        &format!("sslmode=verify-full&sslrootcert={}", intermediate.display()),
    ))
    .await
    .expect("intermediate as the only root");
    assert_eq!(support::select_one(&pool).await, Ok(1));
}

#[tokio::test]
async fn a_named_root_file_that_does_not_exist_is_an_error_even_with_require() {
    // libpq then continues without verifying anything; a typo must not turn verification off.
    let s = setup();
    for mode in ["require", "verify-ca", "verify-full"] {
        let err = connect(&url(
            s,
            &format!("sslmode={mode}&sslrootcert=/nonexistent/root.pem"),
        ))
        .await
        .expect_err(mode);
        assert_eq!(err.kind(), ErrorKind::RootCertificates, "{mode}: {err:#}");
        assert!(err.to_string().contains("/nonexistent/root.pem"), "{err}");
    }
}
