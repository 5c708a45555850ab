//! Background garbage collection of expired records, in bounded batches so a backlog never holds the
//! database for long.

use std::time::Duration;

use crate::state::AppState;

/// Records removed per kind per batch.
pub const BATCH: u32 = 500;

/// Removes everything expired at the state's `now`, batch after batch; returns how many went.
pub async fn collect(state: &AppState) -> Result<u64, crate::storage::StorageError> {
    let mut total = 0;
    loop {
        let now = state.clock.now();
        let r = state.storage.garbage_collect(now, BATCH).await?;
        let cutoff = now - crate::revocation::horizon(&state.config).as_secs() as i64;
        let revocations = state.storage.delete_revocations_before(cutoff, BATCH).await?;
        total += r.total() + revocations;
        let full =
            [r.auth_requests, r.auth_codes, r.refresh_tokens, r.buckets, r.device_requests, r.sessions, revocations]
                .iter()
                .any(|n| *n == u64::from(BATCH));
        if !full {
            return Ok(total);
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
