//! `bench`: the benchmarks behind `make bench`. `bench run` measures everything on this machine in one go
//! and writes BENCHMARKS.md; `bench filter` is the child process it starts once per wasm module.
//!
//! - the filter: the compiled `.wasm` in the e2e tests' proxy-wasm host (wasmtime), per request, against
//!   a no-op module and native verification ([`filter`]);
//! - the issuer: the release binary on loopback with SQLite on disk, driven from this process
//!   ([`load`], [`wrk`]), beside oidc-provider configured the same way ([`oidc_provider`]);
//! - reference rates that bound them: bcrypt, signatures, fdatasync ([`native`]).

mod federation;
mod filter;
mod issuer;
mod ldap;
mod load;
mod machine;
mod native;
mod oidc_provider;
mod process;
mod profile;
mod report;
mod revocation;
mod sessions;
mod stats;
mod wrk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::filter::{FilterOutput, Sizes};
use crate::load::{Throughput, Window};
use crate::machine::Machine;
use crate::native::Native;
use crate::process::Rss;
use crate::wrk::WrkResult;

#[derive(Parser)]
#[command(name = "bench", about = "tokengate benchmarks: the filter in wasmtime, the issuer over HTTP, oidc-provider")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the built artefacts are; the defaults follow `$CARGO_TARGET_DIR` as the Makefile does.
#[derive(clap::Args, Clone)]
struct Paths {
    /// The filter, as `make wasm` writes it.
    #[arg(long)]
    filter_wasm: Option<PathBuf>,
    /// The no-op module (bench/noop-filter built for wasm32-wasip1).
    #[arg(long)]
    noop_wasm: Option<PathBuf>,
    /// The release issuer binary.
    #[arg(long)]
    issuer_bin: Option<PathBuf>,
    /// Where `npm install oidc-provider` ran.
    #[arg(long)]
    node_dir: Option<PathBuf>,
    /// Scratch space for databases and logs (on disk: SQLite's commits are durable there).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every benchmark and write the report.
    Run {
        #[command(flatten)]
        paths: Paths,
        /// The report to write.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The commands `scripts/bench.sh` ran before this one, one per line, for the report.
        #[arg(long)]
        commands_file: Option<PathBuf>,
        /// Short windows, for trying the harness (the figures are then not worth reporting).
        #[arg(long)]
        quick: bool,
    },
    /// One wasm module's per-request costs, as JSON in `--out` (started by `run`).
    Filter {
        #[command(flatten)]
        paths: Paths,
        /// The module to load.
        #[arg(long)]
        wasm: PathBuf,
        /// It is the no-op module.
        #[arg(long)]
        noop: bool,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        quick: bool,
        /// Instead of measuring, repeat one case (`session`, `cached`) for a profiler.
        #[arg(long)]
        profile: Option<String>,
        /// How long to repeat it.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// `perf record --control` FIFO to enable and disable recording around the loop.
        #[arg(long)]
        perf_control: Option<PathBuf>,
    },
    /// The connectors: `ldap` against a real slapd (logins/s next to the bare bind rate, refresh latency)
    /// and refresh latency through the `oidc` connector (JSON on standard output; also part of `run`).
    Ldap {
        /// Short windows.
        #[arg(long)]
        quick: bool,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Many sessions and bearer tokens through the compiled filter, as JSON in `--out` (started by `run`).
    Sessions {
        #[command(flatten)]
        paths: Paths,
        /// Active sessions (and bearer tokens) per case.
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,100000")]
        counts: Vec<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// What revocation costs (issue 12): the compiled filter's per-request cost with 10,000 revocations in
    /// shared data, and the issuer's revocation feed under 1,000 polling gateways, as JSON in `--out`
    /// (started by `run`).
    Revocation {
        #[command(flatten)]
        paths: Paths,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        quick: bool,
    },
    /// Only the refresh-token load against our issuer, printed as JSON (for profiling and trying changes;
    /// `run` measures it side by side with oidc-provider).
    Refresh {
        #[command(flatten)]
        paths: Paths,
        /// RS256, ES256 or EdDSA.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// `oauth2.accessTokenFormat`: `jwt` (two signatures per refresh) or `opaque` (one).
        #[arg(long, default_value = "jwt")]
        access_token_format: String,
        /// Connections, each chaining its own refresh tokens.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Measured seconds (after 3 s of warm-up).
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
}

impl Paths {
    fn target() -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
    }
    fn filter_wasm(&self) -> PathBuf {
        self.filter_wasm.clone().unwrap_or_else(|| Self::target().join("wasm32-wasip1/release/filter.wasm"))
    }
    fn noop_wasm(&self) -> PathBuf {
        self.noop_wasm.clone().unwrap_or_else(|| Self::target().join("wasm32-wasip1/release/noop_filter.wasm"))
    }
    fn issuer_bin(&self) -> PathBuf {
        self.issuer_bin.clone().unwrap_or_else(|| Self::target().join("release/issuer"))
    }
    fn node_dir(&self) -> PathBuf {
        self.node_dir.clone().unwrap_or_else(|| Self::target().join("bench-node"))
    }
    fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| Self::target().join("bench-work"))
    }
    fn args(&self) -> Vec<String> {
        let mut a = vec![];
        for (flag, v) in [
            ("--filter-wasm", self.filter_wasm()),
            ("--noop-wasm", self.noop_wasm()),
            ("--issuer-bin", self.issuer_bin()),
            ("--node-dir", self.node_dir()),
            ("--work-dir", self.work_dir()),
        ] {
            a.push(flag.to_owned());
            a.push(v.display().to_string());
        }
        a
    }
}

