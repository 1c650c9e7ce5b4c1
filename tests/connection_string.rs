//! Connection strings: both forms, the environment, and every error a user can make.
//! Pure parsing: no server, no process environment. The parser's own cases are the unit tests in
//! src/config.rs; these are the user-facing ones they do not repeat.

use neon_connect::config::{ChannelBinding, Host, Source, SslMode};
use neon_connect::{ConnectionString, ErrorKind};

const SECRET: &str = "npg_S3cr3t@x/y";
const SECRET_ENC: &str = "npg_S3cr3t%40x%2Fy";

fn parse(s: &str) -> ConnectionString {
    ConnectionString::parse(s).unwrap_or_else(|e| panic!("{s}: {e:#}"))
}

/// The full text a user sees, after checking the error is a connection string error that
/// never quotes the password.
fn err(s: &str) -> String {
    let e = ConnectionString::parse(s).expect_err(s);
    assert_eq!(e.kind(), ErrorKind::ConnectionString, "{s}: {e:#}");
    let all = format!("{e} {e:#} {e:?}");
    assert!(
        !all.contains("npg_S3cr3t"),
        "{s}: leaked the password: {all}"
    );
    e.to_string()
}

#[test]
fn neon_url_with_everything() {
    let cs = parse(&format!(
        "postgresql://alex:{SECRET_ENC}@ep-cool-name-123-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require&channel_binding=require"
    ));
    assert_eq!(cs.user(), Some("alex"));
    assert_eq!(cs.password().unwrap().expose(), SECRET);
    assert_eq!(
        cs.hosts(),
        &[Host::Tcp(
            "ep-cool-name-123-pooler.us-east-2.aws.neon.tech".into()
        )]
    );
    assert_eq!(cs.dbname(), Some("neondb"));
    assert_eq!(cs.sslmode(), Some(SslMode::Require));
    assert_eq!(cs.channel_binding(), Some(ChannelBinding::Require));
    assert_eq!(cs.source("sslmode"), Source::ConnectionString);
    assert_eq!(cs.source("sslrootcert"), Source::Default);
}

#[test]
fn unencoded_question_mark_in_password_and_slash_refused_without_quoting() {
    let cs = parse("postgresql://u:pa?ss@host/db?sslmode=require");
    assert_eq!(cs.password().unwrap().expose(), "pa?ss");
    assert_eq!(cs.sslmode(), Some(SslMode::Require));
    let text = err("postgresql://u:npg_S3cr3t/x@host/db");
    assert!(text.contains("percent-encode `/`"), "{text}");
}

#[test]
fn multiple_hosts_ports_and_ipv6() {
    let cs = parse("postgresql://a:5433,b,[::1]:6000/db");
    assert_eq!(
        cs.hosts(),
        &[
            Host::Tcp("a".into()),
            Host::Tcp("b".into()),
            Host::Tcp("::1".into())
        ]
    );
    assert_eq!(cs.ports(), &[5433, 5432, 6000]);
    assert_eq!(cs.port_for(1), 5432);
    let one = parse("postgresql://a,b:7000/db");
    assert_eq!(one.port_for(0), 5432);
    assert_eq!(one.port_for(1), 7000);
}

/// What `redacted()` writes keeps libpq's units and names (the parsing itself is tested in
/// src/config.rs).
#[test]
fn redacted_keeps_libpq_units_and_names() {
    // tcp_user_timeout is milliseconds in libpq: it round-trips as such.
    let cs = parse("host=h tcp_user_timeout=1500 keepalives_retries=3");
    assert!(
        cs.redacted().contains("tcp_user_timeout=1500"),
        "{}",
        cs.redacted()
    );
    assert!(
        cs.redacted().contains("keepalives_count=3"),
        "{}",
        cs.redacted()
    );
}

#[test]
fn connection_string_errors_name_the_part_and_the_fix() {
    // Inputs the unit tests in src/config.rs do not try verbatim.
    let cases: &[(&str, &str)] = &[
        ("mysql://u@h/db", "invalid connection string scheme `mysql`"),
        ("postgresql://h:99999/db", "invalid port \"99999\" for host \"h\""),
        ("postgresql://h:54x/db", "invalid port \"54x\""),
        ("postgresql://h/db?ssl=true", "the parameter is named `sslmode`"),
        ("postgresql://h/db?database=x", "the parameter is named `dbname`"),
        ("host=h sslmode=verify", "invalid value \"verify\" for `sslmode`; help: accepted values: `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`"),
        ("host=h channel_binding=yes", "accepted values: `disable`, `prefer`, `require`"),
        ("host=h service=npg_S3cr3t", "connection parameter `service` is not supported"),
        ("host=h ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2", "invalid SSL protocol version range"),
        ("host=h ssl_max_protocol_version=TLSv1.1", "TLS below 1.2 is not supported"),
        ("host=h connect_timeout=soon", "invalid value \"soon\" for `connect_timeout`"),
        ("host=h target_session_attrs=replica", "accepted values: `any`, `read-write`, `read-only`, `primary`, `standby`, `prefer-standby`"),
        ("host=h pgbouncer=true", "Prisma"),
    ];
    for (input, expected) in cases {
        let text = err(input);
        assert!(
            text.contains(expected),
            "{input}\n  got: {text}\n  expected to contain: {expected}"
        );
    }
}

#[test]
fn redacted_round_trips() {
    for s in [
        "postgresql://u@a:5433,b:5434/db?sslmode=verify-ca&sslrootcert=/etc/ca.pem&channel_binding=require",
        "host=/tmp port=5433 dbname=x application_name='my app' options='-c search_path=a,b'",
        "postgresql://[::1]:6000/db?sslnegotiation=direct&sslsni=0&connect_timeout=7&target_session_attrs=read-write",
        "postgresql://h/db?hostaddr=10.0.0.1&ssl_min_protocol_version=TLSv1.3&keepalives=0&load_balance_hosts=random",
    ] {
        let a = parse(s);
        let b = parse(&a.redacted());
        assert_eq!(a.redacted(), b.redacted(), "{s}");
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{s}");
    }
}
