//! The Redis I/O thread: a current-thread runtime of its own, on which every command
//! connection is made and so runs its driver (redis-rs spawns a connection's driver where the
//! connection is made).
//!
//! On the workers, a driver woken by Redis's reply waits its turn behind every task queued
//! there; under a saturated fan-out that is a thousand writers, and a `POST /api/publish` waited
//! milliseconds for a reply that Redis sent within microseconds. Here the driver is woken at
//! once; only the task that sent the command waits for a worker, once.

use std::sync::LazyLock;

use tokio::runtime::{Builder, Handle};
use tokio::task::JoinHandle;

static THREAD: LazyLock<Handle> = LazyLock::new(|| {
    let runtime = Builder::new_current_thread().enable_all().build().expect("the Redis I/O runtime builds");
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("herald-redis".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .expect("the Redis I/O thread starts");
    handle
});

/// Runs `future` on the Redis I/O thread; the handle gives its output. Spawned at once rather
/// than when awaited, so the caller's future holds a handle, not `future` (a connection's setup
/// is kilobytes, and every pooled command's future had room for it).
pub(super) fn run<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
    THREAD.spawn(future)
}
