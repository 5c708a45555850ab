//! Fixed-URL load (discovery, JWKS) with `wrk`, Debian's HTTP load generator, in its own process.

use std::process::Command;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// What `wrk --latency` reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WrkResult {
    pub(crate) per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Non-2xx/3xx answers and socket errors.
    pub(crate) errors: u64,
    /// The command line, for the report.
    pub(crate) command: String,
}

/// `wrk` reports durations as `812.00us`, `1.23ms`, `1.01s`.
fn micros(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60e6)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

/// Parses `wrk --latency` output.
fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => r.per_sec = v.parse().context("Requests/sec")?,
            (Some("50%"), Some(v)) => r.p50_us = micros(v).context("50%")?,
            (Some("99%"), Some(v)) => r.p99_us = micros(v).context("99%")?,
            (Some("Non-2xx"), _) => r.errors += line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0),
            (Some("Socket"), _) => {
                r.errors +=
                    line.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum::<u64>()
            }
            _ => {}
        }
    }
    if r.per_sec == 0.0 {
        bail!("no Requests/sec in wrk's output:\n{text}");
    }
    Ok(r)
}

/// Runs `wrk -t THREADS -c CONNS -d SECS --latency URL`.
pub(crate) fn run(url: &str, threads: usize, connections: usize, seconds: u64) -> anyhow::Result<WrkResult> {
    let args = [
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".to_owned(),
        url.to_owned(),
    ];
    let out = Command::new("wrk").args(&args).output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    let mut r = parse(&text)?;
    r.command = format!("wrk {}", args.join(" "));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let text = "Running 8s test @ http://127.0.0.1:1/keys
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.05ms  300.00us   9.00ms   90.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    1.50ms
     99%    2.25ms
  240000 requests in 8.00s, 100.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  30000.12
Transfer/sec:     12.50MB
";
        let r = parse(text).unwrap();
        assert!((r.per_sec - 30000.12).abs() < 1e-6);
        assert!((r.p50_us - 812.0).abs() < 1e-6);
        assert!((r.p99_us - 2250.0).abs() < 1e-6);
        assert_eq!(r.errors, 8, "socket errors and non-2xx answers");
    }
}
