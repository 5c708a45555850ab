//! Background garbage collection of expired records, in bounded batches so a backlog never holds the
//! database for long.

use std::time::Duration;

use crate::state::AppState;

/// Records removed per kind per batch.
pub const BATCH: u32 = 500;

/// What one [`drain`] did: how much went, in how many batches, and the longest single batch (a batch holds
/// its rows' locks until it commits, so this bounds how long garbage collection can block a request).
#[derive(Debug, Clone, Copy, Default)]
pub struct Drained {
    /// Records removed.
    pub removed: u64,
    /// Batches run (one `garbage_collect` and one revocation cut each).
    pub batches: u32,
    /// The most records one kind lost in one batch: never more than [`BATCH`].
    pub largest_batch: u64,
    /// The longest batch.
    pub longest_batch: Duration,
}

/// Removes everything expired at the state's `now`, batch after batch; returns how many went.
pub async fn collect(state: &AppState) -> Result<u64, crate::storage::StorageError> {
    Ok(drain(state).await?.removed)
}

/// [`collect`], reporting the batches it took.
pub async fn drain(state: &AppState) -> Result<Drained, crate::storage::StorageError> {
    let mut d = Drained::default();
    loop {
        let started = std::time::Instant::now();
        let now = state.clock.now();
        let r = state.storage.garbage_collect(now, BATCH).await?;
        let cutoff = now - crate::revocation::horizon(&state.config).as_secs() as i64;
        let revocations = state.storage.delete_revocations_before(cutoff, BATCH).await?;
        d.longest_batch = d.longest_batch.max(started.elapsed());
        d.batches += 1;
        d.removed += r.total() + revocations;
        let counts =
            [r.auth_requests, r.auth_codes, r.refresh_tokens, r.buckets, r.device_requests, r.sessions, revocations];
        d.largest_batch = d.largest_batch.max(counts.iter().copied().max().unwrap_or(0));
        if !counts.iter().any(|n| *n == u64::from(BATCH)) {
            return Ok(d);
        }
        tokio::task::yield_now().await;
    }
}

/// Runs `collect` every `every` until the process ends.
pub async fn run(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match collect(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "garbage collected"),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}
