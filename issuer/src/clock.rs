//! Time as a value. Handlers ask the clock instead of the system, so tests can move time forward instead
//! of sleeping (an expired code, a rotated key, a refilled login bucket).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock, or (in tests) a frozen one that only `advance` moves.
#[derive(Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
    frozen: bool,
}

fn system_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock stopped at the current time: results never depend on how fast the machine is.
    pub fn frozen() -> Self {
        Self { offset_ms: Arc::new(AtomicI64::new(system_ms())), frozen: true }
    }

    /// Unix time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        let base = if self.frozen { 0 } else { system_ms() };
        base + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Unix time in seconds.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Unix time in fractional seconds.
    pub fn now_f64(&self) -> f64 {
        self.now_ms() as f64 / 1000.0
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.offset_ms.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}