/// How hard and how long each part runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub(crate) repeated: usize,
    pub(crate) first_sight: usize,
    pub(crate) refresh_connections: usize,
    pub(crate) warmup_secs: u64,
    pub(crate) measure_secs: u64,
    pub(crate) wrk_threads: usize,
    pub(crate) wrk_connections: usize,
    pub(crate) wrk_secs: u64,
    pub(crate) login_concurrency: usize,
}

impl Plan {
    fn new(quick: bool, cores: usize) -> Plan {
        Plan {
            repeated: if quick { 2_000 } else { 20_000 },
            first_sight: if quick { 100 } else { 1_000 },
            refresh_connections: 16,
            warmup_secs: if quick { 1 } else { 3 },
            measure_secs: if quick { 2 } else { 15 },
            wrk_threads: 1,
            wrk_connections: 32,
            wrk_secs: if quick { 2 } else { 10 },
            login_concurrency: 2 * cores,
        }
    }
    fn sizes(&self) -> Sizes {
        Sizes { repeated: self.repeated, first_sight: self.first_sight }
    }
    fn window(&self) -> Window {
        Window { warmup: Duration::from_secs(self.warmup_secs), measure: Duration::from_secs(self.measure_secs) }
    }
}

/// One server's refresh-token figures for one algorithm and access-token format.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RefreshRun {
    pub(crate) alg: String,
    /// `jwt` (signed like the ID token) or `opaque` (oidc-provider's are opaque).
    #[serde(default)]
    pub(crate) access_token_format: String,
    pub(crate) refresh: Throughput,
    pub(crate) idle: Rss,
    pub(crate) loaded: Rss,
    pub(crate) command: String,
}

