//! libpq as a peer: `pgbench` 18 with the same `verify-full` settings and a `SELECT 1` script.

use neon_connect_testing::ServerOptions;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub(crate) fn pgbench_rate(
    pgbench: &Path,
    conninfo: &str,
    script: &Path,
    args: &[&str],
    dur: Duration,
) -> f64 {
    let secs = dur.as_secs().max(1).to_string();
    let out = pgbench_run(pgbench, conninfo, script, &[args, &["-T", &secs]].concat());
    field(&out, "tps = ").unwrap_or(f64::NAN)
}

/// pgbench's "average connection time" over `n` transactions with `-C`.
pub(crate) fn pgbench_connect_ms(
    pgbench: &Path,
    conninfo: &str,
    script: &Path,
    n: usize,
) -> Option<f64> {
    let out = pgbench_run(
        pgbench,
        conninfo,
        script,
        &["-C", "-c", "1", "-t", &n.to_string()],
    );
    field(&out, "average connection time = ")
}

pub(crate) fn pgbench_run(pgbench: &Path, conninfo: &str, script: &Path, args: &[&str]) -> String {
    let password = conninfo_password();
    let out = Command::new(pgbench)
        .args(["-n", "-f"])
        .arg(script)
        .args(args)
        .arg(conninfo)
        .env("PGPASSWORD", password)
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            eprintln!(
                "pgbench failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            String::new()
        }
        Err(e) => {
            eprintln!("pgbench did not run: {e}");
            String::new()
        }
    }
}

pub(crate) fn conninfo_password() -> String {
    ServerOptions::default().password
}

pub(crate) fn field(text: &str, key: &str) -> Option<f64> {
    let at = text.find(key)? + key.len();
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
}
