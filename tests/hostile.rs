//! Attacks by scripted hostile peers on 127.0.0.1 (see `neon_connect_testing::hostile`).

mod support;

use neon_connect::{ConnectionString, Diagnosis, Options};
use neon_connect_testing::hostile::{Answer, DirectTlsWithoutAlpn, HostilePeer, InterceptingRelay};
use neon_connect_testing::PgServer;
use std::time::Duration;

const PASSWORD: &str = "npg_TestSecret42";

fn url(port: u16, query: &str) -> String {
    format!("postgresql://neon:{PASSWORD}@localhost:{port}/neondb?{query}")
}

async fn connect(url: &str) -> Result<neon_connect::Pool, neon_connect::Error> {
    Options::from_connection_string(ConnectionString::parse(url)?)
        .pool_size(1)
        .connect_attempts(1)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn ca() -> String {
    PgServer::shared().ca_file().display().to_string()
}

#[tokio::test]
async fn downgrade_to_plaintext_is_refused_with_every_sslmode_and_sends_nothing() {
    let peer = HostilePeer::start(Answer::No).await.unwrap();
    let ca = ca();
    let modes = [
        format!("sslrootcert={ca}"),
        "sslmode=require".to_string(),
        "sslmode=prefer".to_string(),
        "sslmode=allow".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ];
    for (i, q) in modes.iter().enumerate() {
        let err = connect(&url(peer.port(), q))
            .await
            .expect_err("a downgrade must be refused");
        let text = format!("{err:#}");
        assert!(!text.contains(PASSWORD), "{text}");
        // Let the peer record anything that follows.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            peer.received_after_tls_request(),
            Vec::<u8>::new(),
            "after `N`, not one byte may follow the SSLRequest (case {i}: {q}): {text}"
        );
    }
}