/// Everything a run measured; parts that failed carry their error instead of figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) machine: Machine,
    pub(crate) plan: Plan,
    pub(crate) filter_wasm_bytes: u64,
    pub(crate) noop_wasm_bytes: u64,
    pub(crate) filter: FilterOutput,
    pub(crate) native: Native,
    pub(crate) issuer: Vec<RefreshRun>,
    pub(crate) oidc_provider: Vec<RefreshRun>,
    pub(crate) discovery: Option<WrkResult>,
    pub(crate) jwks: Option<WrkResult>,
    pub(crate) logins: Option<Throughput>,
    pub(crate) profiles: Vec<profile::Profile>,
    /// Many sessions and bearer tokens (`bench sessions`).
    #[serde(default)]
    pub(crate) sessions: Vec<sessions::Row>,
    /// Revocation's costs (`bench revocation`).
    #[serde(default)]
    pub(crate) revocation: Option<revocation::RevocationResult>,
    /// The `ldap` connector against slapd.
    #[serde(default)]
    pub(crate) ldap: Option<ldap::LdapResult>,
    /// Refresh latency through the `oidc` connector.
    #[serde(default)]
    pub(crate) federation: Option<federation::FederationResult>,
    pub(crate) build_commands: Vec<String>,
    pub(crate) bench_commands: Vec<String>,
    pub(crate) errors: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread, like a Node load client: the servers under test get the other cores.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Command::Run { paths, out, commands_file, quick } => {
            rt.block_on(run(paths, &out, commands_file.as_deref(), quick))
        }
        Command::Filter { paths, wasm, noop, out, quick, profile, seconds, perf_control } => rt.block_on(async move {
            let plan = Plan::new(quick, 1);
            if let Some(case) = profile {
                let control = perf_control.as_deref();
                let n =
                    filter::run_profile(&wasm, &paths.issuer_bin(), &paths.work_dir(), &case, seconds, control).await?;
                std::fs::write(&out, serde_json::to_vec(&n)?)?;
                return Ok(());
            }
            let result = if noop {
                filter::run_noop(&wasm, plan.sizes()).await?
            } else {
                filter::run_filter(&wasm, &paths.issuer_bin(), &paths.work_dir(), plan.sizes()).await?
            };
            std::fs::write(&out, serde_json::to_vec_pretty(&result)?)?;
            Ok(())
        }),
        Command::Ldap { quick, concurrency } => rt.block_on(async move {
            let mut result = serde_json::to_value(ldap::measure(quick, concurrency).await?)?;
            let work = std::env::temp_dir().join("tokengate-bench-federation");
            result["federation"] = serde_json::to_value(federation::measure(&work, quick).await?)?;
            #[allow(clippy::print_stdout)] // the figures are this command's output
            {
                println!("{}", serde_json::to_string_pretty(&result)?);
            }
            Ok(())
        }),
        Command::Revocation { paths, out, quick } => rt.block_on(async move {
            let result = revocation::run(&paths.filter_wasm(), &paths.issuer_bin(), &paths.work_dir(), quick).await?;
            std::fs::write(&out, serde_json::to_vec_pretty(&result)?)?;
            Ok(())
        }),
        Command::Sessions { paths, counts, out } => rt.block_on(async move {
            let rows = sessions::run(&paths.filter_wasm(), &paths.work_dir(), &counts).await?;
            std::fs::write(&out, serde_json::to_vec_pretty(&rows)?)?;
            Ok(())
        }),
        Command::Refresh { paths, alg, access_token_format: format, connections, seconds } => rt.block_on(async move {
            let dir = paths.work_dir().join(format!("issuer-{alg}-{format}"));
            let mut server = issuer::start(&paths.issuer_bin(), &dir, &alg, &format).await?;
            eprintln!("bench: issuer {alg} ({format} access tokens) is pid {} at {}", server.pid(), server.url);
            let outcome = async {
                let tokens = load::initial_refresh_tokens(&server.url, connections, 4).await?;
                let window = Window { warmup: Duration::from_secs(3), measure: Duration::from_secs(seconds) };
                load::refreshes(&server.url, server.pid(), tokens, window).await
            }
            .await;
            server.stop().await;
            #[allow(clippy::print_stdout)] // the figures are this command's output
            {
                println!("{}", serde_json::to_string_pretty(&outcome?)?);
            }
            Ok(())
        }),
    }
}

/// Starts `bench filter` for one module and reads what it measured.
async fn filter_child(
    paths: &Paths,
    wasm: &Path,
    noop: bool,
    quick: bool,
    commands: &mut Vec<String>,
) -> anyhow::Result<FilterOutput> {
    let exe = std::env::current_exe()?;
    let out = paths.work_dir().join(if noop { "filter-noop.json" } else { "filter.json" });
    let mut args = vec!["filter".to_owned()];
    args.extend(paths.args());
    args.extend(["--wasm".to_owned(), wasm.display().to_string(), "--out".to_owned(), out.display().to_string()]);
    if noop {
        args.push("--noop".to_owned());
    }
    if quick {
        args.push("--quick".to_owned());
    }
    commands.push(format!("bench {}", args.join(" ")));
    let status = tokio::process::Command::new(&exe).args(&args).status().await?;
    if !status.success() {
        bail!("bench filter{} failed ({status})", if noop { " --noop" } else { "" });
    }
    Ok(serde_json::from_slice(&std::fs::read(&out)?)?)
}

async fn revocation_part(paths: &Paths, quick: bool, results: &mut Results) -> anyhow::Result<()> {
    let out = paths.work_dir().join("revocation.json");
    let mut args = vec!["revocation".to_owned()];
    args.extend(paths.args());
    args.extend(["--out".to_owned(), out.display().to_string()]);
    if quick {
        args.push("--quick".into());
    }
    results.bench_commands.push(format!("bench {}", args.join(" ")));
    let status = tokio::process::Command::new(std::env::current_exe()?).args(&args).status().await?;
    if !status.success() {
        bail!("bench revocation failed ({status})");
    }
    results.revocation = Some(serde_json::from_slice(&std::fs::read(&out)?)?);
    Ok(())
}

