//! Where a filter request's time goes: `perf record` (software clock sampling works in VMs without
//! hardware counters) on `bench filter --profile CASE`, recording only the request loop, then split by
//! binary: wasmtime's JIT-compiled guest code, the host (wasmtime, proxy-wasm-host, `tests::Worker`),
//! libc (copies, allocation) and the kernel; plus the hottest host functions. Wasmtime's JIT code has no
//! symbols here (the host crate does not turn on wasmtime's perf map), so the guest's own split comes
//! from the native core's timings instead.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::Paths;

/// One profiled case.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub(crate) case: String,
    /// Requests per second while profiled.
    pub(crate) per_sec: f64,
    /// (share %, what) by binary.
    pub(crate) by_binary: Vec<(f64, String)>,
    /// (share %, binary, function) for the hottest named functions.
    pub(crate) hottest: Vec<(f64, String, String)>,
}

/// Whether `perf` can be run.
pub(crate) fn available() -> bool {
    Command::new("perf").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn report(data: &PathBuf, sort: &str) -> anyhow::Result<String> {
    let out = Command::new("perf")
        .args(["report", "-i"])
        .arg(data)
        .args(["--stdio", "--comm", "bench", "--sort", sort, "--no-children", "-g", "none"])
        .output()
        .context("perf report")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn percent_lines(text: &str) -> impl Iterator<Item = (f64, Vec<&str>)> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| {
        let mut words = l.split_whitespace();
        let pct = words.next()?.strip_suffix('%')?.parse().ok()?;
        Some((pct, words.collect()))
    })
}

fn label(dso: &str) -> String {
    match dso {
        d if d.starts_with("[JIT]") => "guest: the filter's wasm code, compiled by Cranelift".to_owned(),
        "bench" => "host: wasmtime, proxy-wasm-host, tests::Worker".to_owned(),
        d if d.starts_with("libc") => "libc: memcpy, malloc, free".to_owned(),
        "[kernel.kallsyms]" => "kernel".to_owned(),
        d => d.to_owned(),
    }
}

/// Profiles `case` for `seconds`.
pub(crate) async fn record(
    paths: &Paths,
    case: &str,
    seconds: u64,
    commands: &mut Vec<String>,
) -> anyhow::Result<Profile> {
    let work = paths.work_dir();
    let fifo = work.join(format!("perf-{case}.ctl"));
    let data = work.join(format!("perf-{case}.data"));
    let out = work.join(format!("perf-{case}.json"));
    let _ = std::fs::remove_file(&fifo);
    if !Command::new("mkfifo").arg(&fifo).status()?.success() {
        bail!("mkfifo {}", fifo.display());
    }
    let exe = std::env::current_exe()?;
    let mut args: Vec<String> = vec![
        "record".into(),
        "-F".into(),
        "1999".into(),
        "--control".into(),
        format!("fifo:{}", fifo.display()),
        "-D".into(),
        "-1".into(),
        "-o".into(),
        data.display().to_string(),
        "--".into(),
        exe.display().to_string(),
        "filter".into(),
    ];
    args.extend(paths.args());
    args.extend([
        "--wasm".into(),
        paths.filter_wasm().display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--profile".into(),
        case.into(),
        "--seconds".into(),
        seconds.to_string(),
        "--perf-control".into(),
        fifo.display().to_string(),
    ]);
    commands.push(format!("perf {}", args.join(" ").replace(&exe.display().to_string(), "bench")));
    let status = tokio::process::Command::new("perf").args(&args).stderr(std::process::Stdio::null()).status().await?;
    if !status.success() {
        bail!("perf record failed ({status})");
    }
    let requests: u64 = serde_json::from_slice(&std::fs::read(&out)?)?;
    let by_dso = report(&data, "dso")?;
    let by_binary: Vec<(f64, String)> =
        percent_lines(&by_dso).map(|(p, w)| (p, label(&w.join(" ")))).filter(|(p, _)| *p >= 0.5).collect();
    let by_sym = report(&data, "dso,sym")?;
    let hottest = percent_lines(&by_sym)
        .filter(|(_, w)| w.first().is_some_and(|d| !d.starts_with("[JIT]")))
        .take(10)
        .map(|(p, w)| {
            let dso = w.first().map(|s| s.to_string()).unwrap_or_default();
            let sym = w.iter().skip(2).copied().collect::<Vec<_>>().join(" ");
            (p, dso, sym)
        })
        .collect();
    let _ = std::fs::remove_file(&fifo);
    Ok(Profile { case: case.to_owned(), per_sec: requests as f64 / seconds as f64, by_binary, hottest })
}
