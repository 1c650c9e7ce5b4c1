//! Connection strings: both forms, the environment, and every error a user can make.
//! Pure parsing: no server, no process environment.

use neon_connect::config::{
    ChannelBinding, Host, RootCert, Source, SslMode, SslNegotiation, TlsVersion,
};
use neon_connect::{ConnectionString, ErrorKind};
use std::time::Duration;

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
fn both_schemes_any_case() {
    for scheme in ["postgres", "postgresql", "POSTGRESQL"] {
        assert_eq!(parse(&format!("{scheme}://h/db")).dbname(), Some("db"));
    }
}

#[test]
fn unencoded_at_in_password_still_parses() {
    let cs = parse("postgresql://u:p@ss@host/db");
    assert_eq!(cs.password().unwrap().expose(), "p@ss");
    assert_eq!(cs.hosts(), &[Host::Tcp("host".into())]);
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

#[test]
fn unix_socket_hosts() {
    let a = parse("postgresql://%2Fvar%2Frun%2Fpostgresql/db");
    assert_eq!(a.hosts(), &[Host::Unix("/var/run/postgresql".into())]);
    let b = parse("postgresql:///db?host=/tmp&port=5433");
    assert_eq!(b.hosts(), &[Host::Unix("/tmp".into())]);
    assert_eq!(b.ports(), &[5433]);
    let c = parse("host=/tmp dbname=x");
    assert_eq!(c.hosts(), &[Host::Unix("/tmp".into())]);
}

#[test]
fn key_value_form_with_quotes_and_escapes() {
    let cs =
        parse(r"host=h port = 6543 user='a b' password='it\'s' dbname=d\ x sslrootcert=system");
    assert_eq!(cs.user(), Some("a b"));
    assert_eq!(cs.password().unwrap().expose(), "it's");
    assert_eq!(cs.dbname(), Some("d x"));
    assert_eq!(cs.ports(), &[6543]);
    assert_eq!(cs.sslrootcert(), Some(&RootCert::System));
}

#[test]
fn every_enum_value() {
    for (v, m) in [
        ("disable", SslMode::Disable),
        ("allow", SslMode::Allow),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ] {
        assert_eq!(parse(&format!("host=h sslmode={v}")).sslmode(), Some(m));
    }
    assert_eq!(
        parse("host=h sslnegotiation=direct").sslnegotiation(),
        Some(SslNegotiation::Direct)
    );
    assert_eq!(
        parse("host=h sslrootcert=./system").sslrootcert(),
        Some(&RootCert::File("./system".into()))
    );
    let v = parse("host=h ssl_min_protocol_version=TLSv1 ssl_max_protocol_version=TLSv1.3");
    assert_eq!(v.ssl_min_protocol_version(), Some(TlsVersion::Tls12));
    assert_eq!(v.ssl_max_protocol_version(), Some(TlsVersion::Tls13));
}

#[test]
fn libpq_timeouts() {
    assert_eq!(
        parse("host=h connect_timeout=10").connect_timeout(),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        parse("host=h connect_timeout=1").connect_timeout(),
        Some(Duration::from_secs(2))
    );
    assert_eq!(parse("host=h connect_timeout=0").connect_timeout(), None);
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
fn environment_fills_gaps_and_the_string_wins() {
    let env = |k: &str| match k {
        "PGHOST" => Some("envhost".to_string()),
        "PGSSLMODE" => Some("verify-ca".to_string()),
        "PGPASSWORD" => Some(SECRET.to_string()),
        "PGAPPNAME" => Some("from-env".to_string()),
        _ => None,
    };
    let cs =
        ConnectionString::parse_with_env("postgresql://u@urlhost/db?sslmode=require", env).unwrap();
    assert_eq!(cs.hosts(), &[Host::Tcp("urlhost".into())]);
    assert_eq!(cs.sslmode(), Some(SslMode::Require));
    assert_eq!(cs.password().unwrap().expose(), SECRET);
    assert_eq!(cs.source("password"), Source::Environment);
    assert_eq!(cs.application_name(), Some("from-env"));
    let only_env = ConnectionString::parse_with_env("dbname=x", env).unwrap();
    assert_eq!(only_env.hosts(), &[Host::Tcp("envhost".into())]);
    assert_eq!(only_env.sslmode(), Some(SslMode::VerifyCa));
}

#[test]
fn invalid_environment_values_are_errors_naming_the_variable() {
    let e =
        ConnectionString::parse_with_env("host=h", |k| (k == "PGSSLMODE").then(|| "verify".into()))
            .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value \"verify\" for the environment variable `PGSSLMODE`\nhelp: accepted values: `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`"
    );
    let req =
        ConnectionString::parse_with_env("host=h", |k| (k == "PGREQUIRESSL").then(|| "1".into()))
            .unwrap();
    assert_eq!(req.sslmode(), Some(SslMode::Require));
    assert!(
        ConnectionString::parse_with_env("host=h", |k| (k == "PGREQUIRESSL").then(|| "yes".into()))
            .is_err()
    );
}

#[test]
fn connection_string_errors_name_the_part_and_the_fix() {
    let cases: &[(&str, &str)] = &[
        ("mysql://u@h/db", "invalid connection string scheme `mysql`"),
        ("jdbc:postgresql://h/db", "drop the `jdbc:` prefix"),
        ("postgresql://u:npg_S3cr3t%zz@h/db", "invalid percent-encoding in the password"),
        ("postgresql://u:npg_S3cr3t%ff@h/db", "does not decode to UTF-8"),
        ("postgresql://h:99999/db", "invalid port \"99999\" for host \"h\""),
        ("postgresql://h:54x/db", "invalid port \"54x\""),
        ("postgresql://h/db?sslmod=require", "unknown connection parameter `sslmod`\nhelp: the parameter is named `sslmode`"),
        ("postgresql://h/db?ssl=true", "the parameter is named `sslmode`"),
        ("postgresql://h/db?database=x", "the parameter is named `dbname`"),
        ("host=h sslmode=verify", "invalid value \"verify\" for `sslmode`\nhelp: accepted values: `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`"),
        ("host=h channel_binding=yes", "accepted values: `disable`, `prefer`, `require`"),
        ("host=h service=npg_S3cr3t", "connection parameter `service` is not supported"),
        ("host=h gssencmode=require", "GSSAPI encryption is never used"),
        ("host=a,b port=1,2,3", "could not match 3 port numbers to 2 hosts"),
        ("host=a,b hostaddr=127.0.0.1", "could not match 2 host names to 1 hostaddr values"),
        ("host=h hostaddr=localhost", "invalid value \"localhost\" for `hostaddr`"),
        ("host=h ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2", "invalid SSL protocol version range"),
        ("host=h ssl_max_protocol_version=TLSv1.1", "TLS below 1.2 is not supported"),
        ("host=h connect_timeout=soon", "invalid value \"soon\" for `connect_timeout`"),
        ("host=h password='npg_S3cr3t", "unterminated quoted value for `password`"),
        ("host=h password", "missing `=` after `password`"),
        ("just some words", "neither a `postgresql://` URL nor `key=value` pairs"),
        ("host=h target_session_attrs=standby", "not supported yet"),
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
fn harmless_libpq_parameters_are_accepted() {
    parse("host=h gssencmode=disable sslcompression=0 client_encoding=UTF8");
}

#[test]
fn debug_and_display_redact_the_password() {
    let cs = parse(&format!("postgresql://u:{SECRET_ENC}@h/db"));
    for text in [format!("{cs:?}"), cs.to_string(), cs.redacted()] {
        assert!(!text.contains("npg_S3cr3t"), "{text}");
        assert!(!text.contains(SECRET_ENC), "{text}");
    }
    assert_eq!(cs.to_string(), "postgresql://u:***@h/db");
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
