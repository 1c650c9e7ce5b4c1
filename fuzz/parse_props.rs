//! Property tests for the connection-string parser: arbitrary input never panics, and the
//! redacted form of any parsed string parses again to the same settings (password aside).

use neon_connect::ConnectionString;
use proptest::prelude::*;

fn word() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9_ @:/?&=%'\\\\.é-]{1,12}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics(s in "\\PC{0,80}", url in "postgres(ql)?://\\PC{0,60}") {
        let _ = ConnectionString::parse(&s);
        let _ = ConnectionString::parse(&url);
    }

    #[test]
    fn redacted_reparses_to_the_same_settings(
        user in word(),
        password in word(),
        db in word(),
        port in 1u16..,
        mode in prop::sample::select(vec!["require", "verify-ca", "verify-full", "prefer", "allow"]),
        as_url in any::<bool>(),
    ) {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        let input = if as_url {
            format!("postgresql://{}:{}@localhost:{port}/{}?sslmode={mode}", enc(&user), enc(&password), enc(&db))
        } else {
            format!("host=localhost port={port} user={} password={} dbname={} sslmode={mode}", quote(&user), quote(&password), quote(&db))
        };
        let a = ConnectionString::parse(&input).unwrap();
        let redacted = a.redacted();
        prop_assert!(!redacted.contains(&enc(&password)) || password.len() < 4, "{redacted}");
        let b = ConnectionString::parse(&redacted).unwrap();
        prop_assert_eq!(&b.redacted(), &redacted);
        prop_assert_eq!(format!("{b:?}"), format!("{a:?}"));
    }
}
