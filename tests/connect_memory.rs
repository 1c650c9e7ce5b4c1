//! Bounded memory against a hostile server during the connect phase: a scripted peer behind a
//! trusted certificate floods the login, and the process's peak resident memory (VmHWM) must
//! stay far below what it sends. Its own test binary, so that the peak is this test's alone.

mod support;

use neon_connect::{ConnectionString, Diagnosis, Options, Step};
use neon_connect_testing::hostile::{Flood, OversizedLogin};
use neon_connect_testing::TestCa;
use std::time::Duration;

/// The process's peak resident set size, in MiB (Linux).
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

async fn connect(port: u16, ca: &std::path::Path) -> neon_connect::Error {
    let url = format!(
        "postgresql://neon:npg_TestSecret42@localhost:{port}/neondb?sslrootcert={}",
        ca.display()
    );
    Options::from_connection_string(ConnectionString::parse(&url).unwrap())
        .pool_size(1)
        .connect_attempts(1)
        .connect_timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect_err("the flood must be refused")
}

#[tokio::test]
async fn a_flooding_server_is_cut_off_before_it_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, TestCa::shared().cert_pem()).unwrap();
    let baseline = peak_mib();
    let mut report = vec![format!("baseline peak {baseline:.1} MiB")];
    for (flood, step) in [
        (Flood::Error(100 << 20), Step::Authentication),
        (Flood::Announce(2_000_000_000), Step::Authentication),
        (Flood::Parameters(1600), Step::Startup), // 100 MiB of ParameterStatus after AuthenticationOk
    ] {
        let peer = OversizedLogin::start(flood).await.unwrap();
        let err = connect(peer.port(), &ca).await;
        support::assert_diagnosis(&err, Diagnosis::ServerMessageTooLarge);
        assert_eq!(err.step(), Some(step), "{flood:?}: {err:#}");
        let text = err.to_string();
        assert!(
            text.contains("past the 4 MiB the connect phase may read"),
            "{text}"
        );
        // Let the peer notice the client is gone.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let peak = peak_mib();
        report.push(format!(
            "{flood:?}: peer wrote {:.1} MiB, peak {peak:.1} MiB; {text}",
            peer.bytes_sent() as f64 / (1 << 20) as f64
        ));
        // Before the limit: 211 MB for Error(100 MiB), 1.06 GB for Announce(2 GB).
        assert!(
            peak - baseline < 32.0,
            "{flood:?}: peak {peak:.1} MiB over a baseline of {baseline:.1} MiB\n{}",
            report.join("\n")
        );
    }
    println!("{}", report.join("\n"));
}
