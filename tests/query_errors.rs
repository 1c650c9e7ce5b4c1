//! Errors after the connect: every statement failure a pooled client can return, provoked on a
//! real PostgreSQL server and read through `?` into the crate's `Error`, as a handler would.
//! Each must be one line with the SQLSTATE and its name, classified, with the server's error
//! still reachable through `as_db_error()`.

mod support;

use neon_connect::{Diagnosis, Error, ErrorKind, Options, Pool, Step};
use neon_connect_testing::{trust_test_ca_as_system_store, PgServer};
use std::time::Duration;

/// A pool on the shared server (one per test: each test has its own runtime, which owns the
/// connections' tasks), with the tables the tests need created once.
async fn pool() -> Pool {
    static SCHEMA: std::sync::Once = std::sync::Once::new();
    trust_test_ca_as_system_store().expect("test CA bundle");
    let server = PgServer::shared();
    SCHEMA.call_once(|| {
        server
            .psql(
                "DROP TABLE IF EXISTS qe_users; \
                 CREATE TABLE qe_users (id int PRIMARY KEY, email text NOT NULL UNIQUE); \
                 INSERT INTO qe_users VALUES (1, 'a@example.com'); \
                 DROP TABLE IF EXISTS qe_accounts; \
                 CREATE TABLE qe_accounts (id int PRIMARY KEY, n int NOT NULL); \
                 INSERT INTO qe_accounts VALUES (1, 0), (2, 0); \
                 DROP ROLE IF EXISTS qe_reader; CREATE ROLE qe_reader;",
            )
            .expect("schema");
    });
    Options::new(&server.url())
        .expect("url")
        .pool_size(2)
        .connect()
        .await
        .expect("pool")
}

/// What a handler does: `?` on a tokio-postgres call inside a function returning the crate's
/// `Error`.
async fn run(sql: &str) -> Result<u64, Error> {
    let client = pool().await.get().await?;
    let n = client.execute(sql, &[]).await?;
    Ok(n)
}

/// The error of `sql`, after the checks every query error must pass.
async fn fails(sql: &str) -> Error {
    let err = run(sql).await.expect_err(sql);
    let line = err.to_string();
    assert!(!line.contains('\n'), "not one line: {line}");
    assert!(line.contains("; help: "), "no fix: {line}");
    assert_eq!(err.step(), Some(Step::Query), "{line}");
    assert!(!line.contains("db error"), "{line}");
    assert!(
        !format!("{err:?} {err:#}").contains("TestSecret"),
        "{err:#}"
    );
    err
}

#[tokio::test]
async fn a_unique_violation_names_the_constraint_and_the_row() {
    let err = fails("INSERT INTO qe_users VALUES (2, 'a@example.com')").await;
    support::assert_diagnosis(&err, Diagnosis::QueryConstraintViolation);
    assert_eq!(err.kind(), ErrorKind::Query);
    assert!(!err.is_retryable());
    let line = err.to_string();
    assert!(
        line.starts_with("duplicate key value violates unique constraint \"qe_users_email_key\" (SQLSTATE 23505 unique_violation); detail: Key (email)=(a@example.com) already exists.; "),
        "{line}"
    );
    assert!(line.contains("constraint \"qe_users_email_key\""), "{line}");
    assert!(line.contains("table \"public\".\"qe_users\""), "{line}");
    let db = err.as_db_error().expect("the server's error is reachable");
    assert_eq!(db.code().code(), "23505");
    assert_eq!(db.constraint(), Some("qe_users_email_key"));
}

#[tokio::test]
async fn a_not_null_violation_names_the_column() {
    let err = fails("INSERT INTO qe_users VALUES (3, NULL)").await;
    support::assert_diagnosis(&err, Diagnosis::QueryConstraintViolation);
    let line = err.to_string();
    assert!(
        line.contains("(SQLSTATE 23502 not_null_violation)"),
        "{line}"
    );
    assert!(line.contains("column \"email\""), "{line}");
}

#[tokio::test]
async fn a_syntax_error_says_where() {
    let err = fails("SELECT id FORM qe_users").await;
    support::assert_diagnosis(&err, Diagnosis::QuerySyntax);
    let line = err.to_string();
    assert!(
        line.starts_with("syntax error at or near \"qe_users\" (SQLSTATE 42601 syntax_error); at character 16 of the statement; help: fix the SQL"),
        "{line}"
    );
}

