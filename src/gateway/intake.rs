//! Back-pressure on `POST /api/publish`: how many messages may be in flight to the broker at
//! once (`max_pending_publishes`), and whether this instance's fan-out keeps up with what it
//! receives. A publish that finds either full waits, up to `publish_wait`; past that it is
//! refused with 503 and `Retry-After`, instead of queueing without limit while Redis or the
//! fan-out falls behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::broker::Subscriber;
use crate::config::Config;

/// How often a publish waiting for the fan-out to catch up looks again.
const BEHIND_POLL: Duration = Duration::from_millis(5);

pub(super) struct Intake {
    slots: Arc<Semaphore>,
    max: usize,
    wait: Duration,
}

/// The intake is full: the caller should retry after `retry_after`.
pub(super) struct Overloaded {
    pub(super) retry_after: Duration,
}

impl Intake {
    pub(super) fn new(config: &Config) -> Self {
        let max = config.max_pending_publishes.max(1);
        Self { slots: Arc::new(Semaphore::new(max)), max, wait: config.publish_wait }
    }

    /// Waits until `messages` more may be in flight and the fan-out keeps up; the permit holds
    /// their places until it is dropped (once they are published).
    pub(super) async fn admit(
        &self,
        messages: usize,
        subscriber: &dyn Subscriber,
    ) -> Result<OwnedSemaphorePermit, Overloaded> {
        let wanted = u32::try_from(messages.clamp(1, self.max)).unwrap_or(u32::MAX);
        let admitted = async {
            let permit =
                self.slots.clone().acquire_many_owned(wanted).await.expect("the intake is never closed");
            while subscriber.is_behind() {
                tokio::time::sleep(BEHIND_POLL).await;
            }
            permit
        };
        tokio::time::timeout(self.wait, admitted)
            .await
            .map_err(|_| Overloaded { retry_after: self.wait.max(Duration::from_secs(1)) })
    }
}
