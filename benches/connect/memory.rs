//! Memory per idle pooled connection, each figure from a fresh process: the benchmark runs
//! itself (`--memory-child`) with a pool of N connections, all checked out once (so all are
//! open) and returned idle, and reads its own VmRSS and live heap; sqlx: the same from the
//! sqlx peer's process (`idle-memory N`). libpq: the `pgbench` process holding N idle
//! connections.

use crate::libpq::conninfo_password;
use crate::measure::{count_heap, live_heap_kib, rss_kib};
use crate::sqlx_peer::SqlxPeer;
use crate::table::Table;
use crate::target::{raw_deadpool, Target};
use neon_connect::Options;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Pool sizes measured.
const SIZES: [usize; 4] = [1, 4, 16, 64];
/// Fresh processes per client and size (the median is used).
const REPEATS: usize = 3;

const CLIENTS: [(&str, &str); 3] = [
    ("ours", "neon-connect Pool"),
    ("raw", "raw deadpool-postgres + tokio-postgres-rustls"),
    ("sqlx", "sqlx 0.8 PgPool"),
];

pub(crate) fn memory_rows(table: &mut Table, t: &Target, pgbench: &Path, sqlx: &SqlxPeer) {
    let exe = std::env::current_exe().expect("exe");
    // (rss KiB, heap KiB) per client and size, medians of REPEATS fresh processes.
    let mut rows: Vec<Vec<(f64, f64)>> = Vec::new();
    for (kind, _) in CLIENTS {
        let mut per_size = Vec::new();
        for n in SIZES {
            let mut rss = Vec::new();
            let mut heap = Vec::new();
            for _ in 0..REPEATS {
                let figures = if kind == "sqlx" {
                    sqlx.idle_memory(t, n)
                } else {
                    memory_child_run(&exe, kind, n, t)
                };
                if let Some((r, h)) = figures {
                    rss.push(r);
                    heap.push(h);
                }
            }
            per_size.push((
                crate::measure::median(&mut rss),
                crate::measure::median(&mut heap),
            ));
        }
        rows.push(per_size);
    }
    let libpq: Vec<f64> = SIZES
        .iter()
        .map(|&n| pgbench_rss(t, pgbench, n).unwrap_or(f64::NAN))
        .collect();

    table.out.push_str(
        "### memory per idle connection (fresh process per figure; RSS at pool sizes 1, 4, 16, 64)\n\n\
         | client | RSS 1 | RSS 4 | RSS 16 | RSS 64 | RSS per connection (fit) | live heap per connection (fit) |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for ((_, name), per_size) in CLIENTS.iter().zip(&rows) {
        let rss: Vec<f64> = per_size.iter().map(|p| p.0).collect();
        let heap: Vec<f64> = per_size.iter().map(|p| p.1).collect();
        table.out.push_str(&format!(
            "| {name} | {} | {:.1} KiB | {:.1} KiB |\n",
            kib_cells(&rss),
            slope(&rss),
            slope(&heap)
        ));
    }
    table.out.push_str(&format!(
        "| libpq (pgbench process, -c N) | {} | {:.1} KiB | |\n\n",
        kib_cells(&libpq),
        slope(&libpq)
    ));
}

/// One fresh `--memory-child` process: its VmRSS and live heap in KiB.
fn memory_child_run(exe: &Path, kind: &str, n: usize, t: &Target) -> Option<(f64, f64)> {
    let out = Command::new(exe)
        .arg("--memory-child")
        .arg(kind)
        .arg(n.to_string())
        .args(t.to_args())
        .output()
        .expect("memory child");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>());
    match (f.next(), f.next()) {
        (Some(Ok(r)), Some(Ok(h))) => Some((r, h)),
        _ => {
            eprintln!(
                "memory child {kind} {n} failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
    }
}

fn kib_cells(v: &[f64]) -> String {
    v.iter()
        .map(|k| format!("{:.1} MiB", k / 1024.0))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Least-squares slope of `v` against [`SIZES`]: KiB per connection.
fn slope(v: &[f64]) -> f64 {
    let xs: Vec<f64> = SIZES.iter().map(|&n| n as f64).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, v.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(v).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    num / den
}

/// VmRSS of a `pgbench` process holding `clients` idle connections (a script that sleeps).
fn pgbench_rss(t: &Target, pgbench: &Path, clients: usize) -> Option<f64> {
    let sleep = std::env::temp_dir().join("neon-connect-bench-sleep.sql");
    std::fs::write(&sleep, "SELECT 1;\n\\sleep 4 s\n").ok()?;
    let mut child = Command::new(pgbench)
        .args(["-n", "-f"])
        .arg(&sleep)
        .args(["-c", &clients.to_string(), "-j", "1", "-t", "1"])
        .arg(t.libpq(""))
        .env("PGPASSWORD", conninfo_password())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(2500));
    let rss = rss_kib(&child.id().to_string());
    let _ = child.wait();
    let _ = std::fs::remove_file(&sleep);
    rss
}

/// `--memory-child ours|raw N <target>`: prints "VmRSS-KiB live-heap-KiB" with a pool of
/// `N` idle connections open.
pub(crate) fn memory_child(args: &[String]) {
    count_heap();
    let (kind, n) = match args {
        [kind, n, ..] => (kind.as_str(), n.parse::<usize>().expect("N")),
        _ => panic!("usage: --memory-child ours|raw N <target>"),
    };
    let t = Target::from_args(&args[2..]);
    let runtime = crate::measure::runtime(2);
    runtime.block_on(async {
        let settle = || tokio::time::sleep(Duration::from_millis(200));
        let measure = || {
            let rss = rss_kib("self").unwrap_or(f64::NAN);
            let heap = live_heap_kib();
            println!("{rss} {heap}");
        };
        // Every connection opened (all checked out at once, each runs a query), then idle.
        macro_rules! fill {
            ($pool:expr) => {{
                let pool = $pool;
                let mut held = Vec::new();
                for _ in 0..n {
                    held.push(pool.get().await.expect("get"));
                }
                for c in &held {
                    c.query_one("SELECT 1", &[]).await.expect("query");
                }
                drop(held);
                settle().await;
                measure();
            }};
        }
        match kind {
            "ours" => fill!(Options::new(&t.url)
                .expect("options")
                .pool_size(n)
                .connect()
                .await
                .expect("pool")),
            "raw" => fill!(raw_deadpool(&t, n)),
            other => panic!("unknown client {other}: ours or raw"),
        }
    });
}
