//! Each arm of the classifier provoked for real: the server's SQLSTATEs sent byte for byte by a
//! scripted peer behind a trusted certificate (as PostgreSQL sends them during login), and
//! network failures from real sockets on 127.0.0.1. Each case asserts the diagnosis, whether
//! it was retried, the one-line message, and that no secret shows.

mod support;

use neon_connect::{ConnectionString, Diagnosis, Error, ErrorKind, Options};
use neon_connect_testing::neon::{FakeNeonProxy, Script};
use neon_connect_testing::CertKind;
use std::time::{Duration, Instant};

/// Connects through `port` on localhost with a short budget; returns the error, how many
/// connections the peer saw, and how long it took.
async fn provoke(port: u16, connections: impl Fn() -> usize) -> (Error, usize) {
    support::shared_server();
    let cs = ConnectionString::parse(&format!(
        "postgresql://neon:npg_DiagSecret1@localhost:{port}/neondb"
    ))
    .unwrap();
    let err = Options::from_connection_string(cs)
        .connect_timeout(Duration::from_secs(2))
        .connect_attempts(3)
        .connect()
        .await
        .expect_err("must fail");
    let all = format!("{err} {err:#} {err:?}");
    assert!(!all.contains("npg_DiagSecret1"), "a secret leaked: {all}");
    assert!(!err.to_string().contains('\n'), "not one line: {err}");
    (err, connections())
}

#[tokio::test]
async fn each_sqlstate_the_server_sends_at_login() {
    // (SQLSTATE, PostgreSQL's own text, diagnosis, retried)
    let cases = [
        ("57P03", "the database system is starting up", Diagnosis::ServerStarting, true),
        ("57P03", "the database system is shutting down", Diagnosis::ServerStarting, true),
        ("53300", "sorry, too many clients already", Diagnosis::TooManyConnections, true),
        ("53300", "remaining connection slots are reserved for non-replication superuser connections", Diagnosis::TooManyConnections, true),
        ("53300", "too many connections for role \"neon\"", Diagnosis::RoleConnectionLimit, true),
        ("57P01", "terminating connection due to administrator command", Diagnosis::ServerTerminated, true),
        ("57P02", "terminating connection because of crash of another server process", Diagnosis::ServerTerminated, true),
        ("28000", "no pg_hba.conf entry for host \"127.0.0.1\", user \"neon\", database \"neondb\", SSL encryption", Diagnosis::AuthRejected, false),
        ("28P01", "password authentication failed for user \"neon\"", Diagnosis::AuthPassword, false),
        ("3D000", "database \"neondb\" does not exist", Diagnosis::DatabaseMissing, false),
        ("0A000", "unsupported frontend protocol 3.0: server supports 2.0 to 2.0", Diagnosis::ServerOther, false),
    ];
    for (code, message, want, retried) in cases {
        let proxy = FakeNeonProxy::start(Script::FailThenRelay {
            n: usize::MAX,
            code: code.into(),
            message: message.into(),
            upstream: 1,
        })
        .await
        .unwrap();
        let (err, seen) = provoke(proxy.port(), || proxy.connections()).await;
        support::assert_diagnosis(&err, want);
        assert_eq!(err.is_retryable(), retried, "{code}: {err}");
        assert_eq!(seen > 1, retried, "{code}: retried {seen} times: {err:#}");
        assert!(
            err.to_string().contains(message) || want == Diagnosis::AuthPassword,
            "{err}"
        );
        assert!(err.help().is_some());
    }
}

/// A listener on 127.0.0.1 that does `what` with every connection.
async fn listener(what: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            match what {
                // Read the TLS request, then close: the client reads EOF where the answer
                // should be. (Closing with it unread would send an RST.)
                "close" => {
                    use tokio::io::AsyncReadExt;
                    let mut s = s;
                    let mut request = [0u8; 8];
                    let _ = s.read_exact(&mut request).await;
                    drop(s);
                }
                // Abort: an RST instead of a FIN.
                "reset" => {
                    let s = s.into_std().unwrap();
                    socket2::SockRef::from(&s)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                    drop(s);
                }
                _ => held.push(s),
            }
        }
    });
    (port, task)
}