async fn sessions_part(paths: &Paths, quick: bool, results: &mut Results) -> anyhow::Result<()> {
    let out = paths.work_dir().join("sessions.json");
    let counts = if quick { "100,1000" } else { "100,1000,10000,100000" };
    let mut args = vec!["sessions".to_owned()];
    args.extend(paths.args());
    args.extend(["--counts".to_owned(), counts.to_owned(), "--out".to_owned(), out.display().to_string()]);
    results.bench_commands.push(format!("bench {}", args.join(" ")));
    let status = tokio::process::Command::new(std::env::current_exe()?).args(&args).status().await?;
    if !status.success() {
        bail!("bench sessions failed ({status})");
    }
    results.sessions = serde_json::from_slice(&std::fs::read(&out)?)?;
    Ok(())
}

async fn filter_part(paths: &Paths, quick: bool, results: &mut Results) -> anyhow::Result<()> {
    let noop = filter_child(paths, &paths.noop_wasm(), true, quick, &mut results.bench_commands).await?;
    let real = filter_child(paths, &paths.filter_wasm(), false, quick, &mut results.bench_commands).await?;
    results.filter.cases.extend(noop.cases);
    results.filter.cases.extend(real.cases);
    results.filter.checks.extend(real.checks);
    Ok(())
}

/// The issuer with `alg` and access tokens in `format`: refreshes, RSS, and (once, with the default `jwt`)
/// discovery, JWKS and logins.
async fn issuer_part(paths: &Paths, plan: &Plan, alg: &str, format: &str, results: &mut Results) -> anyhow::Result<()> {
    let dir = paths.work_dir().join(format!("issuer-{alg}-{format}"));
    let mut server = issuer::start(&paths.issuer_bin(), &dir, alg, format).await?;
    results
        .bench_commands
        .push(format!("{}   # config: {}", server.command, "issuer.yaml generated by bench/src/issuer.rs"));
    let outcome = async {
        let idle = server.rss();
        let tokens = load::initial_refresh_tokens(&server.url, plan.refresh_connections, 4).await?;
        let refresh = load::refreshes(&server.url, server.pid(), tokens, plan.window()).await?;
        let loaded = server.rss();
        results.issuer.push(RefreshRun {
            alg: alg.to_owned(),
            access_token_format: format.to_owned(),
            refresh,
            idle,
            loaded,
            command: server.command.clone(),
        });
        if alg == "RS256" && format == "jwt" {
            let (t, c, s) = (plan.wrk_threads, plan.wrk_connections, plan.wrk_secs);
            let d = wrk::run(&format!("{}/.well-known/openid-configuration", server.url), t, c, s)?;
            results.bench_commands.push(d.command.clone());
            results.discovery = Some(d);
            let j = wrk::run(&format!("{}/keys", server.url), t, c, s)?;
            results.bench_commands.push(j.command.clone());
            results.jwks = Some(j);
            // Side by side: the bare bcrypt rate just before and just after the logins, averaged, on as
            // many threads as there are concurrent logins (a busy machine shares its cores per thread).
            let secs = Duration::from_secs(plan.warmup_secs + plan.measure_secs) / 2;
            let threads = plan.login_concurrency;
            let (before, ms_before, cost) = native::bcrypt_rate(issuer::PASSWORD_HASH, threads, secs);
            results.logins = Some(load::logins(&server.url, server.pid(), threads, plan.window()).await?);
            let (after, ms_after, _) = native::bcrypt_rate(issuer::PASSWORD_HASH, threads, secs);
            results.native.bcrypt_per_sec = (before + after) / 2.0;
            results.native.bcrypt_cpu_ms = (ms_before + ms_after) / 2.0;
            results.native.bcrypt_threads = threads;
            results.native.bcrypt_cost = cost;
            if let Some(last) = results.issuer.last_mut() {
                last.loaded = server.rss();
            }
        }
        anyhow::Ok(())
    }
    .await;
    server.stop().await;
    outcome
}

