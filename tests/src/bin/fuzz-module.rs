//! `fuzz-module`: drives random and hostile requests, upstream answers and issuer answers through the
//! compiled filter (see `tests::fuzz`), then prints the runs and the traps. Exits 1 on any trap or stall,
//! printing each with the request that caused it; `--seed` replays a run exactly.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Fuzz the compiled filter.wasm through the proxy-wasm test host")]
struct Args {
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Stop after this many requests.
    #[arg(long, default_value_t = u64::MAX)]
    runs: u64,
    /// PRNG seed [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// The filter [default: TOKENGATE_WASM, else the `make wasm` output].
    #[arg(long)]
    wasm: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let wasm = args.wasm.unwrap_or_else(tests::wasm_path);
    tests::preload(&wasm)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let report = tests::fuzz::run(seed, args.runs, Duration::from_secs(args.seconds)).await?;
    for t in &report.traps {
        eprintln!("TRAP: {t}");
    }
    for s in &report.stalls {
        eprintln!("STALL: {s}");
    }
    println!(
        "fuzz-module: seed {seed}: {} runs, {} traps, {} stalls ({})",
        report.runs,
        report.traps.len(),
        report.stalls.len(),
        wasm.display()
    );
    if report.traps.is_empty() && report.stalls.is_empty() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
