//! `Options::from_env()` with nothing set: the error names `DATABASE_URL`. Its own test binary,
//! because it changes the process environment.

#[test]
fn from_env_without_database_url_names_it() {
    for var in ["DATABASE_URL", "PGHOST", "PGHOSTADDR"] {
        std::env::remove_var(var);
    }
    let err = neon_connect::Options::from_env().expect_err("nothing to connect to");
    assert_eq!(err.kind(), neon_connect::ErrorKind::ConnectionString);
    assert_eq!(
        err.to_string(),
        "DATABASE_URL is not set (nor PGHOST): there is no database to connect to; help: set DATABASE_URL to your connection string (`postgresql://user:password@host/dbname`), or the PG* variables"
    );
}
