//! Latency samples and what the report shows of them: median and p99 in microseconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Samples.
    pub(crate) n: usize,
    /// 50th percentile.
    pub(crate) median_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
    /// Arithmetic mean.
    pub(crate) mean_us: f64,
}

impl Summary {
    /// Sorts `samples` and summarises them (all zero when there are none).
    pub(crate) fn of(samples: &mut [Duration]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let at = |q: f64| us(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        let total: Duration = samples.iter().sum();
        Summary { n: samples.len(), median_us: at(0.5), p99_us: at(0.99), mean_us: us(total) / samples.len() as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_of_one_to_a_hundred_microseconds() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let sum = Summary::of(&mut s);
        assert_eq!(sum.n, 100);
        assert!((sum.median_us - 51.0).abs() < 1e-6, "index 49.5 rounds up: {}", sum.median_us);
        assert!((sum.p99_us - 99.0).abs() < 1e-6, "{}", sum.p99_us);
        assert!((sum.mean_us - 50.5).abs() < 1e-6);
    }
}
