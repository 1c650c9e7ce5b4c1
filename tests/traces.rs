//! The checkout and connect spans carry OpenTelemetry's database attributes, never the
//! password. Alone in its binary: a thread's log capture must not race other tests' use of
//! the same span callsites (tracing caches their interest per process).

mod support;

use neon_connect::Options;
use support::{shared_server, verified_url};

#[tokio::test]
async fn checkout_and_connect_spans_carry_opentelemetry_database_attributes() {
    let log = support::LogCapture::default();
    let _guard = log.install(tracing::Level::DEBUG);
    let server = shared_server();
    let pool = Options::new(&verified_url(server))
        .unwrap()
        .connect()
        .await
        .unwrap();
    drop(pool.get().await.unwrap());
    let text = log.text();
    let attributes = format!(
        "db.system.name=\"postgresql\" server.address={} server.port={} db.namespace={}",
        server.host(),
        server.port(),
        server.dbname()
    );
    assert!(
        text.contains(&format!("checkout{{{attributes}}}")),
        "{attributes} on the checkout span:\n{text}"
    );
    assert!(
        text.contains(&format!("connect{{{attributes} attempt=1")),
        "{attributes} on the connect span:\n{text}"
    );
    // The connect span is inside the checkout span that opened the connection.
    assert!(text.contains("}:connect{"), "{text}");
    support::assert_no_secret("the trace", &text, &[server.password()]);
}
