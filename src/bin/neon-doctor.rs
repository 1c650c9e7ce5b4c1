//! `neon-doctor`: checks a PostgreSQL connection string step by step and says what to fix.
//! Run `neon-doctor --help`.

fn main() -> std::process::ExitCode {
    neon_connect::doctor::main()
}
