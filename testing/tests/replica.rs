//! The replicated pair: a TLS-only primary, a streaming standby, failover.

use neon_connect_testing::ReplicatedPair;

#[test]
fn the_standby_streams_over_tls_and_can_be_promoted() {
    let pair = ReplicatedPair::start().expect("start the pair");
    let (primary, standby) = (pair.primary(), pair.standby());
    assert!(!ReplicatedPair::in_recovery(primary).unwrap());
    assert!(ReplicatedPair::in_recovery(standby).unwrap());
    // Replication runs over TLS, as the replication role.
    let sender = primary
        .psql("select r.usename, s.ssl from pg_stat_replication r join pg_stat_ssl s using (pid)")
        .unwrap();
    assert_eq!(sender, "replicator|t");

    primary
        .psql("create table t (x int); insert into t values (1), (2)")
        .unwrap();
    pair.wait_for_catch_up().unwrap();
    assert_eq!(standby.psql("select sum(x) from t").unwrap(), "3");
    let refused = standby.psql("insert into t values (3)").unwrap_err();
    assert!(
        refused.to_string().contains("read-only transaction"),
        "{refused}"
    );

    // libpq on the same pair: one string, both servers.
    let ca = primary.ca_file().display().to_string();
    let url = |attrs: &str| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={ca}&target_session_attrs={attrs}",
            pair.url_standby_first()
        )
    };
    let port = |attrs: &str| pair.libpq_psql(&url(attrs), "show port").unwrap();
    assert_eq!(port("read-write"), primary.port().to_string());
    assert_eq!(port("standby"), standby.port().to_string());
    pair.stop_primary().unwrap();
    pair.promote_standby().unwrap();
    assert!(!ReplicatedPair::in_recovery(standby).unwrap());
    standby.psql("insert into t values (3)").unwrap();
    assert_eq!(port("read-write"), standby.port().to_string());
}
