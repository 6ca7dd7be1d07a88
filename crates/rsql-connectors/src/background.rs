//! The first error of a sink's background task (an interval flush), kept until the sink's next
//! call reports it.

use std::sync::{Arc, Mutex};

use rsql_common::{Result, RsqlError};

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
