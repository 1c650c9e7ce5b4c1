//! `neon-doctor` as a user runs it: the real program against real servers and scripted peers,
//! in text and in JSON. The test CA is the "system" store (`SSL_CERT_FILE`, inherited by the
//! program), so URLs without `sslmode` mean verify-full against it.

mod support;

use neon_connect_testing::neon::{FakeNeonProxy, Script};
use neon_connect_testing::{trust_test_ca_as_system_store, CertKind, PgServer, ServerOptions};
use serde_json::Value;
use std::process::Command;

struct Run {
    code: i32,
    text: String,
    json: Value,
}

/// Runs the program twice, for text and for JSON, with `url` as its argument.
async fn doctor(url: &str) -> Run {
    trust_test_ca_as_system_store().expect("test CA bundle");
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let run = |json: bool| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_neon-doctor"));
            for (k, _) in std::env::vars() {
                if k.starts_with("PG") || k == "DATABASE_URL" || k == "NO_COLOR" {
                    cmd.env_remove(k);
                }
            }
            if json {
                cmd.arg("--json");
            }
            let out = cmd.arg(&url).output().expect("run neon-doctor");
            let stdout = String::from_utf8(out.stdout).expect("utf-8");
            let stderr = String::from_utf8(out.stderr).expect("utf-8");
            support::assert_no_secret(
                "neon-doctor's output",
                &format!("{stdout}\n{stderr}"),
                &["npg_", "TestSecret", "ProxySecret", "wrong-password"],
            );
            // Not a terminal: no colour, no progress line.
            assert!(!stdout.contains('\x1b'), "colour off a terminal:\n{stdout}");
            assert!(stderr.is_empty(), "stderr: {stderr}");
            (out.status.code().expect("exit code"), stdout)
        };
        let (code, text) = run(false);
        let (json_code, json) = run(true);
        assert_eq!(
            code, json_code,
            "text and JSON runs disagree:\n{text}\n{json}"
        );
        println!("{text}");
        let json: Value = serde_json::from_str(&json).expect("JSON report");
        Run { code, text, json }
    })
    .await
    .expect("doctor run")
}

/// The step object named `name` in the JSON report.
fn step<'a>(run: &'a Run, name: &str) -> &'a Value {
    run.json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {}", run.json))
}

/// Asserts the report failed at step `n` (1-based, named `name`) with diagnosis `id`, that
/// the steps before passed and the ones after were skipped, in text and in JSON.
fn assert_fails_at(run: &Run, n: usize, name: &str, id: Option<&str>) {
    assert_eq!(run.code, 1, "{}", run.text);
    assert_eq!(run.json["ok"], false);
    assert_eq!(run.json["failed_step"], name, "{}", run.json);
    let steps = run.json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 6);
    for (i, s) in steps.iter().enumerate() {
        let want = match (i + 1).cmp(&n) {
            std::cmp::Ordering::Less => "pass",
            std::cmp::Ordering::Equal => "fail",
            std::cmp::Ordering::Greater => "skipped",
        };
        assert_eq!(s["status"], want, "step {}: {}", i + 1, run.json);
    }
    let error = &run.json["error"];
    if let Some(id) = id {
        assert_eq!(error["diagnosis"], id, "{}", run.json);
    }
    let help = error["help"].as_str().expect("a fix");
    assert!(!help.is_empty());
    // The text report: the failing step is marked, and ends with the diagnosis and the fix.
    let marker = format!("[{n}/6] ");
    let line = run
        .text
        .lines()
        .find(|l| l.starts_with(&marker))
        .unwrap_or_else(|| panic!("no step {n} line:\n{}", run.text));
    assert!(line.contains(" FAIL"), "{line}");
    // The text and the JSON come from two runs: the moments in them may differ.
    let message = without_moments(error["message"].as_str().unwrap());
    let text = without_moments(&run.text);
    assert!(text.contains(&format!("error: {message}")), "{}", run.text);
    assert!(
        text.contains(&format!("fix: {}", without_moments(help))),
        "{}",
        run.text
    );
    assert!(
        run.text.contains(&format!("Step {n} (")) && run.text.contains(") failed."),
        "{}",
        run.text
    );
}

