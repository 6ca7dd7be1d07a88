//! Processing time: the wall clock in milliseconds since the epoch, behind a function so that
//! state TTL, watermark idleness and the time functions (`NOW()`, `CURRENT_TIMESTAMP`, ...) can
//! be driven by hand in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A processing-time clock returning milliseconds since the epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Milliseconds since the epoch on the wall clock (0 if the clock is before the epoch).
pub fn wall_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(wall_millis)
}

/// A clock that returns what its handle was last set to (starting at `start`).
pub fn manual_clock(start: u64) -> (Arc<AtomicU64>, Clock) {
    let now = Arc::new(AtomicU64::new(start));
    let read = now.clone();
    (now, Arc::new(move || read.load(Ordering::SeqCst)))
}
