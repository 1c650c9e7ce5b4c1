//! What the doctor found: a report of six steps, as text rows and JSON details.

use crate::diagnostics::Diagnosis;
use crate::error::{Error, Step};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The step passed.
    Pass,
    /// The step failed; its error says why and what to change.
    Fail,
    /// An earlier step failed, so this one did not run.
    Skipped,
}

impl Status {
    /// `pass`, `fail` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

/// The six steps: JSON name and title.
pub const STEPS: [(&str, &str); 6] = [
    ("connection_string", "Connection string"),
    ("dns", "DNS"),
    ("tcp", "TCP"),
    ("tls", "TLS"),
    ("authentication", "Authentication"),
    ("query", "Query"),
];

/// What one step found.
#[derive(Debug)]
pub struct StepReport {
    /// The step's position in [`STEPS`].
    pub index: usize,
    /// Pass, fail or skipped.
    pub status: Status,
    /// How long it took (`None`: skipped).
    pub elapsed: Option<Duration>,
    /// Label and value, in order, for a text report.
    pub rows: Vec<(String, String)>,
    /// The same findings as named values, for a JSON report.
    pub details: Map<String, Value>,
    /// What is allowed but worth changing (weak `sslmode`, a pooled endpoint, ...).
    pub warnings: Vec<String>,
    /// Why the step failed: the library's own error, with its diagnosis and fix.
    pub error: Option<Error>,
}

impl StepReport {
    pub(super) fn new(index: usize) -> StepReport {
        StepReport {
            index,
            status: Status::Pass,
            elapsed: None,
            rows: Vec::new(),
            details: Map::new(),
            warnings: Vec::new(),
            error: None,
        }
    }

    pub(super) fn skipped(index: usize) -> StepReport {
        StepReport {
            status: Status::Skipped,
            ..StepReport::new(index)
        }
    }

    /// A row of the text report, and the same value in JSON under `key`.
    pub(super) fn row(&mut self, key: &str, label: &str, value: impl Into<String>) {
        let value = value.into();
        self.details
            .insert(key.to_string(), Value::String(value.clone()));
        self.rows.push((label.to_string(), value));
    }

    /// A row of the text report only (its JSON is set with `details`).
    pub(super) fn text(&mut self, label: &str, value: impl Into<String>) {
        self.rows.push((label.to_string(), value.into()));
    }

    pub(super) fn fail(&mut self, error: Error) {
        self.status = Status::Fail;
        self.error = Some(error);
    }

    /// The step's name in JSON: `connection_string`, `dns`, `tcp`, `tls`, `authentication`,
    /// `query`.
    pub fn name(&self) -> &'static str {
        STEPS[self.index].0
    }

    /// The step's title: `Connection string`, `DNS`, ...
    pub fn title(&self) -> &'static str {
        STEPS[self.index].1
    }

    /// The step as JSON: name, title, status, time, details, warnings and error.
    pub fn to_json(&self) -> Value {
        json!({
            "step": self.name(),
            "title": self.title(),
            "status": self.status.as_str(),
            "elapsed_ms": self.elapsed.map(ms),
            "details": self.details,
            "warnings": self.warnings,
            "error": self.error.as_ref().map(error_json),
        })
    }
}

/// What [`check`](super::check) found: every step, in order.
#[derive(Debug)]
pub struct Report {
    /// The six steps; those after a failure are skipped.
    pub steps: Vec<StepReport>,
    /// How long the whole check took.
    pub elapsed: Duration,
}

impl Report {
    /// Whether every step passed.
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.status == Status::Pass)
    }

    /// The step that failed, if one did.
    pub fn failed(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.status == Status::Fail)
    }

    /// The report as JSON (what `neon-doctor --json` prints).
    pub fn to_json(&self) -> Value {
        let failed = self.failed();
        json!({
            "ok": self.ok(),
            "failed_step": failed.map(StepReport::name),
            "elapsed_ms": ms(self.elapsed),
            "error": failed.and_then(|s| s.error.as_ref()).map(error_json),
            "steps": self.steps.iter().map(StepReport::to_json).collect::<Vec<_>>(),
        })
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

fn error_json(e: &Error) -> Value {
    json!({
        "kind": e.kind().as_str(),
        "step": e.step().map(Step::as_str),
        "diagnosis": e.diagnosis().map(Diagnosis::id),
        "message": e.message(),
        "help": e.help(),
        "retryable": e.is_retryable(),
        "causes": causes(e),
        "attempts": e.attempts().iter().map(|a| a.message().to_string()).collect::<Vec<_>>(),
    })
}

/// The error's cause chain, each text once (never a password: the chain holds none).
pub fn causes(e: &Error) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if !text.is_empty() && !e.message().contains(&text) && !out.contains(&text) {
            out.push(text);
        }
        cur = c.source();
    }
    out
}
