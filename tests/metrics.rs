//! The pool's metrics (feature `metrics`) move as connections are opened, fail, are retired,
//! checked out and returned: recorded with metrics-util's `DebuggingRecorder` against the real
//! TLS test server.

mod support;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use neon_connect::metric_names as names;
use neon_connect::Options;
use std::collections::HashMap;
use std::time::Duration;
use support::{shared_server, verified_url};

/// `name{label=value}` → value. Counters and gauges are reset by each snapshot.
fn snapshot(s: &Snapshotter) -> HashMap<String, DebugValue> {
    s.snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = if labels.is_empty() {
                key.name().to_string()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            (name, value)
        })
        .collect()
}

fn counter(m: &HashMap<String, DebugValue>, name: &str) -> u64 {
    match m.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name} is {other:?}"),
    }
}

fn gauge(m: &HashMap<String, DebugValue>, name: &str) -> f64 {
    match m.get(name) {
        Some(DebugValue::Gauge(v)) => v.0,
        other => panic!("{name} is {other:?} in {m:?}"),
    }
}

#[tokio::test]
async fn pool_metrics_move_with_the_pool() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let pool = Options::new(&verified_url(shared_server()))
        .unwrap()
        .pool_size(2)
        .max_lifetime(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let m = snapshot(&snapshotter);
    assert_eq!(counter(&m, names::OPENED), 2, "{m:?}");
    assert_eq!(gauge(&m, names::IN_USE), 2.0, "{m:?}");
    assert_eq!(gauge(&m, names::IDLE), 0.0, "{m:?}");
    assert_eq!(gauge(&m, names::WAITING), 0.0, "{m:?}");
    match m.get(names::CHECKOUT_WAIT) {
        // connect()'s own checkout, then a and b.
        Some(DebugValue::Histogram(v)) => assert_eq!(v.len(), 3, "{m:?}"),
        other => panic!("no checkout histogram: {other:?}"),
    }

    drop(a);
    drop(b);
    let m = snapshot(&snapshotter);
    // In use and idle are set from the pool's own counts, not stepped.
    assert_eq!(gauge(&m, names::IN_USE), 0.0, "{m:?}");
    assert_eq!(gauge(&m, names::IDLE), 2.0, "{m:?}");

    // Past max_lifetime both idle connections are retired at the next checkout, and a new one
    // is opened.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = pool.get().await.unwrap();
    drop(c);

    // A connection that cannot be opened, labelled with its diagnosis.
    let url = format!(
        "postgresql://app:pw@127.0.0.1:{}/app?sslrootcert={}",
        support::free_port(),
        shared_server().ca_file().display()
    );
    let lazy = Options::new(&url)
        .unwrap()
        .connect_attempts(1)
        .connect_lazy()
        .unwrap();
    assert!(lazy.ping().await.is_err());

    let m = snapshot(&snapshotter);
    assert_eq!(
        counter(&m, &format!("{}{{reason=max_lifetime}}", names::RETIRED)),
        2,
        "{m:?}"
    );
    assert_eq!(counter(&m, names::OPENED), 1, "{m:?}");
    assert_eq!(
        counter(
            &m,
            &format!("{}{{diagnosis=network-refused}}", names::FAILED)
        ),
        1,
        "{m:?}"
    );
}
