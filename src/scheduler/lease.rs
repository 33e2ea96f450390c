//! Leader election: one replica at a time holds the lease and runs the jobs.
//!
//! The leader renews every third of the TTL; a standby tries to take the lease every tenth of
//! it (at most 500 ms), so after a leader dies a standby leads within TTL + that retry. A leader
//! that cannot reach Redis steps down before its lease could have expired, and one that is shut
//! down releases the lease so a standby takes over at once. Leadership only gates *starting*
//! ticks; duplicates are excluded by the per-tick claim, not by timing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use super::coordinator::Coordinator;

pub(super) async fn hold(
    coordinator: Arc<dyn Coordinator>,
    holder: String,
    ttl: Duration,
    leader: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let renew_every = ttl / 3;
    let retry_every = (ttl / 10).clamp(Duration::from_millis(20), Duration::from_millis(500));
    // When the last successful acquire or renew was sent: the lease lasts at least TTL from then.
    let mut held_since: Option<Instant> = None;
    loop {
        let sent = Instant::now();
        let leading = *leader.borrow();
        let outcome = match leading {
            true => coordinator.renew(&holder, ttl).await,
            false => coordinator.acquire(&holder, ttl).await,
        };
        match outcome {
            Ok(true) => {
                held_since = Some(sent);
                if !leading {
                    tracing::info!(holder, "became scheduler leader");
                    leader.send_replace(true);
                }
            }
            Ok(false) if leading => {
                tracing::warn!(holder, "lost the scheduler lease to another replica");
                leader.send_replace(false);
            }
            Ok(false) => {}
            Err(e) => {
                let expiring = held_since.is_some_and(|t| t.elapsed() + renew_every >= ttl);
                if leading && expiring {
                    tracing::warn!(holder, error = %e, "cannot renew the scheduler lease; stepping down");
                    leader.send_replace(false);
                } else {
                    tracing::debug!(holder, error = %e, "scheduler lease attempt failed");
                }
            }
        }
        let wait = if *leader.borrow() { renew_every } else { retry_every };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sleep(wait) => {}
        }
    }
    if leader.send_replace(false) {
        match coordinator.release(&holder).await {
            Ok(()) => tracing::info!(holder, "released the scheduler lease"),
            Err(e) => tracing::warn!(holder, error = %e, "could not release the scheduler lease"),
        }
    }
}
