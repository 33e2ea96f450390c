//! Reconnect backoff: full-jitter exponential, so instances that lost Redis together do not
//! come back in lockstep.

use std::time::Duration;

use rand::Rng;

const MIN: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

/// Consecutive failures of one connection, and the delay before the next attempt.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Counts a failure and returns how long to wait before trying again: a random delay
    /// between 100 ms and a cap that doubles with each failure, up to 5 s.
    pub(crate) fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let cap = MIN.saturating_mul(1 << self.failures.min(16)).min(MAX);
        rand::rng().random_range(MIN..=cap.max(MIN))
    }

    /// Failures since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The connection works again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::default();
        let first = backoff.fail();
        assert!((MIN..=MIN * 2).contains(&first), "{first:?}");
        for _ in 0..40 {
            assert!(backoff.fail() <= MAX);
        }
        assert_eq!(backoff.failures(), 41);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
    }
}
