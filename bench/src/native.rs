//! Native reference rates on this machine: the bare bcrypt verify at the configured cost, JWT signing
//! with the issuer's crypto library (aws-lc-rs), and durable commits (write + fdatasync) on the disk the
//! SQLite database lives on. They say what bounds the issuer's figures.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde::{Deserialize, Serialize};

/// Operations per second on `threads` threads for `for_how_long`.
fn rate(threads: usize, for_how_long: Duration, op: impl Fn() + Sync) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < for_how_long {
                        op();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// The reference rates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Native {
    /// bcrypt verifies per second on all cores, at the cost of the configured hash.
    pub(crate) bcrypt_per_sec: f64,
    pub(crate) bcrypt_cost: u32,
    /// CPU milliseconds per verify.
    pub(crate) bcrypt_cpu_ms: f64,
    /// Threads the rate was measured on (as many as concurrent logins).
    pub(crate) bcrypt_threads: usize,
    /// Microseconds per signature, one thread.
    pub(crate) rs256_sign_us: f64,
    pub(crate) es256_sign_us: f64,
    pub(crate) eddsa_sign_us: f64,
    /// Durable commits per second (4 KiB overwritten in place + fdatasync, as a reused WAL page), one
    /// thread.
    pub(crate) fsync_per_sec: f64,
}

fn sign_us(for_how_long: Duration, sign: impl Fn() + Sync) -> f64 {
    1e6 / rate(1, for_how_long, sign)
}

/// bcrypt verifies of `hash` per second on `threads` threads, the CPU milliseconds each took (this
/// process does nothing else meanwhile), and the hash's cost.
pub(crate) fn bcrypt_rate(hash: &str, threads: usize, for_how_long: Duration) -> (f64, f64, u32) {
    let cost = hash.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(0);
    let cpu = crate::process::cpu_seconds(0);
    let start = Instant::now();
    let per_sec = rate(threads, for_how_long, || {
        let _ = bcrypt::verify(crate::issuer::PASSWORD, hash);
    });
    let count = (per_sec * start.elapsed().as_secs_f64()).max(1.0);
    (per_sec, (crate::process::cpu_seconds(0) - cpu) * 1e3 / count, cost)
}

/// Measures the signature and commit rates; `dir` is where the issuers' databases live. The bcrypt rate
/// is measured beside the logins instead ([`bcrypt_rate`]).
pub(crate) fn measure(dir: &Path, quick: bool) -> anyhow::Result<Native> {
    let secs = Duration::from_secs(if quick { 1 } else { 3 });

    let rng = SystemRandom::new();
    let message = [0x5au8; 600]; // about the size of an ID token's signing input
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| anyhow::anyhow!("RSA key: {e}"))?;
    let rs256_sign_us = sign_us(secs, || {
        let mut sig = vec![0; rsa.public_modulus_len()];
        let _ = rsa.sign(&RSA_PKCS1_SHA256, &rng, &message, &mut sig);
    });
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let es256_sign_us = sign_us(secs, || {
        let _ = ec.sign(&rng, &message);
    });
    let ed = Ed25519KeyPair::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let eddsa_sign_us = sign_us(secs, || {
        let _ = ed.sign(&message);
    });

    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let page = [0u8; 4096];
    file.write_all_at(&page, 0)?;
    file.sync_all()?;
    let fsync_per_sec = rate(1, secs.min(Duration::from_secs(2)), || {
        let _ = file.write_all_at(&page, 0);
        let _ = file.sync_data();
    });
    let _ = std::fs::remove_file(&path);
    Ok(Native {
        bcrypt_per_sec: 0.0,
        bcrypt_cost: 0,
        bcrypt_cpu_ms: 0.0,
        bcrypt_threads: 0,
        rs256_sign_us,
        es256_sign_us,
        eddsa_sign_us,
        fsync_per_sec,
    })
}
