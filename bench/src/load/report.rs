//! What a load run reports: percentiles, achieved rate, errors by kind, the
//! generator's own cost, and optionally the raw histogram so that several runs can be
//! pooled into one distribution (the harness's repeats).

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::worker::new_histogram;

/// One load run, as `trellis-bench load --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub url: String,
    /// `http1`, `http2` or `grpc`.
    pub protocol: String,
    pub connections: usize,
    /// The requested rate; absent in closed-loop (`--max`) runs.
    pub target_rate: Option<f64>,
    pub duration_s: f64,
    /// Requests that got a complete, successful answer.
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful requests per second over the run (until the last answer).
    pub rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// p99 measured from the actual send, as a client with coordinated omission would
    /// report it; far below `p99_ms` means requests queued in the generator.
    pub service_p99_ms: f64,
    pub bytes_received: u64,
    /// Response body bytes per second (MB = 10⁶ bytes).
    pub throughput_mb_s: f64,
    /// The generator's own user+system CPU per request: the load it adds to the host.
    pub generator_cpu_us_per_request: f64,
    /// `[microseconds, count]` pairs of the latency histogram (`--histogram`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Vec<[u64; 2]>>,
}

/// The latency percentiles of a histogram in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
        Percentiles {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            p9999_ms: at(0.9999),
            max_ms: histogram.max() as f64 / 1_000.0,
            mean_ms: histogram.mean() / 1_000.0,
        }
    }
}

impl LoadReport {
    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50_ms: self.p50_ms,
            p90_ms: self.p90_ms,
            p99_ms: self.p99_ms,
            p999_ms: self.p999_ms,
            p9999_ms: self.p9999_ms,
            max_ms: self.max_ms,
            mean_ms: self.mean_ms,
        }
    }

    pub(super) fn set_percentiles(&mut self, percentiles: Percentiles) {
        self.p50_ms = percentiles.p50_ms;
        self.p90_ms = percentiles.p90_ms;
        self.p99_ms = percentiles.p99_ms;
        self.p999_ms = percentiles.p999_ms;
        self.p9999_ms = percentiles.p9999_ms;
        self.max_ms = percentiles.max_ms;
        self.mean_ms = percentiles.mean_ms;
    }
}

/// The non-empty buckets of a histogram, each as its highest equivalent value and count.
pub fn export(histogram: &Histogram<u64>) -> Vec<[u64; 2]> {
    histogram
        .iter_recorded()
        .map(|bucket| [bucket.value_iterated_to(), bucket.count_at_value()])
        .collect()
}

/// Adds exported buckets into `into`; values land in the buckets they came from.
pub fn pool(into: &mut Histogram<u64>, buckets: &[[u64; 2]]) {
    for &[value, count] in buckets {
        // Out of range only if the JSON was not ours; such a bucket is dropped.
        let _ = into.record_n(value.max(1), count);
    }
}

/// A histogram rebuilt from exported buckets.
pub fn import(buckets: &[[u64; 2]]) -> Histogram<u64> {
    let mut histogram = new_histogram();
    pool(&mut histogram, buckets);
    histogram
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pacing = match self.target_rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop (max)".to_string(),
        };
        writeln!(
            f,
            "{} ({}, {} connections, {pacing}, {:.1} s)",
            self.url, self.protocol, self.connections, self.duration_s
        )?;
        writeln!(
            f,
            "  requests  {} ok, {} errors, {:.1} req/s achieved, {:.1} MB/s",
            self.requests, self.errors, self.rate, self.throughput_mb_s
        )?;
        for (kind, count) in &self.errors_by_kind {
            writeln!(f, "            {count} {kind}")?;
        }
        writeln!(
            f,
            "  latency   (from intended send time, corrected for coordinated omission)"
        )?;
        let rows = [
            ("p50", self.p50_ms),
            ("p90", self.p90_ms),
            ("p99", self.p99_ms),
            ("p99.9", self.p999_ms),
            ("p99.99", self.p9999_ms),
            ("max", self.max_ms),
        ];
        for (name, value) in rows {
            writeln!(f, "    {name:<7} {value:>10.3} ms")?;
        }
        write!(
            f,
            "  generator p99 without correction {:.3} ms, {:.1} CPU-µs per request",
            self.service_p99_ms, self.generator_cpu_us_per_request
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_buckets_pool_back_into_the_same_distribution() {
        let mut original = new_histogram();
        for micros in [80, 95, 120, 120, 450, 10_000, 2_500_000] {
            original.record(micros).expect("in range");
        }
        let mut pooled = import(&export(&original));
        pool(&mut pooled, &export(&original));
        assert_eq!(pooled.len(), 2 * original.len());
        assert_eq!(Percentiles::of(&pooled), Percentiles::of(&original));
    }

    #[test]
    fn an_empty_run_has_zero_percentiles_rather_than_garbage() {
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }
}
