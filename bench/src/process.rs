//! Servers under test as child processes: started on a free loopback port, ready when an HTTP probe
//! answers 200, measured through `/proc/PID/status`, and stopped by their own pid.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Rss {
    /// `VmRSS`: resident now.
    pub(crate) now_kib: u64,
    /// `VmHWM`: the peak so far.
    pub(crate) peak_kib: u64,
}

/// CPU time (user + system, every thread) a process has used so far, in seconds; `pid` 0 is this process.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let path = if pid == 0 { "/proc/self/stat".to_owned() } else { format!("/proc/{pid}/stat") };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux architecture this runs on.
    (ticks(11) + ticks(12)) / 100.0
}

/// A running server.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// The command line, for the report.
    pub(crate) command: String,
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts `program args…` with its output in `log`, and waits until `GET url+probe` answers 200.
    pub(crate) async fn start(
        program: &Path,
        args: &[&str],
        cwd: &Path,
        port: u16,
        probe: &str,
        log: &Path,
    ) -> anyhow::Result<Server> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let command = std::iter::once(program.display().to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut server = Server { child, url: format!("http://127.0.0.1:{port}"), command };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{} exited with {status}; its log:\n{}",
                    server.command,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            // A readiness probe, retried until the server answers.
            if let Ok(r) = http.get(format!("{}{probe}", server.url)).send().await {
                if r.status() == 200 {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                server.stop().await;
                bail!("{} did not answer {probe} within 60 s", server.command);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Its resident memory now and at its peak.
    pub(crate) fn rss(&self) -> Rss {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Rss { now_kib: field("VmRSS:"), peak_kib: field("VmHWM:") }
    }

    /// Kills it (by its own pid) and reaps it.
    pub(crate) async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}