async fn oidc_provider_part(paths: &Paths, plan: &Plan, alg: &str, results: &mut Results) -> anyhow::Result<()> {
    let mut server = oidc_provider::start(&paths.node_dir(), alg).await?;
    results.bench_commands.push(format!("(cd {} && {})", paths.node_dir().display(), server.command));
    let outcome = async {
        let idle = server.rss();
        let tokens = oidc_provider::seed(&server, plan.refresh_connections).await?;
        let refresh = load::refreshes(&server.url, server.pid(), tokens, plan.window()).await?;
        let loaded = server.rss();
        results.oidc_provider.push(RefreshRun {
            alg: alg.to_owned(),
            access_token_format: "opaque".to_owned(),
            refresh,
            idle,
            loaded,
            command: server.command.clone(),
        });
        anyhow::Ok(())
    }
    .await;
    server.stop().await;
    outcome
}

async fn run(paths: Paths, out: &Path, commands_file: Option<&Path>, quick: bool) -> anyhow::Result<()> {
    let machine = Machine::probe(&paths.node_dir());
    let plan = Plan::new(quick, machine.nproc);
    std::fs::create_dir_all(paths.work_dir())?;
    let size = |p: PathBuf| {
        std::fs::metadata(&p).map(|m| m.len()).with_context(|| format!("{} (build it first)", p.display()))
    };
    let mut results = Results {
        filter_wasm_bytes: size(paths.filter_wasm())?,
        noop_wasm_bytes: size(paths.noop_wasm())?,
        machine,
        plan,
        filter: FilterOutput::default(),
        native: Native::default(),
        issuer: vec![],
        oidc_provider: vec![],
        discovery: None,
        jwks: None,
        logins: None,
        build_commands: commands_file
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default(),
        profiles: vec![],
        sessions: vec![],
        revocation: None,
        ldap: None,
        federation: None,
        bench_commands: vec![],
        errors: vec![],
    };
    let step = |what: &str| eprintln!("bench: {what}");

    step("filter (wasmtime host)");
    if let Err(e) = filter_part(&paths, quick, &mut results).await {
        results.errors.push(format!("filter: {e:#}"));
    }
    // The targets per request are missed here by more than noise: profile where the time goes.
    if profile::available() {
        for case in ["cached", "session"] {
            step(&format!("profile of the {case} case (perf)"));
            match profile::record(&paths, case, if quick { 2 } else { 5 }, &mut results.bench_commands).await {
                Ok(p) => results.profiles.push(p),
                Err(e) => results.errors.push(format!("profile {case}: {e:#}")),
            }
        }
    }
    step("many sessions and bearer tokens (wasmtime host)");
    if let Err(e) = sessions_part(&paths, quick, &mut results).await {
        results.errors.push(format!("sessions: {e:#}"));
    }
    step("revocation: the filter with 10,000 revocations, the feed under 1,000 gateways");
    if let Err(e) = revocation_part(&paths, quick, &mut results).await {
        results.errors.push(format!("revocation: {e:#}"));
    }
    step("ldap connector against slapd");
    match ldap::measure(quick, plan.login_concurrency.max(4)).await {
        Ok(l) => results.ldap = Some(l),
        Err(e) => results.errors.push(format!("ldap: {e:#}")),
    }
    step("refresh through the oidc connector");
    match federation::measure(&paths.work_dir(), quick).await {
        Ok(f) => results.federation = Some(f),
        Err(e) => results.errors.push(format!("federation: {e:#}")),
    }
    step("native reference rates");
    match native::measure(&paths.work_dir(), quick) {
        Ok(n) => results.native = n,
        Err(e) => results.errors.push(format!("native rates: {e:#}")),
    }
    // Side by side: each algorithm against our issuer, then at once against oidc-provider.
    for alg in ["RS256", "ES256"] {
        // Both access-token formats: a JWT access token costs a second signature per refresh.
        for format in ["jwt", "opaque"] {
            step(&format!("issuer {alg}, {format} access tokens"));
            if let Err(e) = issuer_part(&paths, &plan, alg, format, &mut results).await {
                results.errors.push(format!("issuer {alg} ({format} access tokens): {e:#}"));
            }
        }
        step(&format!("oidc-provider {alg}"));
        if let Err(e) = oidc_provider_part(&paths, &plan, alg, &mut results).await {
            results.errors.push(format!("oidc-provider {alg}: {e:#}"));
        }
    }

    results.machine.load_at_end = machine::load_average();
    std::fs::write(paths.work_dir().join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    std::fs::write(out, report::markdown(&results, quick))?;
    step(&format!("wrote {}", out.display()));
    if !results.errors.is_empty() {
        bail!("some benchmarks failed (see {}):\n{}", out.display(), results.errors.join("\n"));
    }
    Ok(())
}
