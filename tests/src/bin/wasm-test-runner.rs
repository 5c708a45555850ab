//! Runs a `wasm32-wasip1` test binary under wasmtime, so the filter's unit tests also run compiled to wasm
//! (32-bit sizes, WASI randomness and clocks: the bugs that only show up there). Cargo calls it as the
//! target runner: `CARGO_TARGET_WASM32_WASIP1_RUNNER=…/wasm-test-runner cargo test -p filter --target
//! wasm32-wasip1`. It provides the WASI preview1 calls a Rust test harness makes (arguments, stdout and
//! stderr, clocks, randomness, exit); any other call traps with its name, so a gap is loud, never silent.
#![allow(clippy::print_stdout)] // the test binary's output is the product

use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Engine, Extern, Linker, Memory, Module, Store};

const WASI: &str = "wasi_snapshot_preview1";
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;

/// `proc_exit` unwinds the guest with this.
#[derive(Debug)]
struct Exit(i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

struct Ctx {
    args: Vec<Vec<u8>>,
}

fn memory(caller: &mut Caller<'_, Ctx>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn write_u32(caller: &mut Caller<'_, Ctx>, mem: &Memory, at: i32, v: u32) -> bool {
    mem.write(caller, at as u32 as usize, &v.to_le_bytes()).is_ok()
}

fn read_u32(caller: &mut Caller<'_, Ctx>, mem: &Memory, at: u32) -> Option<u32> {
    let mut b = [0u8; 4];
    mem.read(caller, at as usize, &mut b).ok()?;
    Some(u32::from_le_bytes(b))
}

fn link(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    linker.func_wrap(WASI, "args_sizes_get", |mut c: Caller<'_, Ctx>, count: i32, size: i32| -> i32 {
        let Some(mem) = memory(&mut c) else { return ERRNO_INVAL };
        let n = c.data().args.len() as u32;
        let bytes = c.data().args.iter().map(|a| a.len() as u32 + 1).sum();
        if write_u32(&mut c, &mem, count, n) && write_u32(&mut c, &mem, size, bytes) {
            ERRNO_SUCCESS
        } else {
            ERRNO_INVAL
        }
    })?;
    linker.func_wrap(WASI, "args_get", |mut c: Caller<'_, Ctx>, argv: i32, buf: i32| -> i32 {
        let Some(mem) = memory(&mut c) else { return ERRNO_INVAL };
        let args = c.data().args.clone();
        let mut at = buf as u32;
        for (i, a) in args.iter().enumerate() {
            let mut z = a.clone();
            z.push(0);
            if !write_u32(&mut c, &mem, argv + 4 * i as i32, at) || mem.write(&mut c, at as usize, &z).is_err() {
                return ERRNO_INVAL;
            }
            at += z.len() as u32;
        }
        ERRNO_SUCCESS
    })?;
    linker.func_wrap(WASI, "environ_sizes_get", |mut c: Caller<'_, Ctx>, count: i32, size: i32| -> i32 {
        let Some(mem) = memory(&mut c) else { return ERRNO_INVAL };
        if write_u32(&mut c, &mem, count, 0) && write_u32(&mut c, &mem, size, 0) {
            ERRNO_SUCCESS
        } else {
            ERRNO_INVAL
        }
    })?;
    linker.func_wrap(WASI, "environ_get", |_: Caller<'_, Ctx>, _: i32, _: i32| -> i32 { ERRNO_SUCCESS })?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, Ctx>, fd: i32, iovs: i32, len: i32, written: i32| -> i32 {
            let Some(mem) = memory(&mut c) else { return ERRNO_INVAL };
            let mut out = Vec::new();
            for i in 0..len as u32 {
                let base = iovs as u32 + 8 * i;
                let (Some(ptr), Some(n)) = (read_u32(&mut c, &mem, base), read_u32(&mut c, &mem, base + 4)) else {
                    return ERRNO_INVAL;
                };
                let mut chunk = vec![0u8; n as usize];
                if mem.read(&c, ptr as usize, &mut chunk).is_err() {
                    return ERRNO_INVAL;
                }
                out.extend_from_slice(&chunk);
            }
            let ok = match fd {
                1 => std::io::stdout().write_all(&out).and_then(|_| std::io::stdout().flush()).is_ok(),
                2 => std::io::stderr().write_all(&out).is_ok(),
                _ => return ERRNO_BADF,
            };
            if ok && write_u32(&mut c, &mem, written, out.len() as u32) {
                ERRNO_SUCCESS
            } else {
                ERRNO_INVAL
            }
        },
    )?;
    linker.func_wrap(WASI, "clock_time_get", |mut c: Caller<'_, Ctx>, id: i32, _precision: i64, at: i32| -> i32 {
        let Some(mem) = memory(&mut c) else { return ERRNO_INVAL };
        // 0 = realtime, 1 = monotonic: the system clock serves both (it never goes back within a test run
        // often enough to matter, and the tests under this runner take time as a value anyway).
        if id != 0 && id != 1 {
            return ERRNO_INVAL;
        }
        let ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        if mem.write(&mut c, at as u32 as usize, &ns.to_le_bytes()).is_ok() {
            ERRNO_SUCCESS
        } else {
            ERRNO_INVAL
        }
    })?;
    linker.func_wrap(WASI, "random_get", |mut c: Caller<'_, Ctx>, buf: i32, len: i32| -> i32 {
        let Some(mem) = memory(&mut c) else { return ERRNO_INVAL };
        let mut bytes = vec![0u8; len as u32 as usize];
        let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok();
        if filled && mem.write(&mut c, buf as u32 as usize, &bytes).is_ok() {
            ERRNO_SUCCESS
        } else {
            ERRNO_INVAL
        }
    })?;
    linker.func_wrap(WASI, "proc_exit", |_: Caller<'_, Ctx>, code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(Exit(code)))
    })?;
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, Ctx>| -> i32 { ERRNO_SUCCESS })?;
    // No files: the standard library asks about descriptors (is stdout a terminal? which directories are
    // preopened?) and takes "bad descriptor" as "no".
    linker.func_wrap(WASI, "fd_fdstat_get", |_: Caller<'_, Ctx>, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
    linker.func_wrap(WASI, "fd_prestat_get", |_: Caller<'_, Ctx>, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
    linker
        .func_wrap(WASI, "fd_prestat_dir_name", |_: Caller<'_, Ctx>, _: i32, _: i32, _: i32| -> i32 { ERRNO_BADF })?;
    linker.func_wrap(WASI, "fd_close", |_: Caller<'_, Ctx>, _: i32| -> i32 { ERRNO_BADF })?;
    linker
        .func_wrap(WASI, "poll_oneoff", |_: Caller<'_, Ctx>, _: i32, _: i32, _: i32, _: i32| -> i32 { ERRNO_NOSYS })?;
    Ok(())
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: wasm-test-runner FILE.wasm [ARGS…]");
        std::process::exit(2);
    }
    // libtest cannot spawn threads on wasm32-wasip1.
    if !args.iter().any(|a| a.starts_with("--test-threads")) {
        args.push("--test-threads=1".into());
    }
    let code = match run(&args) {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => *code,
            None => {
                eprintln!("wasm-test-runner: {}: {e:?}", args[0]);
                101
            }
        },
    };
    std::process::exit(code);
}

fn run(args: &[String]) -> wasmtime::Result<()> {
    let engine = Engine::default();
    let module = Module::from_binary(&engine, &std::fs::read(&args[0])?)?;
    let mut linker = Linker::new(&engine);
    link(&mut linker)?;
    linker.define_unknown_imports_as_traps(&module)?;
    let mut store = Store::new(&engine, Ctx { args: args.iter().map(|a| a.clone().into_bytes()).collect() });
    let instance = linker.instantiate(&mut store, &module)?;
    instance.get_typed_func::<(), ()>(&mut store, "_start")?.call(&mut store, ())
}