#[tokio::test]
async fn connections_closed_reset_or_unanswered() {
    for (what, want, kind) in [
        ("close", Diagnosis::NetworkClosed, ErrorKind::Closed),
        ("reset", Diagnosis::NetworkReset, ErrorKind::Network),
        ("silent", Diagnosis::TimeoutTls, ErrorKind::Timeout),
    ] {
        let (port, task) = listener(what).await;
        let started = Instant::now();
        let (err, _) = provoke(port, || 0).await;
        task.abort();
        support::assert_diagnosis(&err, want);
        assert_eq!(err.kind(), kind, "{what}");
        assert!(err.is_retryable(), "{what}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
    }
}

#[tokio::test]
async fn a_closed_port_is_refused_and_retried() {
    let port = support::free_port();
    let (err, _) = provoke(port, || 0).await;
    support::assert_diagnosis(&err, Diagnosis::NetworkRefused);
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .starts_with(&format!("connection refused by \"localhost:{port}\"")),
        "{err}"
    );
}

#[tokio::test]
async fn a_root_certificate_file_that_does_not_exist_says_so() {
    let cs = ConnectionString::parse(
        "postgresql://neon@localhost/neondb?sslrootcert=/nonexistent/ca.pem",
    )
    .unwrap();
    let err = Options::from_connection_string(cs)
        .connect()
        .await
        .expect_err("no such file");
    assert_eq!(err.kind(), ErrorKind::RootCertificates);
    assert!(
        err.to_string()
            .starts_with("the root certificate file /nonexistent/ca.pem does not exist; help: check the `sslrootcert` path"),
        "{err}"
    );
}

