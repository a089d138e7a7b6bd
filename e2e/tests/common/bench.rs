//! What the benchmarks share: their one flag and their table's figures.

use std::time::Duration;

use anyhow::{Context, Result};

/// The value of `--<flag> N` on the command line, or `default`.
pub fn count_flag(flag: &str, default: usize) -> Result<usize> {
    let flag = format!("--{flag}");
    std::env::args()
        .skip_while(|a| *a != flag)
        .nth(1)
        .map(|n| n.parse().with_context(|| format!("{flag} N")))
        .transpose()
        .map(|n| n.unwrap_or(default))
}

/// Median, 90th percentile and worst.
pub fn summary(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
    (median, p90, v[v.len() - 1])
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