#[tokio::test]
async fn undefined_tables_and_columns() {
    let err = fails("SELECT * FROM qe_userz").await;
    support::assert_diagnosis(&err, Diagnosis::QueryUndefinedObject);
    assert!(err
        .to_string()
        .starts_with("relation \"qe_userz\" does not exist (SQLSTATE 42P01 undefined_table)"));
    let err = fails("SELECT nope FROM qe_users").await;
    support::assert_diagnosis(&err, Diagnosis::QueryUndefinedObject);
    assert!(err
        .to_string()
        .contains("(SQLSTATE 42703 undefined_column)"));
}

#[tokio::test]
async fn permission_denied() {
    let client = pool().await.get().await.unwrap();
    let result: Result<(), Error> = async {
        client
            .batch_execute("BEGIN; SET LOCAL ROLE qe_reader")
            .await?;
        let r = client.query("SELECT * FROM qe_users", &[]).await;
        client.batch_execute("ROLLBACK").await?;
        r?;
        Ok(())
    }
    .await;
    let err = result.expect_err("qe_reader may not read qe_users");
    support::assert_diagnosis(&err, Diagnosis::QueryPermissionDenied);
    assert!(
        err.to_string()
            .starts_with("permission denied for table qe_users (SQLSTATE 42501 insufficient_privilege); help: grant"),
        "{err}"
    );
}