/// `s` with the digits of the times that depend on when the program ran replaced by `#`: the
/// clock in "now is 2025-01-31 12:00:00 UTC" and the duration in "attempts in 1.2s".
fn without_moments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = ["now is ", "attempts in "]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| i + m.len()))
        .min()
    {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let moment = rest
            .find(|c: char| !(c.is_ascii_digit() || "-:. ".contains(c)))
            .unwrap_or(rest.len());
        out.extend(rest[..moment].chars().map(|c| match c {
            '0'..='9' => '#',
            c => c,
        }));
        rest = &rest[moment..];
    }
    out.push_str(rest);
    out
}

#[test]
fn without_moments_masks_only_the_moments() {
    assert_eq!(
        without_moments("has expired (it expired at 2020-01-02 03:04:05 UTC, now is 2025-01-31 12:00:09 UTC) on port 5432"),
        "has expired (it expired at 2020-01-02 03:04:05 UTC, now is ####-##-## ##:##:## UTC) on port 5432"
    );
    assert_eq!(
        without_moments("refused (after 3 attempts in 1.2s); now is 1"),
        "refused (after 3 attempts in #.#s); now is #"
    );
}

#[tokio::test]
async fn a_healthy_server_passes_every_step() {
    let s = PgServer::shared();
    let run = doctor(&support::verified_url(s)).await;
    assert_eq!(run.code, 0, "{}", run.text);
    assert_eq!(run.json["ok"], true);
    for (i, line) in [
        "[1/6] Connection string",
        "[2/6] DNS",
        "[3/6] TCP",
        "[4/6] TLS",
        "[5/6] Authentication",
        "[6/6] Query",
    ]
    .iter()
    .enumerate()
    {
        let l = run.text.lines().find(|l| l.starts_with(line)).unwrap();
        assert!(l.contains(" pass"), "step {}: {l}", i + 1);
    }
    assert!(run.text.contains("All 6 steps passed"), "{}", run.text);

    let cs = step(&run, "connection_string");
    assert_eq!(cs["details"]["settings"]["sslmode"]["value"], "verify-full");
    assert_eq!(
        cs["details"]["settings"]["sslmode"]["source"],
        "connection string"
    );
    assert_eq!(cs["details"]["settings"]["password"]["value"], "set");
    assert!(cs["details"]["connection_string"]
        .as_str()
        .unwrap()
        .contains(":***@"));

    assert_eq!(
        step(&run, "dns")["details"]["hosts"][0]["addresses"][0],
        "127.0.0.1"
    );
    assert_eq!(
        step(&run, "tcp")["details"]["addresses"][0]["reachable"],
        true
    );

    let tls = &step(&run, "tls")["details"];
    assert_eq!(tls["protocol"], "TLSv1.3");
    assert_eq!(tls["sni"], "sent");
    assert_eq!(tls["alpn"], "none");
    let leaf = &tls["certificates"][0];
    assert!(leaf["subject"].as_str().unwrap().contains("CN=localhost"));
    assert!(leaf["issuer"].as_str().unwrap().contains("test CA"));
    assert!(leaf["names"]
        .as_array()
        .unwrap()
        .contains(&"localhost".into()));
    assert!(leaf["days_left"].as_i64().unwrap() > 0);
    assert!(
        tls["verdict"].as_str().unwrap().starts_with(
            "verify-full: chain and host name verified against the root certificate file"
        ),
        "{tls}"
    );

    let auth = &step(&run, "authentication")["details"];
    assert_eq!(auth["method"], "SCRAM-SHA-256-PLUS (with channel binding)");
    let query = &step(&run, "query")["details"];
    assert!(query["version"]
        .as_str()
        .unwrap()
        .starts_with("PostgreSQL 15"));
    assert_eq!(query["server_sees_tls"], true);
    assert!(run.text.contains("an encrypted session (TLSv1.3"));
}

#[tokio::test]
async fn a_weak_mode_passes_and_says_what_verify_full_would() {
    // sslmode=require: encrypted only. The doctor warns, and checks the chain as verify-full
    // would, against the system store (the test CA here).
    let s = PgServer::shared();
    let run = doctor(&format!("{}?sslmode=require", s.url())).await;
    assert_eq!(run.code, 0, "{}", run.text);
    let cs = step(&run, "connection_string");
    assert!(cs["warnings"][0]
        .as_str()
        .unwrap()
        .contains("will not be verified"));
    assert!(run
        .text
        .contains("warning: the server's certificate will not be verified"));
    let tls = &step(&run, "tls")["details"];
    assert_eq!(
        tls["verdict"],
        "require: encrypted; the certificate was not verified"
    );
    assert!(
        tls["verify_full"]
            .as_str()
            .unwrap()
            .starts_with("pass: chain and host name verified against the system root store"),
        "{tls}"
    );

    // The same against a certificate for another name: require passes, verify-full would not.
    let wrong = PgServer::start(ServerOptions::default().cert(CertKind::WrongHost)).unwrap();
    let run = doctor(&format!("{}?sslmode=require", wrong.url())).await;
    assert_eq!(run.code, 0, "{}", run.text);
    let would = step(&run, "tls")["details"]["verify_full"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        would.starts_with(&format!(
            "fail: the certificate of \"localhost:{}\" is not valid for the name \"localhost\"",
            wrong.port()
        )),
        "{would}"
    );
}

