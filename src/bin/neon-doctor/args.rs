//! The command line: options, the connection string, and the help text.

pub(crate) const USAGE: &str = "\
neon-doctor: checks a PostgreSQL connection string step by step and says what to fix

usage: neon-doctor [--json] [--color=auto|always|never] [CONNECTION_STRING]

The connection string is a URL (postgresql://user:password@host/db?sslmode=verify-full) or
libpq's key=value form. Without one, DATABASE_URL is read, then the PG* variables, as the
library does. Prefer DATABASE_URL: a password on the command line shows in `ps` and in the
shell history.

Steps: connection string, DNS, TCP, TLS, authentication, query. Each ends in pass or fail;
the first failure prints the diagnosis and the fix, and the exit code is 1.

options:
  --json            print the report as JSON (for scripts and CI)
  --color=WHEN      colour the text report: auto (on a terminal, unless NO_COLOR is set),
                    always or never
  -h, --help        this text
  -V, --version     the version
";

pub(crate) struct Args {
    pub(crate) input: String,
    pub(crate) json: bool,
    pub(crate) colour: Option<bool>,
}

impl Args {
    /// `Ok(None)`: help or version was printed.
    pub(crate) fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut input = None;
        let mut json = false;
        let mut colour = None;
        for arg in args {
            match arg.as_str() {
                "-h" | "--help" => {
                    print!("{USAGE}");
                    return Ok(None);
                }
                "-V" | "--version" => {
                    println!("neon-doctor {}", env!("CARGO_PKG_VERSION"));
                    return Ok(None);
                }
                "--json" => json = true,
                "--no-color" | "--color=never" => colour = Some(false),
                "--color=always" => colour = Some(true),
                "--color=auto" => colour = None,
                s if s.starts_with('-') && s.len() > 1 => {
                    return Err(format!("unknown option {s}"))
                }
                s => {
                    if input.is_some() {
                        return Err("give one connection string (quote it for the shell)".into());
                    }
                    input = Some(s.to_string());
                }
            }
        }
        let input = input
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .unwrap_or_default();
        Ok(Some(Args {
            input,
            json,
            colour,
        }))
    }
}