#[tokio::test]
async fn a_statement_timeout_is_a_timeout_and_not_retried() {
    let client = pool().await.get().await.unwrap();
    let result: Result<(), Error> = async {
        client
            .batch_execute("BEGIN; SET LOCAL statement_timeout = 50")
            .await?;
        let r = client.execute("SELECT pg_sleep(2)", &[]).await;
        client.batch_execute("ROLLBACK").await?;
        r?;
        Ok(())
    }
    .await;
    let err = result.expect_err("the statement times out");
    support::assert_diagnosis(&err, Diagnosis::QueryStatementTimeout);
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(!err.is_retryable());
    assert!(
        err.to_string().starts_with(
            "canceling statement due to statement timeout (SQLSTATE 57014 query_canceled); help: make the statement faster"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_canceled_statement_says_so() {
    let pool = &pool().await;
    let client = pool.get().await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let other = pool.get().await.unwrap();
    let cancel = async {
        // Cancel once the statement is running.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let row = other
                .query_one(
                    "SELECT pg_cancel_backend($1) AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND query LIKE 'SELECT pg_sleep%')",
                    &[&pid],
                )
                .await
                .unwrap();
            if row.get::<_, bool>(0) {
                return;
            }
        }
        panic!("the statement never ran");
    };
    let sleep = async { client.execute("SELECT pg_sleep(10)", &[]).await };
    let (result, ()) = tokio::join!(sleep, cancel);
    let err = Error::from(result.expect_err("canceled"));
    support::assert_diagnosis(&err, Diagnosis::QueryCanceled);
    assert!(err
        .to_string()
        .starts_with("canceling statement due to user request (SQLSTATE 57014 query_canceled)"));
}

#[tokio::test]
async fn serialization_failures_and_deadlocks_say_retry_the_transaction() {
    // Both provoked for real, on rows of their own, by two sessions of one pool.
    let pool = pool().await;
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let bump = |id: i32| format!("UPDATE qe_accounts SET n = n + 1 WHERE id = {id}");

    // A REPEATABLE READ transaction updates a row another session changed after its snapshot.
    a.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT n FROM qe_accounts WHERE id = 1",
    )
    .await
    .unwrap();
    b.batch_execute(&bump(1)).await.unwrap();
    let serialization = Error::from(a.batch_execute(&bump(1)).await.expect_err("40001"));
    a.batch_execute("ROLLBACK").await.unwrap();

    // Each session holds one row and asks for the other's: the server aborts one of them.
    for (client, id) in [(&a, 1), (&b, 2)] {
        let lock = format!("BEGIN; SET LOCAL deadlock_timeout = '20ms'; {}", bump(id));
        client.batch_execute(&lock).await.unwrap();
    }
    let (a_wants, b_wants) = (bump(2), bump(1));
    let (ra, rb) = tokio::join!(a.batch_execute(&a_wants), b.batch_execute(&b_wants));
    let deadlock = match (ra, rb) {
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Error::from(e),
        other => panic!("one of the two must be aborted: {other:?}"),
    };
    a.batch_execute("ROLLBACK").await.unwrap();
    b.batch_execute("ROLLBACK").await.unwrap();

    for (err, code, d, name) in [
        (
            serialization,
            "40001",
            Diagnosis::QuerySerializationFailure,
            "serialization_failure",
        ),
        (
            deadlock,
            "40P01",
            Diagnosis::QueryDeadlock,
            "deadlock_detected",
        ),
    ] {
        support::assert_diagnosis(&err, d);
        assert!(err.is_retryable(), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(err
            .to_string()
            .contains(&format!("(SQLSTATE {code} {name})")));
        assert!(err
            .help()
            .unwrap()
            .starts_with("retry the whole transaction"));
    }
}

#[tokio::test]
async fn a_write_on_a_read_only_session() {
    let client = pool().await.get().await.unwrap();
    let result: Result<(), Error> = async {
        client.batch_execute("BEGIN READ ONLY").await?;
        let r = client
            .execute("INSERT INTO qe_users VALUES (9, 'ro@example.com')", &[])
            .await;
        client.batch_execute("ROLLBACK").await?;
        r?;
        Ok(())
    }
    .await;
    let err = result.expect_err("read-only");
    support::assert_diagnosis(&err, Diagnosis::QueryReadOnly);
    assert!(err
        .to_string()
        .contains("(SQLSTATE 25006 read_only_sql_transaction)"));
}

#[tokio::test]
async fn bad_input_and_wrong_rust_types() {
    let err = fails("SELECT 'x'::int").await;
    support::assert_diagnosis(&err, Diagnosis::QueryDataError);
    assert!(err.to_string().starts_with(
        "invalid input syntax for type integer: \"x\" (SQLSTATE 22P02 invalid_text_representation)"
    ));

    let client = pool().await.get().await.unwrap();
    let read: Result<i32, Error> = async {
        let row = client.query_one("SELECT 1::int8", &[]).await?;
        Ok(row.try_get::<_, i32>(0)?)
    }
    .await;
    let err = read.expect_err("int8 is not i32");
    support::assert_diagnosis(&err, Diagnosis::QueryClientError);
    assert!(
        err.to_string()
            .starts_with("the query failed: error deserializing column 0: cannot convert between the Rust type `i32` and the Postgres type `int8`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_connection_killed_under_a_client_is_lost_and_retryable() {
    let pool = &pool().await;
    let client = pool.get().await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let other = pool.get().await.unwrap();
    other
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err: Error = client
        .query_one("SELECT 1", &[])
        .await
        .map_err(Error::from)
        .expect_err("terminated");
    // Either form, whichever reached the client first: the server's FATAL 57P01, or the
    // closed socket.
    support::assert_diagnosis(&err, Diagnosis::QueryConnectionLost);
    assert!(err.is_retryable());
    assert!(!err.to_string().contains('\n'));
}

#[tokio::test]
async fn a_typed_statement_timeout_applies_to_every_connection() {
    let server = PgServer::shared();
    trust_test_ca_as_system_store().expect("test CA bundle");
    let pool = Options::new(&server.url())
        .unwrap()
        .statement_timeout(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    let err = Error::from(
        client
            .execute("SELECT pg_sleep(2)", &[])
            .await
            .expect_err("timed out"),
    );
    support::assert_diagnosis(&err, Diagnosis::QueryStatementTimeout);
    let setting: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, "100ms");
}

#[tokio::test]
async fn a_statement_timeout_on_a_pooler_endpoint_says_where_to_set_it_instead() {
    // Refused before anything is sent: no network.
    let err = Options::new(
        "postgresql://app:pw@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb",
    )
    .unwrap()
    .statement_timeout(Duration::from_secs(5))
    .connect()
    .await
    .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionString);
    assert!(
        err.to_string().starts_with(
            "`statement_timeout` (5000 ms) cannot be sent to a pooled (-pooler) endpoint"
        ),
        "{err}"
    );
    assert!(err.help().unwrap().contains("ALTER ROLE"));
}