#[tokio::test]
async fn a_server_without_tls_fails_at_tls() {
    let s = PgServer::start(ServerOptions::default().tls(false)).unwrap();
    let run = doctor(&s.url()).await;
    assert_fails_at(&run, 4, "tls", Some("tls-server-without-tls"));
    assert_eq!(
        step(&run, "tls")["details"]["inspection"],
        "the server answered N to the TLS request: it does not support TLS"
    );
}

#[tokio::test]
async fn certificate_failures_fail_at_tls_and_show_the_chain() {
    for (kind, id, shows) in [
        (
            CertKind::UntrustedCa,
            "certificate-unknown-issuer",
            "untrusted",
        ),
        (CertKind::WrongHost, "certificate-wrong-name", "names"),
        (CertKind::Expired, "certificate-expired", "EXPIRED"),
    ] {
        let s = PgServer::start(ServerOptions::default().cert(kind)).unwrap();
        // No sslmode: verify-full against the system store (the test CA).
        let run = doctor(&s.url()).await;
        assert_fails_at(&run, 4, "tls", Some(id));
        // The chain the server presented is shown even though it was refused.
        let tls = &step(&run, "tls")["details"];
        assert!(!tls["certificates"].as_array().unwrap().is_empty(), "{tls}");
        assert_eq!(tls["verdict"], "verify-full (default): failed");
        assert!(run.text.contains("certificate 0"), "{}", run.text);
        let _ = shows;
        if kind == CertKind::Expired {
            assert!(run.text.contains("EXPIRED"), "{}", run.text);
            assert!(tls["certificates"][0]["days_left"].as_i64().unwrap() < 0);
        }
    }
}

#[tokio::test]
async fn a_closed_port_fails_at_tcp() {
    let port = support::free_port();
    let run = doctor(&format!(
        "postgresql://neon:npg_x@127.0.0.1:{port}/neondb?sslmode=verify-full"
    ))
    .await;
    assert_fails_at(&run, 3, "tcp", Some("network-refused"));
    assert_eq!(
        step(&run, "tcp")["details"]["addresses"][0]["reachable"],
        false
    );
}

#[tokio::test]
async fn an_unresolvable_name_fails_at_dns() {
    let run = doctor("postgresql://neon:npg_x@no-such-host.invalid/neondb").await;
    assert_fails_at(&run, 2, "dns", None);
    assert_eq!(run.json["error"]["kind"], "dns");
    assert!(run
        .text
        .contains("could not resolve the host name \"no-such-host.invalid\""));
}

#[tokio::test]
async fn a_wrong_password_fails_at_authentication() {
    let s = PgServer::shared();
    let url = support::verified_url(s).replace(s.password(), "wrong-password");
    let run = doctor(&url).await;
    assert_fails_at(&run, 5, "authentication", Some("auth-password"));
    // TLS itself was fine.
    assert!(step(&run, "tls")["details"]["verdict"]
        .as_str()
        .unwrap()
        .starts_with("verify-full: chain and host name verified"));
}

#[tokio::test]
async fn a_missing_database_fails_at_the_query_step_after_the_login() {
    let s = PgServer::shared();
    let url = support::verified_url(s).replace(&format!("/{}?", s.dbname()), "/no_such_db?");
    let run = doctor(&url).await;
    assert_fails_at(&run, 6, "query", Some("database-missing"));
}

#[tokio::test]
async fn a_missing_unix_socket_fails_at_tcp() {
    let dir = std::env::temp_dir().join("neon-connect-doctor-no-socket");
    let run = doctor(&format!("host={} user=neon dbname=neondb", dir.display())).await;
    assert_fails_at(&run, 3, "tcp", Some("unix-socket-missing"));
}

