//! `--startup N`: process start to first query, in fresh processes.

use crate::measure::median;
use crate::relay::Relay;
use crate::target::{client_config, default_provider, Target};
use neon_connect::tokio_postgres::{self, config::SslMode};
use neon_connect::tokio_postgres_rustls::MakeRustlsConnect;
use neon_connect_testing::{PgServer, ServerOptions};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// `--startup N [BASELINE]`: process start to first query, `N` fresh processes per variant
/// (interleaved), against one local PostgreSQL 15 server: `neon_connect(url)` with the CA
/// file, the same with the system store (`sslrootcert=system`, `SSL_CERT_FILE` = the system
/// bundle plus the test CA), and hand-wired tokio-postgres-rustls with the CA file. Each child
/// times from the start of its `main` to the first query's answer (so exec and dynamic
/// loading are not counted). `BASELINE`, another build of this benchmark (a copy of the
/// executable from before a change), runs the same children interleaved with this one's, so
/// a before/after comparison shares the machine's load. With `NEON_CONNECT_BENCH_STARTUP_RELAY=1`
/// the children connect through the relay of section 3 (10 ms round trip), as to a server
/// that is not on the same machine.
pub(crate) fn startup(args: &[String]) {
    let n: usize = args.first().map_or(20, |n| n.parse().expect("N"));
    let server = PgServer::start(ServerOptions::default()).expect("PostgreSQL server");
    let direct = Target::of(&server);
    let relayed = std::env::var_os("NEON_CONNECT_BENCH_STARTUP_RELAY").is_some();
    let runtime = crate::measure::runtime(1);
    let relay = relayed.then(|| runtime.block_on(Relay::start(direct.port)));
    let t = match &relay {
        Some(relay) => direct.via(relay.port),
        None => direct,
    };
    let bundle = std::env::temp_dir().join("neon-connect-bench-system-plus-test-ca.pem");
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    let ca = std::fs::read_to_string(&t.ca).expect("CA");
    std::fs::write(&bundle, format!("{system}\n{ca}")).expect("bundle");
    let mut exes = vec![("", std::env::current_exe().expect("exe"))];
    if let Some(baseline) = args.get(1) {
        exes.push(("baseline: ", baseline.into()));
    }
    let variants: Vec<(&str, &Path, &str)> = exes
        .iter()
        .flat_map(|(tag, exe)| ["ours", "ours-system", "hand"].map(|v| (*tag, exe.as_path(), v)))
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..n {
        for i in 0..variants.len() {
            let v = (round + i) % variants.len();
            let (_, exe, variant) = variants[v];
            let out = Command::new(exe)
                .args([
                    "--startup-child",
                    variant,
                    &t.url,
                    &t.ca.display().to_string(),
                ])
                .env("SSL_CERT_FILE", &bundle)
                .output()
                .expect("child");
            let text = String::from_utf8_lossy(&out.stdout);
            let ms: f64 = text.trim().parse().unwrap_or_else(|_| {
                panic!("{variant}: {text} {}", String::from_utf8_lossy(&out.stderr))
            });
            times[v].push(ms);
        }
    }
    let system_roots = system.matches("BEGIN CERTIFICATE").count();
    drop(relay);
    println!(
        "process start (main) to first query, median of {n} fresh processes{}:",
        if relayed {
            ", through a relay adding 5 ms each way"
        } else {
            ""
        }
    );
    for ((tag, _, name), t) in variants.iter().zip(times.iter_mut()) {
        let label = match *name {
            "ours" => "neon_connect(url), sslrootcert=<CA file>".to_string(),
            "ours-system" => format!(
                "neon_connect(url), sslrootcert=system ({system_roots} system roots + the test CA)"
            ),
            _ => "hand-wired tokio-postgres-rustls, CA file".to_string(),
        };
        println!("  {:<82} {:6.2} ms", format!("{tag}{label}"), median(t));
    }
    let _ = std::fs::remove_file(&bundle);
}

pub(crate) fn startup_child(args: &[String]) {
    let started = Instant::now();
    let [what, url, ca] = args else {
        panic!("--startup-child ours|ours-system|hand URL CA")
    };
    let runtime = crate::measure::runtime(2);
    runtime.block_on(async {
        match what.as_str() {
            "hand" => {
                let mut config: tokio_postgres::Config =
                    url.split('?').next().expect("url").parse().expect("config");
                config.ssl_mode(SslMode::Require);
                let tls = MakeRustlsConnect::new(
                    (*client_config(Path::new(ca), default_provider())).clone(),
                );
                let (client, connection) = config.connect(tls).await.expect("connect");
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await.expect("query");
            }
            ours => {
                let url = if ours == "ours-system" {
                    let (base, _) = url.split_once('?').expect("url");
                    format!("{base}?sslmode=verify-full&sslrootcert=system")
                } else {
                    url.clone()
                };
                let pool = neon_connect::neon_connect(&url).await.expect("pool");
                let client = pool.get().await.expect("get");
                client.simple_query("SELECT 1").await.expect("query");
            }
        }
    });
    println!("{:.3}", started.elapsed().as_secs_f64() * 1000.0);
}
