//! The text report: each step as it ends, with colour on a terminal, and a progress line
//! while a slow step waits.

use neon_connect::doctor::{causes, format_duration, Progress, Report, Status, StepReport, STEPS};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// ANSI colours, or none.
#[derive(Clone, Copy)]
pub(crate) struct Style(pub(crate) bool);

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn green(self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(self, t: &str) -> String {
        self.paint("1;31", t)
    }
    fn yellow(self, t: &str) -> String {
        self.paint("33", t)
    }
    fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
    fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }
}

/// Prints the text report as the steps end, and shows what a slow step waits for on stderr
/// (a spinner on a terminal; a line every five seconds otherwise).
pub(crate) struct Printer {
    pub(crate) style: Style,
    /// Print steps as they end (text mode).
    pub(crate) live: bool,
    /// stderr is a terminal: show a spinner while waiting.
    pub(crate) progress: bool,
    /// What is being waited for, and since when (read by `spinner`).
    pub(crate) waiting: Arc<Mutex<Option<(String, Instant)>>>,
}

const WIDTH: usize = 64;

impl Progress for Printer {
    fn step_finished(&self, step: &StepReport) {
        self.step(step);
    }

    fn waiting(&self, what: &str) {
        *lock(&self.waiting) = Some((what.to_string(), Instant::now()));
    }

    fn done_waiting(&self) {
        if lock(&self.waiting).take().is_some() && self.progress {
            eprint!("\r\x1b[2K");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shows what `waiting` holds after a moment: a spinner with the seconds waited on a terminal,
/// or a line every five seconds otherwise. Runs until the program ends.
pub(crate) async fn spinner(waiting: Arc<Mutex<Option<(String, Instant)>>>, terminal: bool) {
    let frames = ['|', '/', '-', '\\'];
    let mut n = 0usize;
    let mut last_line: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let Some((what, since)) = lock(&waiting).clone() else {
            last_line = None;
            continue;
        };
        let waited = since.elapsed();
        if waited < Duration::from_millis(300) {
            continue;
        }
        if terminal {
            eprint!(
                "\r\x1b[2K  {} {what}... {:.0} s",
                frames[n % 4],
                waited.as_secs_f64()
            );
            n += 1;
        } else if waited >= Duration::from_millis(5_300)
            && last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            eprintln!("  still waiting: {what} ({:.0} s)", waited.as_secs_f64());
            last_line = Some(Instant::now());
        }
    }
}

impl Printer {
    fn step(&self, step: &StepReport) {
        if !self.live {
            return;
        }
        let s = self.style;
        let head = format!("[{}/{}] {}", step.index + 1, STEPS.len(), step.title());
        let status = match step.status {
            Status::Pass => s.green("pass"),
            Status::Fail => s.red("FAIL"),
            Status::Skipped => s.dim("skipped"),
        };
        let time = step
            .elapsed
            .filter(|_| step.status != Status::Skipped)
            .map(|d| format!("  {}", s.dim(&format_duration(d))))
            .unwrap_or_default();
        let dots = WIDTH.saturating_sub(head.chars().count() + 2);
        let mut out = format!(
            "{} {} {status}{time}\n",
            s.bold(&head),
            s.dim(&".".repeat(dots))
        );
        let width = step
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            .min(22);
        for (label, value) in &step.rows {
            let pad = " ".repeat(width.saturating_sub(label.chars().count()));
            out.push_str(&format!("      {}{pad}  {value}\n", s.dim(label)));
        }
        for w in &step.warnings {
            out.push_str(&format!("      {} {w}\n", s.yellow("warning:")));
        }
        if let Some(e) = &step.error {
            out.push_str(&format!("      {} {}\n", s.red("error:"), e.message()));
            for a in e.attempts() {
                out.push_str(&format!("        - {}\n", a.message()));
            }
            for c in causes(e) {
                out.push_str(&format!("      {} {c}\n", s.dim("cause:")));
            }
            if let Some(help) = e.help() {
                out.push_str(&format!("      {} {help}\n", s.green("fix:")));
            }
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }

    pub(crate) fn summary(&self, report: &Report) {
        let s = self.style;
        println!();
        match report.failed() {
            None => println!(
                "{} in {}",
                s.green(&format!("All {} steps passed", STEPS.len())),
                format_duration(report.elapsed)
            ),
            Some(step) => {
                println!(
                    "{}",
                    s.red(&format!(
                        "Step {} ({}) failed.",
                        step.index + 1,
                        step.title()
                    ))
                );
                if let Some(e) = &step.error {
                    println!("{}", e.message());
                    if let Some(help) = e.help() {
                        println!("{} {help}", s.green("fix:"));
                    }
                }
            }
        }
    }
}