#[tokio::test]
async fn neon_hosts_show_direct_tls_as_the_default() {
    // `hostaddr` keeps the check off the network: no DNS, a closed port on loopback.
    let run = doctor("postgresql://neon:npg_x@ep-cool-darkness-123456.us-east-2.aws.neon.tech:1/neondb?hostaddr=127.0.0.1").await;
    let settings = &step(&run, "connection_string")["details"]["settings"];
    assert_eq!(
        settings["sslnegotiation"]["value"],
        "direct (Neon hosts; the TLS request if a host does not speak it)",
        "{}",
        run.json
    );
}

#[tokio::test]
async fn a_bad_connection_string_fails_at_step_one() {
    let run = doctor("postgresql://neon:npg_x@localhost/neondb?sslmode=verify_full").await;
    assert_fails_at(&run, 1, "connection_string", None);
    assert_eq!(run.json["error"]["kind"], "connection string");
}

#[tokio::test]
async fn neon_endpoint_not_specified() {
    let proxy = FakeNeonProxy::start(Script::RequireSni {
        other: "unused".into(),
    })
    .await
    .unwrap();
    let url = format!(
        "postgresql://neon:npg_ProxySecret1@127.0.0.1:{}/neondb?sslmode=require",
        proxy.port()
    );
    let run = doctor(&url).await;
    assert_fails_at(
        &run,
        5,
        "authentication",
        Some("neon-endpoint-not-specified"),
    );
    // Step 1 saw it coming.
    let warnings = step(&run, "connection_string")["warnings"].to_string();
    assert!(
        warnings.contains("no server name (SNI) is sent"),
        "{warnings}"
    );
}

#[test]
fn bad_arguments_exit_2_and_help_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_neon-doctor"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --frobnicate"));
    let out = Command::new(env!("CARGO_BIN_EXE_neon-doctor"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("neon-doctor: checks"));
}

/// A TCP peer on 127.0.0.1 that answers every connection with `answer` (or nothing, keeping
/// it open) and never speaks PostgreSQL.
fn peer(answer: &'static [u8]) -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(answer);
            open.push(conn);
        }
    });
    port
}

#[tokio::test]
async fn a_web_server_on_the_port_is_named_as_not_postgres() {
    let port = peer(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let run = doctor(&format!("postgresql://neon:npg_x@localhost:{port}/neondb")).await;
    assert_fails_at(&run, 4, "tls", Some("not-postgres"));
    assert!(run.text.contains(&format!(
        "the server at \"localhost:{port}\" answered the TLS request with 'H', which no PostgreSQL server sends"
    )));
}

#[tokio::test]
async fn a_silent_peer_times_out_at_tls_once() {
    let port = peer(b"");
    let started = std::time::Instant::now();
    let run = doctor(&format!(
        "postgresql://neon:npg_x@localhost:{port}/neondb?connect_timeout=1"
    ))
    .await;
    assert_fails_at(&run, 4, "tls", Some("timeout-tls"));
    // connect_timeout=1 means 2 s (libpq's minimum). Two runs (text and JSON) of one wait
    // each: the inspection's timeout settles the step, with no second connection waiting
    // again (that would take 8 s).
    assert!(
        started.elapsed() < std::time::Duration::from_millis(6000),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_server_role_is_reported_and_no_matching_host_names_each_role() {
    trust_test_ca_as_system_store().expect("test CA bundle");
    let pair = neon_connect_testing::ReplicatedPair::start().expect("replicated pair");
    let ca = pair.primary().ca_file().display().to_string();
    let url = |base: String, attrs: &str| {
        format!("{base}?sslmode=verify-full&sslrootcert={ca}&target_session_attrs={attrs}")
    };
    let run = doctor(&url(pair.url(), "standby")).await;
    assert_eq!(run.code, 0, "{}", run.text);
    assert_eq!(step(&run, "query")["details"]["server_role"], "standby");
    let run = doctor(&url(pair.url_standby_first(), "primary")).await;
    assert_eq!(step(&run, "query")["details"]["server_role"], "primary");

    // Only the standby, twice, for a primary: the query step fails naming each host's role.
    let standby = pair.standby().port();
    let base = format!(
        "postgresql://neon:npg_TestSecret42@localhost:{standby},localhost:{standby}/neondb"
    );
    let run = doctor(&url(base, "primary")).await;
    assert_fails_at(&run, 6, "query", Some("target-session-attrs-unmatched"));
    assert!(
        run.text.contains(&format!(
            "localhost:{standby} is a standby, localhost:{standby} is a standby"
        )),
        "{}",
        run.text
    );
}
