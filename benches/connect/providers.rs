//! ring against aws-lc-rs (`--features aws-lc-rs`): hand-wired, P-256 first, same server.

use crate::table::Table;
use crate::target::Target;
use std::time::Duration;

pub(crate) async fn provider_rows(table: &mut Table, rounds: usize, round: Duration, t: &Target) {
    #[cfg(feature = "aws-lc-rs")]
    {
        use crate::measure::{cpu_time, interleave, median, rate};
        use crate::target::{client_config, finish};
        use neon_connect::rustls;
        use neon_connect::tokio_postgres_rustls::MakeRustlsConnect;
        use std::sync::Arc;
        let mut ring = rustls::crypto::ring::default_provider();
        let mut aws = rustls::crypto::aws_lc_rs::default_provider();
        for p in [&mut ring, &mut aws] {
            p.kx_groups
                .sort_by_key(|g| g.name() != rustls::NamedGroup::secp256r1);
        }
        let configs = [
            MakeRustlsConnect::new((*client_config(&t.ca, Arc::new(ring))).clone()),
            MakeRustlsConnect::new((*client_config(&t.ca, Arc::new(aws))).clone()),
        ];
        let config = t.tokio_postgres();
        let cpu = std::sync::Mutex::new([Vec::new(), Vec::new()]);
        let rounds = interleave(rounds, 2, |v| {
            let (configs, config, cpu) = (&configs, &config, &cpu);
            async move {
                let before = cpu_time();
                let r = rate(round, || async {
                    let (client, conn) = config.connect(configs[v].clone()).await.expect("connect");
                    finish(client, conn).await;
                })
                .await;
                let per = (cpu_time() - before).as_secs_f64() * 1000.0 / (r * round.as_secs_f64());
                cpu.lock().unwrap()[v].push(per);
                r
            }
        })
        .await;
        table.rate_rows(
            "connections/s by crypto provider (hand-wired, P-256 first, connect + SELECT 1 + close)",
            &rounds,
            &[("ring", None), ("aws-lc-rs", None)],
        );
        let [mut a, mut b] = cpu.into_inner().unwrap();
        table.out.push_str(&format!(
            "client CPU per connection (this process): ring {:.2} ms, aws-lc-rs {:.2} ms\n\n",
            median(&mut a),
            median(&mut b)
        ));
    }
    #[cfg(not(feature = "aws-lc-rs"))]
    {
        let _ = (rounds, round, t);
        table.out.push_str(
            "crypto providers: run with `--features aws-lc-rs` for the ring vs aws-lc-rs row\n\n",
        );
    }
}