#[tokio::test]
async fn a_message_with_an_invalid_length_is_a_protocol_violation_not_retried() {
    let proxy = FakeNeonProxy::start(Script::InvalidLength).await.unwrap();
    let (err, seen) = provoke(proxy.port(), || proxy.connections()).await;
    support::assert_diagnosis(&err, Diagnosis::ProtocolViolation);
    assert!(!err.is_retryable());
    assert_eq!(seen, 1, "not retried");
    assert!(
        err.to_string().starts_with(&format!(
            "the server \"localhost:{}\" sent a message that is not valid PostgreSQL protocol",
            proxy.port()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_speaks_only_tls_1_1_is_told_apart() {
    let server = support::start_server(
        neon_connect_testing::ServerOptions::default()
            .conf("ssl_min_protocol_version = 'TLSv1'")
            .conf("ssl_max_protocol_version = 'TLSv1.1'"),
    );
    let err = Options::new(&support::verified_url(&server))
        .unwrap()
        .connect_attempts(1)
        .connect()
        .await
        .expect_err("no TLS 1.2");
    support::assert_diagnosis(&err, Diagnosis::TlsVersionUnsupported);
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .contains("TLS 1.0 and 1.1 are never accepted"),
        "{err}"
    );
}

/// Certificates that rustls refuses where OpenSSL (libpq) accepts them or words it
/// differently, served in turn by one real PostgreSQL 15: an IP address written as a DNS name,
/// a chain of 7 intermediates (webpki allows 6), and an 80 KiB certificate (rustls reads at
/// most 64 KiB per handshake message). Each is refused once, not retried, in plain words.
#[tokio::test]
async fn certificates_rustls_refuses_from_a_real_server() {
    let server = support::start_server(neon_connect_testing::ServerOptions::default());
    // Counts the attempts: every connection passes through it before its handshake starts.
    let relay = neon_connect_testing::relay::Relay::start(server.port()).unwrap();
    let port = relay.port();
    let ca = server.ca_file().display().to_string();
    let cases = [
        (CertKind::IpAsDnsName, "127.0.0.1", Diagnosis::CertificateWrongName,
            format!("the certificate of \"127.0.0.1:{port}\" is not valid for the name \"127.0.0.1\"; it is valid for 127.0.0.1 only as a DNS name, and an IP address host must be an IP address entry of its subjectAltName; help: reissue the server certificate with 127.0.0.1 as an IP address subjectAltName (IP:127.0.0.1, not DNS:127.0.0.1), or connect with a host name it holds")),
        (CertKind::ChainTooDeep, "localhost", Diagnosis::CertificateChainTooDeep,
            format!("the certificate chain of \"localhost:{port}\" is longer than rustls allows: more than 6 intermediate certificates between the server's certificate and a trusted root (checked against the root certificate file {ca}); help: send a shorter chain from the server (leaf, its intermediates, no cross-signed loops), or trust the issuing intermediate directly with `sslrootcert`")),
        (CertKind::Oversized, "localhost", Diagnosis::CertificateTooLarge,
            format!("the server \"localhost:{port}\" sent a TLS handshake message over 64 KiB, more than rustls reads: its certificate chain is too large (or its list of CAs for client certificates); help: give the server a smaller certificate chain (fewer subjectAltNames, only the intermediates needed, no root); if it asks for client certificates, shorten its `ssl_ca_file`")),
    ];
    for (kind, host, want, shown) in cases {
        server.set_certificate(kind).unwrap();
        server.reload().unwrap();
        let attempts_before = relay.connections();
        let url = format!(
            "postgresql://neon:npg_TestSecret42@{host}:{port}/neondb?sslmode=verify-full&sslrootcert={}",
            server.ca_file().display()
        );
        let err = Options::new(&url)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect_attempts(3)
            .connect()
            .await
            .expect_err("rustls refuses it");
        let text = err.to_string();
        support::assert_no_secret("the error", &format!("{err} {err:#} {err:?}"), &["npg_"]);
        support::assert_diagnosis(&err, want);
        assert_eq!(
            err.step(),
            Some(neon_connect::Step::TlsHandshake),
            "{kind:?}"
        );
        assert!(!err.is_retryable(), "{kind:?}: {err}");
        assert_eq!(text, shown, "{kind:?}");
        for debug in [
            "DnsName(",
            "Other(",
            "Exceeded",
            "InvalidMessage",
            "TooLarge",
            "{ ",
        ] {
            assert!(
                !text.contains(debug),
                "{kind:?}: a Rust Debug string: {text}"
            );
        }
        assert_eq!(
            relay.connections() - attempts_before,
            1,
            "{kind:?}: retried"
        );
    }
}

/// The check behind `support::assert_diagnosis`: placeholders match anything, the rest must
/// be there in order, from the start.
#[test]
fn readme_examples_are_matched_with_placeholders_as_wildcards() {
    let example = "timed out after 15.0s during the TCP connect with \"host:5432\"";
    assert!(support::shows(
        example,
        "timed out after 2.5s during the TCP connect with \"db.example.com:6543\"; help: ..."
    ));
    assert!(!support::shows(
        example,
        "timed out after 2.5s during the TLS request with \"db:6543\""
    ));
    assert!(!support::shows(
        example,
        "x timed out after 2.5s during the TCP connect with \"db\""
    ));
    assert!(support::shows(
        "the server \"host:5432\" has too many connections: ...",
        "the server \"localhost:1\" has too many connections: sorry, too many clients already"
    ));
    assert!(!support::shows(
        "the server \"host:5432\" has too many connections: ...",
        "the server \"localhost:1\" is starting up or shutting down: x"
    ));
    // Alternatives, paths and unquoted hosts.
    let example = "no server matched `target_session_attrs=...`: db1:5432 ..., db2:5432 ... / the list /path/to/crl.pem expired";
    assert!(support::shows(
        example,
        "no server matched `target_session_attrs=primary`: localhost:1 is a standby, [::1]:2 failed"
    ));
    assert!(support::shows(
        example,
        "the list /tmp/x/a.r0 expired at ..."
    ));
    assert!(!support::shows(example, "the list /tmp/x/a.r0 is fine"));
    assert_eq!(
        support::readme_example(Diagnosis::NetworkRefused),
        "connection refused by \"host:5432\""
    );
}

/// A TCP connect that never completes (a listener whose accept queue is full drops the SYN, as
/// a firewall that drops packets does): the error names the TCP connect step and the time it
/// really waited, `connect_timeout`, not 0.0s.
#[tokio::test]
async fn a_tcp_connect_that_never_completes_times_out_with_the_time_it_waited() {
    let server = support::shared_server();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    // Backlog 0: the accept queue holds one connection; nothing is ever accepted.
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    let full = loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => break true,
        }
        if fillers.len() > 16 {
            break false;
        }
    };
    assert!(
        full,
        "the accept queue never filled: the kernel answers every SYN"
    );
    let cs = ConnectionString::parse(&format!(
        "postgresql://neon:npg_DiagSecret1@127.0.0.1:{}/neondb?sslrootcert={}",
        addr.port(),
        server.ca_file().display()
    ))
    .unwrap();
    let began = Instant::now();
    let err = Options::from_connection_string(cs)
        .connect_timeout(Duration::from_secs(2))
        .connect_attempts(1)
        .connect()
        .await
        .expect_err("must time out");
    let took = began.elapsed();
    support::assert_diagnosis(&err, Diagnosis::TimeoutTcp);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "timed out after 2.0s during the TCP connect with \"127.0.0.1:{}\"",
            addr.port()
        )),
        "{text}"
    );
    assert!(
        took >= Duration::from_millis(1900),
        "gave up after {took:?}: {text}"
    );
    assert!(!text.contains("npg_DiagSecret1"), "{text}");
    drop(fillers);
}
