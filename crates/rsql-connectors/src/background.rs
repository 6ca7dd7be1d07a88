//! A sink's background interval flush: the task that writes a buffer out once its oldest row has
//! waited `sink.buffer-flush.interval`, and the slot that keeps the task's first error until the
//! sink's next call reports it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rsql_common::{Result, RsqlError};
use tokio::task::JoinHandle;

/// A sink's buffer that [`spawn_interval_flusher`] writes out.
#[async_trait]
pub(crate) trait IntervalBuffer: Send + 'static {
    /// When the oldest buffered row arrived; None when the buffer is empty.
    fn oldest(&self) -> Option<Instant>;
    /// Writes the buffer out.
    async fn flush_interval(&mut self) -> Result<()>;
}

/// Looks at `shared` every quarter of `interval` (10 ms to 1 s) and flushes it once its oldest
/// row is `interval` old. The first error is logged, put in `slot`, and ends the task.
pub(crate) fn spawn_interval_flusher<T: IntervalBuffer>(
    shared: Arc<tokio::sync::Mutex<T>>,
    interval: Duration,
    slot: ErrorSlot,
) -> JoinHandle<()> {
    let tick = (interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let mut b = shared.lock().await;
            if b.oldest().is_some_and(|s| s.elapsed() >= interval) {
                if let Err(e) = b.flush_interval().await {
                    tracing::error!("{e}");
                    slot.put(e);
                    return;
                }
            }
        }
    })
}

/// Shared between a sink and its background task; clones refer to the same slot.
#[derive(Clone, Default)]
pub(crate) struct ErrorSlot(Arc<Mutex<Option<RsqlError>>>);

impl ErrorSlot {
    /// Keeps `e` unless an earlier error is already waiting.
    pub(crate) fn put(&self, e: RsqlError) {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.get_or_insert(e);
    }

    /// Fails with the waiting error, if any (and clears it).
    pub(crate) fn check(&self) -> Result<()> {
        let e = match self.0.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        match e {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_error_until_checked() {
        let slot = ErrorSlot::default();
        assert!(slot.check().is_ok());
        slot.clone().put(RsqlError::execution("first"));
        slot.put(RsqlError::execution("second"));
        assert!(slot.check().unwrap_err().to_string().contains("first"));
        assert!(slot.check().is_ok());
    }
}
