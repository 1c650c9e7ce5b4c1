//! `neon-doctor`: checks a PostgreSQL connection string step by step and says what to fix.
//! Run `neon-doctor --help`. The checks are the library's (`neon_connect::doctor`); this
//! program reads the arguments and prints the report as text or JSON.

mod args;
mod text;

use args::{Args, USAGE};
use neon_connect::doctor::check;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use text::{Printer, Style};

/// The program: parses the arguments, runs the checks, prints the report. Exit code 0 when
/// every step passed, 1 when one failed, 2 for bad arguments.
fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("neon-doctor: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("neon-doctor: could not start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let colour = match args.colour {
        Some(on) => on,
        None => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let printer = Printer {
        style: Style(colour),
        live: !args.json,
        progress: std::io::stderr().is_terminal(),
        waiting: Arc::default(),
    };
    let report = runtime.block_on(async {
        let spinner = tokio::spawn(text::spinner(printer.waiting.clone(), printer.progress));
        let report = check(&args.input, &printer).await;
        spinner.abort();
        report
    });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
        );
    } else {
        printer.summary(&report);
    }
    // Do not wait for connection tasks still shutting down.
    runtime.shutdown_background();
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
