//! The metrics test's table of figures: PromQL expressions with the values they must give, the
//! scrape target that must be up, and the type each metric family must have; asked of a
//! [`Prometheus`] until every figure matches or the time is up, and shown as a table.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::{Prometheus, Sample};

/// What one PromQL expression must give.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// These values, keyed by the value of the check's label (`""` for a plain sum).
    Values(BTreeMap<String, f64>),
    /// At least one series, none below zero (a gauge whose value the test cannot know).
    Present,
}

impl Expected {
    /// One series (no label to key it) of `value`.
    pub fn one(value: f64) -> Expected {
        Expected::Values(BTreeMap::from([(String::new(), value)]))
    }
}

/// One figure: a PromQL expression and what it must give.
#[derive(Debug, Clone)]
pub struct Check {
    pub figure: &'static str,
    pub expr: &'static str,
    /// The label that tells the series apart (`""` when there is one series).
    pub key: &'static str,
    pub expected: Expected,
}

impl Check {
    pub fn new(
        figure: &'static str,
        expr: &'static str,
        key: &'static str,
        expected: Expected,
    ) -> Check {
        Check {
            figure,
            expr,
            key,
            expected,
        }
    }
}

/// Everything the test asks Prometheus.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The URL the only scrape target must have (`http://ADDR/metrics`).
    pub target_url: String,
    /// Metric families and the type (`counter`, `gauge`, `histogram`) each must have.
    pub families: Vec<(&'static str, &'static str)>,
    pub checks: Vec<Check>,
    /// Names to show, and compare, label values by (an endpoint's `ip:port` → `a`); values
    /// not in it are kept as they are.
    pub names: BTreeMap<String, String>,
}

impl Figures {
    /// Asks Prometheus every figure every half second until all match or `within` has passed
    /// since `since`; returns the last answers.
    pub async fn poll(&self, prom: &Prometheus, since: Instant, within: Duration) -> Table {
        loop {
            let table = self.survey(prom).await;
            if table.all_match() || since.elapsed() > within {
                return table;
            }
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Asks Prometheus every figure once.
    pub async fn survey(&self, prom: &Prometheus) -> Table {
        let mut rows = vec![self.target_row(prom).await, self.types_row(prom).await];
        for check in &self.checks {
            let got = self.keyed(&prom.query(check.expr).await, check.key);
            let (expected, matches) = match &check.expected {
                Expected::Values(values) => (show(values), &got == values),
                Expected::Present => (
                    "a series, not negative".into(),
                    !got.is_empty() && got.values().all(|v| *v >= 0.0),
                ),
            };
            rows.push(Row {
                figure: check.figure.into(),
                expected,
                scraped: show(&got),
                matches,
            });
        }
        Table(rows)
    }

    /// The scrape target is the only one, up, and its last scrape had no error: Prometheus
    /// parsed the whole exposition.
    async fn target_row(&self, prom: &Prometheus) -> Row {
        let targets = prom.targets().await;
        let matches = targets.len() == 1
            && targets[0].scrape_url == self.target_url
            && targets[0].health == "up"
            && targets[0].last_error.is_empty();
        let scraped = targets
            .iter()
            .map(|t| format!("{} {} {:?}", t.scrape_url, t.health, t.last_error))
            .collect::<Vec<_>>()
            .join("; ");
        Row {
            figure: "scrape target".into(),
            expected: format!("{} up \"\"", self.target_url),
            scraped: if scraped.is_empty() {
                "(none yet)".into()
            } else {
                scraped
            },
            matches,
        }
    }

    /// Every family has the type its `# TYPE` line must say.
    async fn types_row(&self, prom: &Prometheus) -> Row {
        let types = prom.metric_types().await;
        let got = |family: &str| types.get(family).map_or("none", String::as_str);
        let wrong: Vec<String> = self
            .families
            .iter()
            .filter(|(family, kind)| got(family) != *kind)
            .map(|(family, _)| format!("{family}={}", got(family)))
            .collect();
        Row {
            figure: "metric types".into(),
            expected: type_counts(self.families.iter().map(|(_, kind)| *kind)),
            scraped: if wrong.is_empty() {
                type_counts(self.families.iter().map(|(family, _)| got(family)))
            } else {
                wrong.join(" ")
            },
            matches: wrong.is_empty(),
        }
    }

    /// The series of an answer keyed by their `key` label, shown by name.
    fn keyed(&self, samples: &[Sample], key: &str) -> BTreeMap<String, f64> {
        samples
            .iter()
            .map(|s| {
                let label = s.labels.get(key).cloned().unwrap_or_default();
                (self.names.get(&label).cloned().unwrap_or(label), s.value)
            })
            .collect()
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub figure: String,
    pub expected: String,
    pub scraped: String,
    pub matches: bool,
}

/// The answers to every figure, one row each; its `Display` aligns the columns and marks the
/// rows that differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table(pub Vec<Row>);

impl Table {
    /// True when every figure matched (and there is at least one).
    pub fn all_match(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|r| r.matches)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w0 = self.0.iter().map(|r| r.figure.len()).max().unwrap_or(0);
        let w1 = self.0.iter().map(|r| r.expected.len()).max().unwrap_or(0);
        writeln!(f, "{:w0$}  {:w1$}  scraped", "figure", "expected")?;
        for row in &self.0 {
            let mark = if row.matches { "" } else { "   <-- differs" };
            writeln!(
                f,
                "{:w0$}  {:w1$}  {}{mark}",
                row.figure, row.expected, row.scraped
            )?;
        }
        Ok(())
    }
}

/// `a=30 b=30`, or the bare value of a series without a key.
fn show(values: &BTreeMap<String, f64>) -> String {
    if values.is_empty() {
        return "(no series)".into();
    }
    values
        .iter()
        .map(|(k, v)| {
            if k.is_empty() {
                format!("{v}")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `counter×5 gauge×5 histogram×2`: how many families have each type.
fn type_counts<'a>(kinds: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for kind in kinds {
        *counts.entry(kind).or_default() += 1;
    }
    counts
        .iter()
        .map(|(kind, n)| format!("{kind}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}