#[tokio::test]
async fn plaintext_injected_after_s_is_refused() {
    // A fake AuthenticationOk and ReadyForQuery, sent in the same write as `S`.
    let peer = HostilePeer::start(Answer::YesThenPlaintext).await.unwrap();
    for _ in 0..3 {
        let err = connect(&url(peer.port(), "sslmode=require"))
            .await
            .expect_err("injected plaintext must be refused");
        support::assert_diagnosis(&err, Diagnosis::TlsInjectedPlaintext);
        let text = format!("{err:#}");
        assert!(
            text.contains("received unencrypted data after SSL response"),
            "{text}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = peer.received_after_tls_request();
    assert!(
        !String::from_utf8_lossy(&after).contains("neondb") && !after.contains(&0),
        "no startup packet may follow: {after:?}"
    );
}

#[tokio::test]
async fn an_error_before_tls_is_refused_and_its_text_not_shown() {
    let lie = "password authentication failed: visit http://evil.example to reset it";
    let peer = HostilePeer::start(Answer::Error(lie.into())).await.unwrap();
    for q in [
        "sslmode=require".to_string(),
        format!("sslrootcert={}", ca()),
    ] {
        let err = connect(&url(peer.port(), &q))
            .await
            .expect_err("must be refused");
        // tokio-postgres reads no further than the `E`, like an `N`.
        support::assert_diagnosis(&err, Diagnosis::TlsServerWithoutTls);
        let text = format!("{err:#} {err:?} {}", err.report());
        assert!(!text.contains("evil.example"), "{text}");
        assert!(!text.contains("password authentication failed"), "{text}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = peer.received_after_tls_request();
    assert!(
        !String::from_utf8_lossy(&after).contains("neondb") && !after.contains(&0),
        "no startup packet may follow: {after:?}"
    );
}

#[tokio::test]
async fn direct_tls_with_a_weak_sslmode_is_refused_before_connecting() {
    for mode in ["prefer", "allow"] {
        let err = connect(&url(1, &format!("sslmode={mode}&sslnegotiation=direct")))
            .await
            .expect_err("weak mode with direct");
        assert!(
            format!("{err:#}").contains("sslnegotiation=direct"),
            "{err:#}"
        );
    }
}

#[tokio::test]
async fn interception_with_a_trusted_certificate_fails_with_channel_binding() {
    let server = PgServer::shared();
    let ca_pem = std::fs::read_to_string(server.ca_file()).unwrap();
    let peer = InterceptingRelay::start(server.port(), &ca_pem)
        .await
        .unwrap();
    let q = format!(
        "sslmode=verify-full&sslrootcert={}&channel_binding=require",
        ca()
    );
    let err = connect(&url(peer.port(), &q))
        .await
        .expect_err("channel binding must detect the interceptor");
    let text = format!("{err:#}");
    assert!(text.contains("interception"), "{text}");

    // Without channel binding the interceptor holds a trusted certificate: the login works and
    // the interceptor reads the session in the clear. This is what the user is exposed to.
    // (With the default `channel_binding=prefer` the server still sees the mismatch, because
    // this relay does not strip SCRAM-SHA-256-PLUS from the offered mechanisms; one that did
    // would succeed, so only `require` is a guarantee.)
    let pool = connect(&url(peer.port(), "sslmode=require&channel_binding=disable"))
        .await
        .expect("login through the interceptor");
    let client = pool.get().await.unwrap();
    client
        .simple_query("SELECT 'intercepted-marker'")
        .await
        .unwrap();
    let seen = peer.seen_plaintext();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("intercepted-marker"), "{seen}");
    assert!(seen.contains("neondb"), "{seen}");
}

#[tokio::test]
async fn wrong_identities_are_refused_in_verify_full_and_where_libpq_refuses_in_verify_ca() {
    use neon_connect_testing::{CertKind, ServerOptions};
    let ca = ca();
    for kind in [
        CertKind::WrongHost,
        CertKind::Expired,
        CertKind::SelfSigned,
        CertKind::UntrustedCa,
        CertKind::CaAsLeaf,
    ] {
        let server = PgServer::start(ServerOptions::default().cert(kind)).unwrap();
        let full = format!("{}?sslmode=verify-full&sslrootcert={ca}", server.url());
        let err = connect(&full)
            .await
            .expect_err(&format!("{kind:?} must be refused in verify-full"));
        assert_eq!(
            err.kind(),
            neon_connect::ErrorKind::Certificate,
            "{kind:?}: {err:#}"
        );
        let chain = format!("{}?sslmode=verify-ca&sslrootcert={ca}", server.url());
        let result = connect(&chain).await;
        match kind {
            // verify-ca does not check the name, in libpq either.
            CertKind::WrongHost => {
                result.expect("verify-ca accepts a trusted chain for another name");
            }
            // libpq (OpenSSL) accepts a CA certificate as the leaf in verify-ca; we refuse
            // it (webpki), which is stricter.
            CertKind::CaAsLeaf => assert!(result.is_err()),
            _ => {
                let err = result.expect_err(&format!("{kind:?} must be refused in verify-ca"));
                assert_eq!(
                    err.kind(),
                    neon_connect::ErrorKind::Certificate,
                    "{kind:?}: {err:#}"
                );
            }
        }
    }
}

#[tokio::test]
async fn tls_protocol_version_bounds_are_applied() {
    use neon_connect_testing::ServerOptions;
    let ca = ca();
    let server = PgServer::shared();
    let pool = connect(&format!(
        "{}?sslrootcert={ca}&ssl_max_protocol_version=TLSv1.2",
        server.url()
    ))
    .await
    .expect("TLS 1.2");
    assert_eq!(
        pool.info().unwrap().tls.as_ref().unwrap().protocol,
        "TLSv1.2"
    );

    let old =
        PgServer::start(ServerOptions::default().conf("ssl_max_protocol_version = 'TLSv1.2'"))
            .unwrap();
    let err = connect(&format!(
        "{}?sslrootcert={ca}&ssl_min_protocol_version=TLSv1.3",
        old.url()
    ))
    .await
    .expect_err("no common version");
    let text = format!("{err:#}");
    assert!(text.contains("ssl_min_protocol_version"), "{text}");
}

#[tokio::test]
async fn direct_tls_without_alpn_is_refused() {
    let peer = DirectTlsWithoutAlpn::start().await.unwrap();
    let q = format!(
        "sslmode=verify-full&sslnegotiation=direct&sslrootcert={}",
        ca()
    );
    let err = connect(&url(peer.port(), &q))
        .await
        .expect_err("must be refused");
    support::assert_diagnosis(&err, Diagnosis::TlsAlpn);
    let text = format!("{err:#}");
    assert!(
        text.contains(
            "direct SSL connection was established without ALPN protocol negotiation extension"
        ),
        "{text}"
    );
}
