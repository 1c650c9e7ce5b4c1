//! Unit tests of parsing: both forms, the environment, and every error a user can make.
use super::keys::{levenshtein, KEYS, UNSUPPORTED};
use super::*;
use crate::error::ErrorKind;

/// The password used in every error case: no form of it may appear in an error.
const PW: &str = "npg_S3cr3t";

fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[track_caller]
fn check_env(input: &str, vars: &[(&str, &str)], f: impl FnOnce(&ConnectionString)) {
    match ConnectionString::parse_with_env(input, env_of(vars)) {
        Ok(cs) => f(&cs),
        Err(e) => panic!("{input:?}: {e:#}"),
    }
}

#[track_caller]
fn check(input: &str, f: impl FnOnce(&ConnectionString)) {
    check_env(input, &[], f)
}

/// The error for `input`, after checking its kind, that it has a help line, and that it
/// never shows the password (plain or percent-encoded).
#[track_caller]
fn err_env(input: &str, vars: &[(&str, &str)]) -> Error {
    let e = match ConnectionString::parse_with_env(input, env_of(vars)) {
        Ok(cs) => panic!("{input:?} parsed: {cs:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::ConnectionString, "{input:?}: {e:#}");
    assert!(e.help().is_some(), "{input:?}: no help line: {e:#}");
    let all = format!("{e} {e:#} {e:?}");
    for secret in [PW, "S3cr3t", "npg%5FS3cr3t"] {
        assert!(
            !all.contains(secret),
            "{input:?}: leaked the password: {all}"
        );
    }
    e
}

/// The whole text a user sees: the message and `help: ...`.
#[track_caller]
fn err(input: &str) -> String {
    err_env(input, &[]).to_string()
}

/// Runs a table of (input, part of the message, part of the help).
#[track_caller]
fn errors(vars: &[(&str, &str)], cases: &[(&str, &str, &str)]) {
    for (input, message, help) in cases {
        let e = err_env(input, vars);
        assert!(
            e.message().contains(message),
            "{input:?}\n  message: {}\n  expected: {message}",
            e.message()
        );
        assert!(
            e.help().unwrap_or_default().contains(help),
            "{input:?}\n  help: {:?}\n  expected: {help}",
            e.help()
        );
    }
}

fn tcp(h: &str) -> Host {
    Host::Tcp(h.to_string())
}

#[test]
fn both_schemes_in_any_case() {
    for scheme in ["postgresql", "postgres", "POSTGRESQL", "Postgres"] {
        check(&format!("{scheme}://u@h/db"), |cs| {
            assert_eq!(cs.user(), Some("u"));
            assert_eq!(cs.hosts(), &[tcp("h")]);
            assert_eq!(cs.dbname(), Some("db"));
        });
    }
    check(" postgresql://h ", |cs| assert_eq!(cs.hosts(), &[tcp("h")]));
    check("postgresql://", |cs| {
        assert!(cs.hosts().is_empty());
        assert_eq!(cs.dbname(), None);
    });
}

#[test]
fn every_url_part_is_percent_decoded() {
    check(
        "postgresql://al%40ex:p%3Ass%2F%40%25@my%2Dhost:5433/my%20db?application%5Fname=a%26b%3Dc&options=-c%20search_path%3Dapp",
        |cs| {
            assert_eq!(cs.user(), Some("al@ex"));
            assert_eq!(cs.password().unwrap().expose(), "p:ss/@%");
            assert_eq!(cs.hosts(), &[tcp("my-host")]);
            assert_eq!(cs.ports(), &[5433]);
            assert_eq!(cs.dbname(), Some("my db"));
            assert_eq!(cs.application_name(), Some("a&b=c"));
            assert_eq!(cs.options(), Some("-c search_path=app"));
        },
    );
    // libpq keeps `+` (it is not a space), and UTF-8 decodes.
    check("postgresql://h/d%C3%A9b?application_name=a+b", |cs| {
        assert_eq!(cs.dbname(), Some("déb"));
        assert_eq!(cs.application_name(), Some("a+b"));
    });
    check("postgresql://h/db?password=p%40ss", |cs| {
        assert_eq!(cs.password().unwrap().expose(), "p@ss");
    });
}

#[test]
fn user_info_ends_at_the_last_at_sign() {
    let cases: &[(&str, Option<&str>, &str, &str)] = &[
        ("postgresql://u:p@ss@host/db", Some("u"), "p@ss", "host"),
        ("postgresql://u:a@b@c@host", Some("u"), "a@b@c", "host"),
        ("postgresql://u:pa?ss@host/db", Some("u"), "pa?ss", "host"),
        ("postgresql://u:p:w@host/db", Some("u"), "p:w", "host"),
        ("postgresql://:pw@host/db", None, "pw", "host"),
    ];
    for (input, user, password, host) in cases {
        check(input, |cs| {
            assert_eq!(cs.user(), *user, "{input}");
            assert_eq!(cs.password().unwrap().expose(), *password, "{input}");
            assert_eq!(cs.hosts(), &[tcp(host)], "{input}");
        });
    }
    // An `@` in a parameter value is not the end of the user info.
    check("postgresql://h?application_name=a@b", |cs| {
        assert_eq!(cs.user(), None);
        assert_eq!(cs.hosts(), &[tcp("h")]);
        assert_eq!(cs.application_name(), Some("a@b"));
    });
    check("postgresql://u@h/db?sslrootcert=/etc/ca.pem", |cs| {
        assert_eq!(cs.user(), Some("u"));
        assert_eq!(
            cs.sslrootcert(),
            Some(&RootCert::File("/etc/ca.pem".into()))
        );
    });
    // An empty password is no password (libpq), and `user@` alone has none.
    check("postgresql://u:@h", |cs| assert_eq!(cs.password(), None));
    check("postgresql://u@h", |cs| assert_eq!(cs.password(), None));
}

#[test]
fn multiple_hosts_and_ports() {
    let cases: &[(&str, &[&str], &[u16])] = &[
        (
            "postgresql://a:5433,b,c:6000/db",
            &["a", "b", "c"],
            &[5433, 5432, 6000],
        ),
        ("postgresql://a,b:7000/db", &["a", "b"], &[5432, 7000]),
        ("postgresql://a:7000,b:7000/db", &["a", "b"], &[7000]),
        ("postgresql://a:5432,b/db", &["a", "b"], &[5432]),
        ("postgresql://a,b/db", &["a", "b"], &[]),
        ("postgresql://a:/db", &["a"], &[]),
        ("postgresql://a,b/db?port=6000", &["a", "b"], &[6000]),
        ("host=a,b port=6000", &["a", "b"], &[6000]),
        ("host=a,b port=6000,6001", &["a", "b"], &[6000, 6001]),
        ("host=a,b port=,6001", &["a", "b"], &[5432, 6001]),
        ("host=a port=", &["a"], &[]),
    ];
    for (input, hosts, ports) in cases {
        check(input, |cs| {
            let want: Vec<Host> = hosts.iter().map(|h| tcp(h)).collect();
            assert_eq!(cs.hosts(), want.as_slice(), "{input}");
            assert_eq!(cs.ports(), *ports, "{input}");
        });
    }
    check("host=a,b,c port=6000", |cs| {
        assert_eq!(
            (0..3).map(|i| cs.port_for(i)).collect::<Vec<_>>(),
            [6000; 3]
        );
    });
    check("postgresql://a:1,b:2/db", |cs| {
        assert_eq!((cs.port_for(0), cs.port_for(1)), (1, 2));
    });
    check("host=a", |cs| assert_eq!(cs.port_for(0), 5432));
}

#[test]
fn ipv6_hosts() {
    check("postgresql://[::1]:5433/db", |cs| {
        assert_eq!(cs.hosts(), &[tcp("::1")]);
        assert_eq!(cs.ports(), &[5433]);
    });
    check("postgresql://u@[2001:db8::1],[::1]:6000/db", |cs| {
        assert_eq!(cs.hosts(), &[tcp("2001:db8::1"), tcp("::1")]);
        assert_eq!(cs.ports(), &[5432, 6000]);
    });
    check("postgresql://[fe80::1%25eth0]/db", |cs| {
        assert_eq!(cs.hosts(), &[tcp("fe80::1%eth0")]);
    });
    check("host=::1", |cs| assert_eq!(cs.hosts(), &[tcp("::1")]));
    check("host=[::1]", |cs| assert_eq!(cs.hosts(), &[tcp("::1")]));
}

#[test]
fn unix_socket_hosts() {
    let unix = |p: &str| Host::Unix(PathBuf::from(p));
    check("postgresql://%2Fvar%2Frun%2Fpostgresql/db", |cs| {
        assert_eq!(cs.hosts(), &[unix("/var/run/postgresql")]);
    });
    check("postgresql://%2Ftmp:5433/db", |cs| {
        assert_eq!(cs.hosts(), &[unix("/tmp")]);
        assert_eq!(cs.ports(), &[5433]);
    });
    check("postgresql:///db?host=/tmp&port=5433", |cs| {
        assert_eq!(cs.hosts(), &[unix("/tmp")]);
        assert_eq!(cs.ports(), &[5433]);
        assert_eq!(cs.dbname(), Some("db"));
    });
    check("postgresql:///db?host=%2Ftmp", |cs| {
        assert_eq!(cs.hosts(), &[unix("/tmp")]);
    });
    check("host=/tmp,db.example.com dbname=x", |cs| {
        assert_eq!(cs.hosts(), &[unix("/tmp"), tcp("db.example.com")]);
    });
}

#[test]
fn query_parameters_override_the_url_and_the_last_one_wins() {
    check(
        "postgresql://a:1/db?host=b&port=2&hostaddr=10.0.0.1&dbname=other&user=x",
        |cs| {
            assert_eq!(cs.hosts(), &[tcp("b")]);
            assert_eq!(cs.ports(), &[2]);
            assert_eq!(cs.hostaddrs(), &[Some("10.0.0.1".parse().unwrap())]);
            assert_eq!(cs.dbname(), Some("other"));
            assert_eq!(cs.user(), Some("x"));
        },
    );
    check(
        "postgresql://h/db?sslmode=require&sslmode=verify-ca",
        |cs| {
            assert_eq!(cs.sslmode(), Some(SslMode::VerifyCa));
        },
    );
    check("host=a host=b sslmode=require sslmode=verify-full", |cs| {
        assert_eq!(cs.hosts(), &[tcp("b")]);
        assert_eq!(cs.sslmode(), Some(SslMode::VerifyFull));
    });
    check("postgresql://h/db?&&sslmode=require&", |cs| {
        assert_eq!(cs.sslmode(), Some(SslMode::Require));
    });
    check("postgresql://h?sslmode=require", |cs| {
        assert_eq!(cs.hosts(), &[tcp("h")]);
        assert_eq!(cs.dbname(), None);
    });
}

#[test]
fn key_value_form_with_quotes_and_escapes() {
    let cases: &[(&str, &str)] = &[
        ("application_name=plain", "plain"),
        ("application_name='a b'", "a b"),
        (r"application_name='it\'s'", "it's"),
        (r"application_name='back\\slash'", r"back\slash"),
        (r"application_name=a\ b", "a b"),
        ("application_name = spaced", "spaced"),
        ("application_name =''", ""),
        ("  application_name='x'  ", "x"),
        ("application_name='a=b c'", "a=b c"),
        ("application_name=x://y", "x://y"),
    ];
    for (input, want) in cases {
        check(input, |cs| {
            assert_eq!(
                cs.application_name(),
                (!want.is_empty()).then_some(*want),
                "{input}"
            );
        });
    }
    check(
        r"host=h port = 6543 user='a b' password='it\'s' dbname=d\ x options='-c x=1'",
        |cs| {
            assert_eq!(cs.hosts(), &[tcp("h")]);
            assert_eq!(cs.ports(), &[6543]);
            assert_eq!(cs.user(), Some("a b"));
            assert_eq!(cs.password().unwrap().expose(), "it's");
            assert_eq!(cs.dbname(), Some("d x"));
            assert_eq!(cs.options(), Some("-c x=1"));
        },
    );
    check("", |cs| assert!(cs.hosts().is_empty()));
    // libpq skips spaces after `=`: `host= dbname=x` sets host to `dbname=x`.
    check("host= dbname=x", |cs| {
        assert_eq!(cs.hosts(), &[tcp("dbname=x")]);
        assert_eq!(cs.dbname(), None);
    });
}

#[test]
fn every_enum_value() {
    for mode in SslMode::ALL {
        check(&format!("sslmode={}", mode.as_str()), |cs| {
            assert_eq!(cs.sslmode(), Some(mode))
        });
    }
    for v in SslNegotiation::ALL {
        check(&format!("sslnegotiation={}", v.as_str()), |cs| {
            assert_eq!(cs.sslnegotiation(), Some(v))
        });
    }
    for v in ChannelBinding::ALL {
        check(&format!("channel_binding={}", v.as_str()), |cs| {
            assert_eq!(cs.channel_binding(), Some(v))
        });
    }
    for v in TargetSessionAttrs::ALL {
        check(&format!("target_session_attrs={}", v.as_str()), |cs| {
            assert_eq!(cs.target_session_attrs(), Some(v))
        });
    }
    let roots: &[(&str, Option<RootCert>)] = &[
        ("system", Some(RootCert::System)),
        ("./system", Some(RootCert::File("./system".into()))),
        ("System", Some(RootCert::File("System".into()))),
        (
            "/etc/ssl/ca.pem",
            Some(RootCert::File("/etc/ssl/ca.pem".into())),
        ),
        ("''", None),
    ];
    for (v, want) in roots {
        check(&format!("sslrootcert={v}"), |cs| {
            assert_eq!(cs.sslrootcert(), want.as_ref(), "{v}")
        });
    }
    let versions: &[(&str, Option<TlsVersion>, Option<TlsVersion>)] = &[
        ("TLSv1", Some(TlsVersion::Tls12), None),
        ("TLSv1.1", Some(TlsVersion::Tls12), None),
        ("TLSv1.2", Some(TlsVersion::Tls12), Some(TlsVersion::Tls12)),
        ("TLSv1.3", Some(TlsVersion::Tls13), Some(TlsVersion::Tls13)),
        ("tlsv1.3", Some(TlsVersion::Tls13), Some(TlsVersion::Tls13)),
    ];
    for (v, min, max) in versions {
        check(&format!("ssl_min_protocol_version={v}"), |cs| {
            assert_eq!(cs.ssl_min_protocol_version(), *min, "{v}")
        });
        if max.is_some() {
            check(&format!("ssl_max_protocol_version={v}"), |cs| {
                assert_eq!(cs.ssl_max_protocol_version(), *max, "{v}")
            });
        }
    }
    for (v, b) in [("0", false), ("1", true)] {
        check(&format!("sslsni={v} keepalives={v}"), |cs| {
            assert_eq!(cs.sslsni(), Some(b));
            assert_eq!(cs.keepalives(), Some(b));
        });
    }
    for (v, b) in [
        ("disable", LoadBalanceHosts::Disable),
        ("random", LoadBalanceHosts::Random),
    ] {
        check(&format!("load_balance_hosts={v}"), |cs| {
            assert_eq!(cs.load_balance_hosts(), Some(b))
        });
    }
    check("sslcert=/c.pem sslkey=/k.pem", |cs| {
        assert_eq!(cs.sslcert(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(cs.sslkey(), Some(std::path::Path::new("/k.pem")));
    });
    check("hostaddr=10.0.0.1,,::1 host=a,b,c", |cs| {
        assert_eq!(
            cs.hostaddrs(),
            &[
                Some("10.0.0.1".parse().unwrap()),
                None,
                Some("::1".parse().unwrap())
            ]
        );
    });
}

#[test]
fn timeouts_and_keepalives_follow_libpq() {
    let secs = Duration::from_secs;
    let connect: &[(&str, Option<Duration>)] = &[
        ("10", Some(secs(10))),
        (" 10 ", Some(secs(10))),
        ("1", Some(secs(2))),
        ("2", Some(secs(2))),
        ("0", None),
        ("-5", None),
    ];
    for (v, want) in connect {
        check(&format!("connect_timeout='{v}'"), |cs| {
            assert_eq!(cs.connect_timeout(), *want, "{v}")
        });
    }
    check(
        "tcp_user_timeout=1500 keepalives_idle=30 keepalives_interval=5 keepalives_retries=3",
        |cs| {
            assert_eq!(cs.tcp_user_timeout(), Some(Duration::from_millis(1500)));
            assert_eq!(cs.keepalives_idle(), Some(secs(30)));
            assert_eq!(cs.keepalives_interval(), Some(secs(5)));
            assert_eq!(cs.keepalives_count(), Some(3));
            assert_eq!(cs.source("keepalives_count"), Source::ConnectionString);
            assert_eq!(cs.source("keepalives_retries"), Source::ConnectionString);
        },
    );
    // 0 is the OS default in libpq.
    check(
        "tcp_user_timeout=0 keepalives_idle=0 keepalives_interval=0 keepalives_count=0",
        |cs| {
            assert_eq!(cs.tcp_user_timeout(), None);
            assert_eq!(cs.keepalives_idle(), None);
            assert_eq!(cs.keepalives_interval(), None);
            assert_eq!(cs.keepalives_count(), None);
        },
    );
    check("keepalives_count=7", |cs| {
        assert_eq!(cs.keepalives_count(), Some(7))
    });
}

/// A valid value for every key, to show each is accepted in the string and the
/// environment.
fn sample(key: &str) -> &'static str {
    match key {
        "host" => "h",
        "hostaddr" => "10.0.0.1",
        "port" => "5433",
        "sslmode" => "verify-ca",
        "sslrootcert" => "system",
        "sslnegotiation" => "direct",
        "sslsni" | "keepalives" => "0",
        "ssl_min_protocol_version" | "ssl_max_protocol_version" => "TLSv1.3",
        "channel_binding" | "sslcertmode" => "require",
        "connect_timeout"
        | "tcp_user_timeout"
        | "keepalives_idle"
        | "keepalives_interval"
        | "keepalives_count" => "7",
        "target_session_attrs" => "read-write",
        "load_balance_hosts" => "random",
        _ => "x",
    }
}

#[test]
fn every_key_is_accepted_in_the_string_and_its_variable() {
    for info in KEYS {
        let value = sample(info.name);
        check(&format!("{}={value}", info.name), |cs| {
            assert_eq!(
                cs.source(info.name),
                Source::ConnectionString,
                "{}",
                info.name
            );
        });
        check(&format!("postgresql://h/db?{}={value}", info.name), |cs| {
            assert_eq!(
                cs.source(info.name),
                Source::ConnectionString,
                "{}",
                info.name
            );
        });
        if let Some(var) = info.env {
            check_env("", &[(var, value)], |cs| {
                assert_eq!(cs.source(info.name), Source::Environment, "{var}");
                assert_eq!(
                    cs.redacted(),
                    ConnectionString::parse(&format!("{}={value}", info.name))
                        .unwrap()
                        .redacted(),
                    "{var}"
                );
            });
        }
    }
    let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "a key is listed twice");
}

#[test]
fn the_string_beats_the_environment_beats_the_default() {
    let env: &[(&str, &str)] = &[
        ("PGHOST", "envhost"),
        ("PGPORT", "6543"),
        ("PGUSER", "envuser"),
        ("PGPASSWORD", PW),
        ("PGDATABASE", "envdb"),
        ("PGSSLMODE", "verify-ca"),
        ("PGAPPNAME", "from-env"),
        ("PGCONNECT_TIMEOUT", "10"),
        ("PGSSLROOTCERT", "system"),
        ("PGCHANNELBINDING", "require"),
    ];
    check_env("postgresql://u@urlhost/db?sslmode=require", env, |cs| {
        assert_eq!(cs.hosts(), &[tcp("urlhost")]);
        assert_eq!(cs.source("host"), Source::ConnectionString);
        assert_eq!(cs.user(), Some("u"));
        assert_eq!(cs.dbname(), Some("db"));
        assert_eq!(cs.sslmode(), Some(SslMode::Require));
        assert_eq!(cs.source("sslmode"), Source::ConnectionString);
        assert_eq!(cs.ports(), &[6543]);
        assert_eq!(cs.source("port"), Source::Environment);
        assert_eq!(cs.password().unwrap().expose(), PW);
        assert_eq!(cs.source("password"), Source::Environment);
        assert_eq!(cs.application_name(), Some("from-env"));
        assert_eq!(cs.connect_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(cs.sslrootcert(), Some(&RootCert::System));
        assert_eq!(cs.channel_binding(), Some(ChannelBinding::Require));
        assert_eq!(cs.source("sslnegotiation"), Source::Default);
        assert_eq!(cs.sslnegotiation(), None);
    });
    check_env("", env, |cs| {
        assert_eq!(cs.hosts(), &[tcp("envhost")]);
        assert_eq!(cs.user(), Some("envuser"));
        assert_eq!(cs.dbname(), Some("envdb"));
        assert_eq!(cs.sslmode(), Some(SslMode::VerifyCa));
    });
    // A key given in the string wins even when empty (libpq).
    check_env("host='' dbname=x", &[("PGHOST", "envhost")], |cs| {
        assert!(cs.hosts().is_empty());
        assert_eq!(cs.source("host"), Source::ConnectionString);
    });
    // parse() reads no environment at all.
    check("dbname=x", |cs| {
        assert!(cs.hosts().is_empty());
        assert_eq!(cs.source("host"), Source::Default);
        assert_eq!(cs.source("no_such_key"), Source::Default);
    });
    // The port list is checked against hosts from the environment too.
    let e = err_env("port=1,2,3", &[("PGHOST", "a,b")]);
    assert_eq!(e.message(), "could not match 3 port numbers to 2 hosts");
}

#[test]
fn pgrequiressl() {
    check_env("host=h", &[("PGREQUIRESSL", "1")], |cs| {
        assert_eq!(cs.sslmode(), Some(SslMode::Require));
        assert_eq!(cs.source("sslmode"), Source::Environment);
    });
    check_env(
        "host=h",
        &[("PGREQUIRESSL", "1"), ("PGSSLMODE", "verify-full")],
        |cs| assert_eq!(cs.sslmode(), Some(SslMode::VerifyFull)),
    );
    check_env("host=h sslmode=verify-ca", &[("PGREQUIRESSL", "1")], |cs| {
        assert_eq!(cs.sslmode(), Some(SslMode::VerifyCa))
    });
    check_env("host=h", &[("PGREQUIRESSL", "0")], |cs| {
        assert_eq!(cs.sslmode(), None);
        assert_eq!(cs.source("sslmode"), Source::Default);
    });
    for input in ["host=h", "host=h sslmode=require"] {
        let e = err_env(input, &[("PGREQUIRESSL", "yes")]);
        assert!(e.message().contains("`PGREQUIRESSL`"), "{e}");
    }
}

#[test]
fn invalid_environment_values_name_the_variable() {
    let e = err_env("host=h", &[("PGSSLMODE", "verify")]);
    assert_eq!(
        e.to_string(),
        "invalid value \"verify\" for the environment variable `PGSSLMODE`; help: accepted values: `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`"
    );
    let cases: &[(&str, &str, &str)] = &[
        ("PGPORT", "abc", "a port number"),
        ("PGPORT", "0", "a port number"),
        ("PGHOSTADDR", "db.example.com", "IP addresses"),
        ("PGCONNECT_TIMEOUT", "10s", "seconds"),
        ("PGSSLSNI", "yes", "`0`, `1`"),
        ("PGSSLNEGOTIATION", "tls", "`postgres`, `direct`"),
        ("PGCHANNELBINDING", "on", "`disable`, `prefer`, `require`"),
        ("PGSSLMAXPROTOCOLVERSION", "TLSv1", "TLSv1.2"),
        ("PGSSLMINPROTOCOLVERSION", "SSLv3", "TLSv1.3"),
        ("PGTARGETSESSIONATTRS", "replica", "prefer-standby"),
        ("PGLOADBALANCEHOSTS", "yes", "`random`"),
    ];
    for (var, value, help) in cases {
        let e = err_env("host=h", &[(var, value)]);
        assert!(e.message().contains(&format!("`{var}`")), "{var}: {e}");
        assert!(e.help().unwrap().contains(help), "{var}: {e}");
    }
    // The string's value wins, so a bad variable it overrides is never read.
    check_env("sslmode=require", &[("PGSSLMODE", "verify")], |cs| {
        assert_eq!(cs.sslmode(), Some(SslMode::Require))
    });
}

#[test]
fn form_and_url_errors() {
    errors(
        &[],
        &[
            (
                "mysql://u:npg_S3cr3t@h/db",
                "invalid connection string scheme `mysql`",
                "use `postgresql://user:password@host/dbname`",
            ),
            (
                "http://h/db",
                "invalid connection string scheme `http`",
                "postgresql://",
            ),
            (
                "jdbc:postgresql://h/db",
                "invalid connection string scheme `jdbc:postgresql`",
                "drop the `jdbc:` prefix",
            ),
            (
                "JDBC:postgresql://h/db",
                "scheme",
                "drop the `jdbc:` prefix",
            ),
            (
                "u:npg_S3cr3t@h://x",
                "invalid connection string scheme",
                "postgresql://",
            ),
            (
                "postgres:/h/db",
                "must start with `postgresql://`",
                "postgresql://",
            ),
            (
                "POSTGRESQL:h",
                "must start with `postgresql://`",
                "postgresql://",
            ),
            (
                "just some words",
                "neither a `postgresql://` URL nor `key=value` pairs",
                "host=...",
            ),
            (
                "postgresql://u:npg_S3cr3t%zz@h/db",
                "invalid percent-encoding in the password",
                "%25",
            ),
            (
                "postgresql://u:npg_S3cr3t%2@h/db",
                "invalid percent-encoding in the password",
                "%25",
            ),
            (
                "postgresql://u:npg_S3cr3t%ff@h/db",
                "invalid percent-encoding in the password: it does not decode to UTF-8",
                "UTF-8",
            ),
            (
                "postgresql://u%zz:npg_S3cr3t@h/db",
                "invalid percent-encoding in the user name",
                "%25",
            ),
            (
                "postgresql://u:npg_S3cr3t@h%zz/db",
                "invalid percent-encoding in the host",
                "%25",
            ),
            (
                "postgresql://u:npg_S3cr3t@[::1%zz]/db",
                "invalid percent-encoding in the host",
                "%25",
            ),
            (
                "postgresql://u:npg_S3cr3t@h/d%zz",
                "invalid percent-encoding in the database name",
                "%25",
            ),
            (
                "postgresql://u:npg_S3cr3t@h/db?sslmode=%zz",
                "invalid percent-encoding in the value of `sslmode`",
                "%25",
            ),
            (
                "postgresql://u:npg_S3cr3t@h/db?ssl%zz=1",
                "invalid percent-encoding in the parameter name",
                "%25",
            ),
            (
                "postgresql://h/db?password=npg_S3cr3t%zz",
                "invalid percent-encoding in the password",
                "%25",
            ),
            (
                "postgresql://u:npg_S3cr3t@h:99999/db",
                "invalid port \"99999\" for host \"h\"",
                "1 to 65535",
            ),
            (
                "postgresql://u:npg_S3cr3t@h:0/db",
                "invalid port \"0\" for host \"h\"",
                "1 to 65535",
            ),
            (
                "postgresql://u:npg_S3cr3t@h:54x/db",
                "invalid port \"54x\"",
                "1 to 65535",
            ),
            (
                "postgresql://u:npg_S3cr3t@a:1,b:-2/db",
                "invalid port \"-2\" for host \"b\"",
                "1 to 65535",
            ),
            (
                "postgresql://u:npg_S3cr3t/db",
                "invalid port after host \"u\"",
                "user:password@host",
            ),
            (
                "postgresql://u:npg_S3cr3t/x@h/db",
                "could not tell the user name and password from the host",
                "percent-encode `/`",
            ),
            (
                "postgresql://u:npg_S3cr3t@[::1/db",
                "missing `]`",
                "[::1]:5432",
            ),
            (
                "postgresql://u:npg_S3cr3t@[::1]x/db",
                "invalid text after the IPv6 host `[::1]`",
                "[::1]:5432",
            ),
            (
                "postgresql://u:npg_S3cr3t@::1/db",
                "an IPv6 address must be in brackets",
                "[::1]:5432",
            ),
            (
                "postgresql://u:npg_S3cr3t@a,,b/db",
                "empty entry in the host list of `host`",
                "host1,host2",
            ),
            (
                "postgresql://u:npg_S3cr3t@h/db?sslmode",
                "missing `=` after `sslmode` in the URL's parameters",
                "?key=value",
            ),
        ],
    );
}

#[test]
fn key_value_errors() {
    errors(
        &[],
        &[
            (
                "host=h password='npg_S3cr3t",
                "unterminated quoted value for `password`",
                "\\'",
            ),
            (
                "host=h password=npg S3cr3t",
                "after the value of `password`",
                "password='...'",
            ),
            (
                "host=h password",
                "missing `=` after `password`",
                "key=value",
            ),
            ("host=h sslmode", "missing `=` after `sslmode`", "key=value"),
            ("host=h =x", "without a key", "key=value"),
            (
                "host=a,,b",
                "empty entry in the host list of `host`",
                "host1,host2",
            ),
            (
                "host=h port=70000",
                "invalid value \"70000\" for `port`",
                "1 to 65535",
            ),
            (
                "host=h port=5432,x",
                "invalid value \"x\" for `port`",
                "1 to 65535",
            ),
            (
                "host=h port=+5",
                "invalid value \"+5\" for `port`",
                "1 to 65535",
            ),
        ],
    );
}

#[test]
fn value_errors() {
    errors(&[], &[
        ("postgresql://u:npg_S3cr3t@h/db?sslmode=verify", "invalid value \"verify\" for `sslmode`", "accepted values: `disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`"),
        ("sslmode=VERIFY-FULL", "invalid value \"VERIFY-FULL\" for `sslmode`", "`verify-full`"),
        ("sslnegotiation=tls", "for `sslnegotiation`", "`postgres`, `direct`"),
        ("channel_binding=yes", "for `channel_binding`", "`disable`, `prefer`, `require`"),
        ("sslsni=true", "for `sslsni`", "`0`, `1`"),
        ("keepalives=2", "for `keepalives`", "`0`, `1`"),
        ("ssl_min_protocol_version=TLSv2", "for `ssl_min_protocol_version`", "`TLSv1`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`"),
        ("ssl_max_protocol_version=TLSv1.1", "TLS below 1.2 is not supported", "`TLSv1.2` or `TLSv1.3`"),
        ("ssl_max_protocol_version=TLSv1", "TLS below 1.2 is not supported", "`TLSv1.2` or `TLSv1.3`"),
        ("ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2", "invalid SSL protocol version range", "must not be above"),
        ("connect_timeout=soon", "invalid value \"soon\" for `connect_timeout`", "seconds"),
        ("connect_timeout=1.5", "for `connect_timeout`", "seconds"),
        ("tcp_user_timeout=-1", "for `tcp_user_timeout`", "milliseconds"),
        ("keepalives_idle=x", "for `keepalives_idle`", "seconds"),
        ("keepalives_interval=1m", "for `keepalives_interval`", "seconds"),
        ("keepalives_count=-1", "for `keepalives_count`", "whole number"),
        ("keepalives_retries=x", "for `keepalives_retries`", "whole number"),
        ("target_session_attrs=bogus", "for `target_session_attrs`", "`any`, `read-write`, `read-only`, `primary`, `standby`, `prefer-standby`"),
        ("load_balance_hosts=yes", "for `load_balance_hosts`", "`disable`, `random`"),
        ("host=h hostaddr=localhost", "invalid value \"localhost\" for `hostaddr`", "IP addresses"),
        ("host=a,b hostaddr=127.0.0.1", "could not match 2 host names to 1 hostaddr values", "one `hostaddr` per `host`"),
        ("host=a,b port=1,2,3", "could not match 3 port numbers to 2 hosts", "one port for all hosts"),
        ("hostaddr=10.0.0.1,10.0.0.2 port=1,2,3", "could not match 3 port numbers to 2 hosts", "one port"),
        ("host=h gssencmode=require", "GSSAPI encryption is never used", "remove `gssencmode`"),
        ("host=h gssencmode=maybe", "for `gssencmode`", "`disable`, `prefer`, `require`"),
        ("host=h sslcompression=yes", "for `sslcompression`", "`0`, `1`"),
        ("host=h client_encoding=LATIN1", "for `client_encoding`", "UTF8"),
    ]);
}

#[test]
fn unknown_keys_name_the_parameter_meant() {
    let cases: &[(&str, &str)] = &[
        ("sslmod", "sslmode"),
        ("SSLMODE", "sslmode"),
        ("ssl", "sslmode"),
        ("ssl_mode", "sslmode"),
        ("sslaccept", "sslmode"),
        ("requiressl", "sslmode"),
        ("database", "dbname"),
        ("db", "dbname"),
        ("dbnme", "dbname"),
        ("username", "user"),
        ("usr", "user"),
        ("pass", "password"),
        ("pwd", "password"),
        ("passwrd", "password"),
        ("sslca", "sslrootcert"),
        ("ca", "sslrootcert"),
        ("sslrootcertificate", "sslrootcert"),
        ("sslcertificate", "sslcert"),
        ("application-name", "application_name"),
        ("appname", "application_name"),
        ("connection_timeout", "connect_timeout"),
        ("connecttimeout", "connect_timeout"),
        ("timeout", "connect_timeout"),
        ("hots", "host"),
        ("hostname", "host"),
        ("prot", "port"),
        ("chanel_binding", "channel_binding"),
        ("tcp_keepalives_idle", "keepalives_idle"),
        ("ssl_min_protocol", "ssl_min_protocol_version"),
        ("application", "application_name"),
        ("target_session", "target_session_attrs"),
    ];
    for (key, meant) in cases {
        for input in [
            format!("postgresql://u:{PW}@h/db?{key}=x"),
            format!("host=h password={PW} {key}=x"),
        ] {
            let e = err_env(&input, &[]);
            assert_eq!(e.message(), format!("unknown connection parameter `{key}`"));
            assert_eq!(
                e.help(),
                Some(format!("the parameter is named `{meant}`").as_str()),
                "{key}"
            );
        }
    }
    assert_eq!(
        err("postgresql://h/db?sslmod=require"),
        "unknown connection parameter `sslmod`; help: the parameter is named `sslmode`"
    );
    let e = err_env("host=h frobnicate=1", &[]);
    assert_eq!(e.message(), "unknown connection parameter `frobnicate`");
    assert!(e.help().unwrap().contains("README"));
    for (key, help) in [
        ("pgbouncer", "Prisma"),
        ("connection_limit", "Options::pool_size"),
        ("schema", "search_path"),
        ("statement_timeout", "options=-c statement_timeout"),
    ] {
        let e = err_env(&format!("postgresql://h/db?{key}=1"), &[]);
        assert_eq!(e.message(), format!("unknown connection parameter `{key}`"));
        assert!(e.help().unwrap().contains(help), "{key}: {e}");
    }
}

#[test]
fn unsupported_libpq_keys_say_so() {
    for (key, _) in UNSUPPORTED {
        let e = err_env(&format!("host=h {key}={PW}"), &[]);
        assert_eq!(
            e.message(),
            format!("connection parameter `{key}` is not supported by neon-connect")
        );
    }
    errors(
        &[],
        &[
            (
                "host=h service=prod",
                "`service` is not supported",
                "service files",
            ),
            (
                "host=h require_auth=scram-sha-256",
                "`require_auth` is not supported",
                "channel_binding=require",
            ),
        ],
    );
}

#[test]
fn libpq_refuses_an_empty_ipv6_host_and_a_percent_encoded_nul() {
    errors(
        &[],
        &[
            (
                "postgres://[]",
                "IPv6 host address may not be empty",
                "[::1]:5432",
            ),
            (
                "postgresql://[]:5432/db",
                "IPv6 host address may not be empty",
                "[::1]",
            ),
            (
                "postgresql://a,[]/db",
                "IPv6 host address may not be empty",
                "[::1]",
            ),
            (
                "postgresql://u%00@h/db",
                "forbidden value %00 in the user name",
                "NUL",
            ),
            (
                "postgresql://u:pw%00x@h/db",
                "forbidden value %00 in the password",
                "NUL",
            ),
            (
                "postgresql://h%00/db",
                "forbidden value %00 in the host",
                "NUL",
            ),
            (
                "postgresql://[::1%00]/db",
                "forbidden value %00 in the host",
                "NUL",
            ),
            (
                "postgresql://h/d%00b",
                "forbidden value %00 in the database name",
                "NUL",
            ),
            (
                "postgresql://h/db?application_name=a%00",
                "forbidden value %00 in the value of `application_name`",
                "NUL",
            ),
            (
                "postgresql://h/db?app%00=a",
                "forbidden value %00 in the parameter name",
                "NUL",
            ),
            (
                "postgresql://h/db?password=a%00b",
                "forbidden value %00 in the password",
                "NUL",
            ),
        ],
    );
    // The password is never quoted.
    let e = err("postgresql://u:npg_S3cr3t%00@h/db");
    assert!(!e.contains("npg_S3cr3t"), "{e}");
    // Other encoded control characters are accepted, as in libpq: only NUL is refused.
    check("postgresql://h/db?application_name=a%01b", |cs| {
        assert_eq!(cs.application_name(), Some("a\u{1}b"));
    });
}

#[test]
fn revocation_lists_from_the_string_and_the_environment() {
    check("host=h sslcrl=/etc/crl.pem sslcrldir=/etc/crls", |cs| {
        assert_eq!(cs.sslcrl(), Some(std::path::Path::new("/etc/crl.pem")));
        assert_eq!(cs.sslcrldir(), Some(std::path::Path::new("/etc/crls")));
    });
    let cs = ConnectionString::parse_with_env("host=h", |k| match k {
        "PGSSLCRL" => Some("/env/crl.pem".into()),
        "PGSSLCRLDIR" => Some("/env/crls".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(cs.sslcrl(), Some(std::path::Path::new("/env/crl.pem")));
    assert_eq!(cs.sslcrldir(), Some(std::path::Path::new("/env/crls")));
    assert_eq!(cs.source("sslcrl"), Source::Environment);
    // An empty value is no value, as in libpq.
    check("host=h sslcrl=''", |cs| assert_eq!(cs.sslcrl(), None));
}

#[test]
fn harmless_libpq_keys_are_accepted_and_ignored() {
    for input in [
        "host=h gssencmode=disable",
        "host=h gssencmode=prefer",
        "host=h sslcompression=0",
        "host=h sslcompression=1",
        "host=h client_encoding=UTF8",
        "host=h client_encoding=utf8",
        "postgresql://h/db?client_encoding=UTF-8&gssencmode=disable",
    ] {
        check(input, |cs| {
            assert_eq!(cs.hosts(), &[tcp("h")]);
            assert_eq!(
                cs,
                &ConnectionString::parse("host=h")
                    .map(|mut c| {
                        c.sources = cs.sources.clone();
                        c.dbname = cs.dbname.clone();
                        c
                    })
                    .unwrap()
            );
        });
    }
}

#[test]
fn debug_and_display_never_show_the_password() {
    let env = [("PGPASSWORD", PW)];
    for input in [
        format!("postgresql://u:{PW}@h/db"),
        format!("host=h user=u password='{PW}' dbname=db"),
        format!("postgresql://u@h/db?password={PW}"),
        "postgresql://u@h/db".to_string(),
    ] {
        check_env(&input, &env, |cs| {
            let debug = format!("{cs:?}");
            let pretty = format!("{cs:#?}");
            for text in [&debug, &pretty, &cs.to_string(), &cs.redacted()] {
                assert!(!text.contains("S3cr3t"), "{input}: {text}");
            }
            assert!(debug.contains("password: Some(***)"), "{debug}");
            assert_eq!(cs.to_string(), "postgresql://u:***@h/db");
            // Every key of the table shows, by its libpq name.
            for field in KEYS.iter().map(|k| k.name) {
                assert!(
                    debug.contains(&format!("{field}: ")),
                    "{field} missing: {debug}"
                );
            }
        });
    }
    check("host=h", |cs| {
        assert!(format!("{cs:?}").contains("password: None"))
    });
}

#[test]
fn redacted_round_trips() {
    let inputs = [
        "",
        "postgresql://u@a:5433,b:5434/db?sslmode=verify-ca&sslrootcert=/etc/ca.pem&channel_binding=require",
        "host=/tmp port=5433 dbname=x application_name='my app' options='-c search_path=a,b'",
        "postgresql://[::1]:6000/db?sslnegotiation=direct&sslsni=0&connect_timeout=7&target_session_attrs=read-write",
        "postgresql://h/db?hostaddr=10.0.0.1&ssl_min_protocol_version=TLSv1.3&keepalives=0&load_balance_hosts=random",
        r"host=a,b port=7000 user='we ird@:/?#&=+%\'' dbname='d b/é' application_name='x&y=z#w'",
        "host=a,b,c hostaddr=10.0.0.1,,::1",
        "postgresql://[fe80::1%25eth0]:5432,h2/db",
        "postgresql://a,b:7000/db",
        "port=5433 hostaddr=127.0.0.1",
        "hostaddr=10.0.0.1,10.0.0.2 port=1,2",
        "tcp_user_timeout=1500 keepalives_idle=30 keepalives_interval=5 keepalives_retries=4 sslcert=/c.pem sslkey=/k.pem sslrootcert=system ssl_max_protocol_version=TLSv1.2 host=h",
        "postgresql://%2Fvar%2Frun%2Fpostgresql:5433/db?application_name=a%26b%3Dc+d",
        "postgresql://h/db?options=endpoint%3Dep-cool-123&sslmode=disable&connect_timeout=1",
        "sslrootcert=./system sslmode=allow target_session_attrs=any keepalives=1 sslsni=1",
    ];
    for input in inputs {
        let mut a = ConnectionString::parse(input).unwrap_or_else(|e| panic!("{input}: {e:#}"));
        let url = a.redacted();
        let mut b =
            ConnectionString::parse(&url).unwrap_or_else(|e| panic!("{input} -> {url}: {e:#}"));
        assert_eq!(b.redacted(), url, "{input}");
        a.sources.clear();
        b.sources.clear();
        assert_eq!(a, b, "{input} -> {url}");
    }
    check("postgresql://a,b:7000/db", |cs| {
        assert_eq!(cs.redacted(), "postgresql://a:5432,b:7000/db")
    });
    check("host=a,b port=7000 user=u@x", |cs| {
        assert_eq!(cs.redacted(), "postgresql://u%40x@a:7000,b:7000/")
    });
    check("postgresql://u:p@h", |cs| {
        assert_eq!(cs.redacted(), "postgresql://u:***@h/")
    });
}

#[test]
fn from_str_display_and_setters() {
    let mut cs: ConnectionString = "postgresql://h/db".parse().unwrap();
    assert_eq!(cs.to_string(), "postgresql://h/db");
    assert_eq!(cs.source("password"), Source::Default);
    cs.set_password(Password::new(PW));
    cs.set_user("u");
    cs.set_dbname("d");
    cs.set_options("-c x=1");
    cs.set_application_name("app");
    cs.set_sslmode(SslMode::VerifyFull);
    cs.set_sslrootcert(RootCert::System);
    cs.set_sslnegotiation(SslNegotiation::Direct);
    cs.set_channel_binding(ChannelBinding::Require);
    cs.set_connect_timeout(Duration::from_millis(2500));
    cs.set_target_session_attrs(TargetSessionAttrs::ReadWrite);
    for key in [
        "password",
        "user",
        "dbname",
        "options",
        "application_name",
        "sslmode",
        "sslrootcert",
        "sslnegotiation",
        "channel_binding",
        "connect_timeout",
        "target_session_attrs",
    ] {
        assert_eq!(cs.source(key), Source::Code, "{key}");
    }
    assert_eq!(cs.password().unwrap().expose(), PW);
    assert_eq!(cs.connect_timeout(), Some(Duration::from_millis(2500)));
    assert_eq!(
        cs.to_string(),
        "postgresql://u:***@h/d?options=-c%20x%3D1&application_name=app&sslmode=verify-full&sslrootcert=system&sslnegotiation=direct&channel_binding=require&connect_timeout=3&target_session_attrs=read-write"
    );
    assert!("mysql://x".parse::<ConnectionString>().is_err());
}

#[test]
fn levenshtein_distance() {
    for (a, b, d) in [
        ("", "", 0),
        ("abc", "", 3),
        ("", "abc", 3),
        ("sslmode", "sslmode", 0),
        ("sslmod", "sslmode", 1),
        ("sslmdoe", "sslmode", 2),
        ("kitten", "sitting", 3),
        ("é", "e", 1),
    ] {
        assert_eq!(levenshtein(a, b), d, "{a} {b}");
    }
}
