//! The report: one markdown table per section.

use crate::measure::median;
use crate::relay::ONE_WAY;

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) out: String,
}

impl Table {
    /// Rows of rates: median per variant, and the median of per-round ratios against the
    /// first variant (ours). `goal` is the least ours/that ratio wanted.
    pub(crate) fn rate_rows(
        &mut self,
        title: &str,
        rounds: &[Vec<f64>],
        names: &[(&str, Option<f64>)],
    ) {
        self.out.push_str(&format!(
            "### {title}\n\n| variant | median | rounds | first row / this (median of per-round ratios) | goal |\n|---|---:|---:|---:|---|\n"
        ));
        for (i, (name, goal)) in names.iter().enumerate() {
            let mut v = rounds[i].clone();
            let med = median(&mut v);
            let mut ratios: Vec<f64> = rounds[0]
                .iter()
                .zip(&rounds[i])
                .map(|(a, b)| a / b)
                .collect();
            let ratio = median(&mut ratios);
            let goal = match goal {
                Some(g) if ratio >= *g => format!("≥ {g:.2}: met"),
                Some(g) => format!("≥ {g:.2}: MISSED"),
                None => String::new(),
            };
            let ratio = if i == 0 {
                "1.00".to_string()
            } else {
                format!("{ratio:.2}")
            };
            self.out.push_str(&format!(
                "| {name} | {med:.0} | {} | {ratio} | {goal} |\n",
                rounds[i].len()
            ));
        }
        self.out.push('\n');
    }

    /// Connect times through the relay and the round trips it counted (per connection; the
    /// most common count, and the range when connections differ).
    pub(crate) fn rtt_rows(&mut self, samples: &[RttSample]) {
        self.out.push_str(
            "### connect through a relay adding 5 ms each way (10 ms round trip)\n\n\
             | variant | median connect | ÷ 10 ms | round trips counted at the relay, after TCP, to the first query's answer | of which connecting (without the query's 1) |\n\
             |---|---:|---:|---:|---:|\n",
        );
        let mut names: Vec<&String> = Vec::new();
        for s in samples {
            if !names.contains(&&s.name) {
                names.push(&s.name);
            }
        }
        for name in names {
            let mine = samples.iter().filter(|s| &s.name == name);
            let mut times: Vec<f64> = mine.clone().filter_map(|s| s.ms).collect();
            let counts: Vec<u32> = mine.flat_map(|s| s.round_trips.iter().copied()).collect();
            let counted = match (counts.iter().min(), counts.iter().max()) {
                (Some(lo), Some(hi)) => {
                    let mode = (*lo..=*hi)
                        .max_by_key(|c| (counts.iter().filter(|x| *x == c).count(), *c))
                        .unwrap_or(*lo);
                    let text = if lo == hi {
                        format!("{mode}")
                    } else {
                        format!("{mode} (range {lo}–{hi} over {} connections)", counts.len())
                    };
                    format!("{text} | {}", mode.saturating_sub(1))
                }
                _ => "not counted | ".into(),
            };
            if times.is_empty() {
                self.out
                    .push_str(&format!("| {name} | failed | | {counted} |\n"));
                continue;
            }
            let med = median(&mut times);
            let rtt = 2.0 * ONE_WAY.as_secs_f64() * 1000.0;
            self.out.push_str(&format!(
                "| {name} | {med:.1} ms | {:.1} | {counted} |\n",
                med / rtt
            ));
        }
        self.out.push('\n');
    }
}

/// One batch of connections of one variant through the relay.
pub(crate) struct RttSample {
    pub(crate) name: String,
    /// Median connect time in milliseconds (`None` when the variant failed).
    pub(crate) ms: Option<f64>,
    /// Round trips counted on each connection of the batch.
    pub(crate) round_trips: Vec<u32>,
}
