//! sqlx 0.8 as a peer (what most users would pick instead), in a process of its own: the
//! `neon-connect-sqlx-peer` binary of `benches/sqlx-peer`, built here with cargo and run once
//! per round, as `pgbench` is. sqlx is not a dependency of this benchmark because cargo would
//! unify its features into this binary: it turns on `tracing`'s `log` feature, and every
//! neon-connect span and event measured here would pay for the `log` bridge, which
//! neon-connect's users without sqlx never pay. The peer uses its own connection options,
//! `verify-full` against the same CA, ring through its `tls-rustls` feature; its figures are
//! measured inside it with this benchmark's `measure.rs`.

use crate::target::Target;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const PACKAGE: &str = "neon-connect-sqlx-peer";

/// The built peer, or `None` (its rows then show NaN) when cargo could not build it.
pub(crate) struct SqlxPeer {
    exe: Option<PathBuf>,
}

impl SqlxPeer {
    /// Builds the peer in release mode with the cargo that runs this benchmark (a no-op when
    /// it is up to date), into the same target directory.
    pub(crate) fn build() -> SqlxPeer {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!("building the sqlx peer (cargo build --release -p {PACKAGE})...");
        let mut build = Command::new(&cargo);
        // Without the variables cargo set for this run (CARGO_PKG_NAME=neon-connect, ...):
        // build scripts that watch them (ring's) would otherwise run again, and what they
        // build be rebuilt, whenever the peer is built here after a plain `cargo build`.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&&*name)
            {
                build.env_remove(&*name);
            }
        }
        let out = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--release", "-p", PACKAGE])
            .arg("--message-format=json-render-diagnostics")
            .stderr(Stdio::inherit())
            .output();
        let exe = match out {
            Ok(o) if o.status.success() => {
                let exe = String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|m| m["reason"] == "compiler-artifact")
                    .filter(|m| m["target"]["name"] == PACKAGE)
                    .find_map(|m| m["executable"].as_str().map(PathBuf::from));
                if exe.is_none() {
                    eprintln!("sqlx rows skipped: cargo built {PACKAGE} but named no executable");
                }
                exe
            }
            Ok(o) => {
                eprintln!(
                    "sqlx rows skipped: `cargo build --release -p {PACKAGE}` failed ({}); \
                     the errors are above",
                    o.status
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "sqlx rows skipped: could not run cargo ({cargo:?}) to build {PACKAGE}: {e}"
                );
                None
            }
        };
        SqlxPeer { exe }
    }

    /// No peer, for a run without the sections that use it.
    pub(crate) fn not_built() -> SqlxPeer {
        SqlxPeer { exe: None }
    }

    /// Connect + prepared `SELECT 1` + close, back to back for `round`: connections/s and the
    /// peer's CPU per connection in ms.
    pub(crate) fn connect_rate(&self, t: &Target, round: Duration) -> (f64, f64) {
        match self.run("connect-rate", &[round.as_secs_f64().to_string()], t)[..] {
            [rate, cpu_ms] => (rate, cpu_ms),
            _ => (f64::NAN, f64::NAN),
        }
    }

    /// Queries/s of pooled prepared `SELECT 1`s by `tasks` tasks on a `PgPool` of `size`
    /// connections (opened before the round).
    pub(crate) fn pooled(&self, t: &Target, round: Duration, tasks: usize, size: usize) -> f64 {
        let args = [
            round.as_secs_f64().to_string(),
            tasks.to_string(),
            size.to_string(),
        ];
        match self.run("pooled", &args, t)[..] {
            [q] => q,
            _ => f64::NAN,
        }
    }

    /// The median connect time in ms of `n` connections, each then running a simple-protocol
    /// `SELECT 1` and closing (as [`crate::measure::connect_times`]).
    pub(crate) fn connect_ms(&self, t: &Target, n: usize) -> Option<f64> {
        match self.run("connect-times", &[n.to_string()], t)[..] {
            [ms] => Some(ms),
            _ => None,
        }
    }

    /// VmRSS and live heap in KiB of a fresh peer process with a `PgPool` of `n` idle
    /// connections, all opened.
    pub(crate) fn idle_memory(&self, t: &Target, n: usize) -> Option<(f64, f64)> {
        match self.run("idle-memory", &[n.to_string()], t)[..] {
            [rss, heap] => Some((rss, heap)),
            _ => None,
        }
    }

    /// Runs one peer command against `t` and returns the numbers it printed (none when it
    /// failed, after printing why).
    fn run(&self, command: &str, args: &[String], t: &Target) -> Vec<f64> {
        let Some(exe) = &self.exe else {
            return Vec::new();
        };
        let out = Command::new(exe)
            .arg(command)
            .args(args)
            .args([
                "localhost",
                &t.port.to_string(),
                &t.user,
                &t.password,
                &t.dbname,
            ])
            .arg(&t.ca)
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect(),
            Ok(o) => {
                eprintln!(
                    "sqlx peer {command} failed: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                Vec::new()
            }
            Err(e) => {
                eprintln!("sqlx peer {command} did not run: {e}");
                Vec::new()
            }
        }
    }
}
