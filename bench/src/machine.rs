//! What the numbers were measured on: CPU, cores, memory, kernel, toolchain and tool versions, and the
//! source revision. Read from `/proc` and from the tools themselves at the time of the run.

use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine and software of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) date: String,
    pub(crate) cpu_model: String,
    pub(crate) nproc: usize,
    pub(crate) mem_total: String,
    pub(crate) kernel: String,
    pub(crate) os: String,
    pub(crate) rustc: String,
    pub(crate) node: String,
    pub(crate) wrk: String,
    pub(crate) oidc_provider: String,
    pub(crate) revision: String,
    /// `/proc/loadavg` when the run started (other work on the machine skews every figure).
    pub(crate) load_at_start: String,
    /// And when it ended.
    pub(crate) load_at_end: String,
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_owned()
        }
        Err(_) => "not installed".to_owned(),
    }
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Machine {
    /// Reads everything now. `node_dir` is where oidc-provider was installed.
    pub(crate) fn probe(node_dir: &std::path::Path) -> Machine {
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let oidc_provider = std::fs::read_to_string(node_dir.join("node_modules/oidc-provider/package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "not installed".to_owned());
        let head = output("git", &["rev-parse", "--short", "HEAD"]);
        let dirty =
            Command::new("git").args(["status", "--porcelain"]).output().map(|o| !o.stdout.is_empty()).unwrap_or(false);
        Machine {
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cpu_model: proc_field("/proc/cpuinfo", "model name"),
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            mem_total: proc_field("/proc/meminfo", "MemTotal"),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            os,
            rustc: output("rustc", &["--version"]),
            node: output("node", &["--version"]),
            wrk: output("wrk", &["--version"]),
            oidc_provider,
            revision: if dirty { format!("{head} (with uncommitted changes)") } else { head },
            load_at_start: load_average(),
            load_at_end: String::new(),
        }
    }
}
