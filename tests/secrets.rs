//! Passwords and Neon `npg_` secrets never appear in tracing output (TRACE level), `Debug`,
//! `Display`, errors or panic messages, for URL and key=value input, percent-encoded or not,
//! across successful connections and failures.

mod support;

use neon_connect::{ConnectionString, Options};
use neon_connect_testing::{PgServer, ServerOptions};
use std::time::Duration;

/// A password with characters that need percent-encoding in a URL and quoting in key=value.
const SECRET: &str = "npg_S3cr:t/@?x% 'q";

fn forms_of_the_secret() -> Vec<String> {
    let encoded = percent_encoding::utf8_percent_encode(SECRET, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    vec![
        SECRET.to_string(),
        encoded,
        "npg_S3cr".to_string(),
        "S3cr:t".to_string(),
    ]
}

fn assert_clean(what: &str, text: &str) {
    let forms = forms_of_the_secret();
    support::assert_no_secret(
        what,
        text,
        &forms.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

async fn try_connect(input: &str) -> Result<neon_connect::Pool, neon_connect::Error> {
    let cs = ConnectionString::parse(input)?;
    assert_clean("ConnectionString Display", &cs.to_string());
    assert_clean("ConnectionString Debug", &format!("{cs:?} {cs:#?}"));
    assert_clean("redacted()", &cs.redacted());
    let options = Options::from_connection_string(cs)
        .pool_size(1)
        .connect_attempts(2)
        .connect_timeout(Duration::from_secs(5));
    assert_clean("Options Debug", &format!("{options:?}"));
    options.connect().await
}

#[tokio::test]
async fn secrets_never_leak() {
    let buffer = support::LogCapture::default();
    let _guard = buffer.install(tracing::Level::TRACE);

    let server = PgServer::start(ServerOptions::default().password(SECRET)).unwrap();
    let ca = server.ca_file().display().to_string();
    let port = server.port();
    let url = format!("{}?sslrootcert={ca}", server.url());
    assert!(
        url.contains(&forms_of_the_secret()[1]) || url.contains("%"),
        "the URL form is percent-encoded: {url}"
    );
    let quoted = SECRET.replace('\\', "\\\\").replace('\'', "\\'");
    let kv = format!(
        "host=localhost port={port} user=neon dbname=neondb sslrootcert={ca} password='{quoted}'"
    );

    // Successful connections.
    for input in [&url, &kv] {
        let pool = try_connect(input).await.expect("connect");
        let client = pool.get().await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        assert_clean("Pool Debug", &format!("{pool:?} {:?}", pool.info()));
        assert_clean("Client Debug", &format!("{client:?}"));
    }

    // Failures: a wrong password, a closed port, a parse error after the password.
    // The secret followed by one more character: wrong, and still containing the secret.
    let wrong_password = kv.replace(
        &format!("password='{quoted}'"),
        &format!("password='{quoted}X'"),
    );
    assert_ne!(wrong_password, kv);
    let closed = kv.replace(&format!("port={port}"), "port=1");
    let bad_parse = format!("{kv} sslmode=bogus");
    let bad_url = format!("{url}&sslmode=bogus");
    for input in [&closed, &bad_parse, &bad_url] {
        let err = try_connect(input).await.expect_err("must fail");
        assert_clean("Error Display", &format!("{err} {err:#} {}", err.report()));
        assert_clean("Error Debug", &format!("{err:?} {err:#?}"));
        // What `unwrap()` would print in a panic.
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::hint::black_box(Err::<(), _>(err)).unwrap()
        }))
        .unwrap_err();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(!message.is_empty());
        assert_clean("panic message", &message);
    }
    let err = try_connect(&wrong_password)
        .await
        .expect_err("wrong password");
    assert_clean("Error Display", &format!("{err:#} {err:?}"));

    let logs = buffer.text();
    assert!(logs.contains("neon_connect"), "tracing captured: {logs}");
    assert_clean("tracing output", &logs);
}
