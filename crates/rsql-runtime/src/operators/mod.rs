//! Changelog operators. Each turns input batches (with row kinds) into output batches; stateful
//! ones keep keyed state encoded with arrow's row format and can snapshot it to bytes.

pub mod aggregate;
pub mod calc;
pub mod join;
pub mod materializer;
pub mod normalize;
pub mod state;
#[cfg(test)]
mod testutil;

use rsql_common::{ChangeBatch, Result};

/// A synchronous operator driven by the executor.
pub trait Operator: Send {
    /// Processes one batch from input `input` (0 or 1), appending output batches to `out`.
    fn process(&mut self, input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()>;

    /// Called once after every input has ended.
    fn on_end(&mut self, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        Ok(())
    }

    /// The operator's state as bytes (empty for stateless operators).
    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Restores state taken by `snapshot` on an operator built from the same plan.
    fn restore(&mut self, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Approximate bytes of state held.
    fn state_size(&self) -> usize {
        0
    }
}

/// Passes batches through unchanged (UNION ALL).
pub struct PassThrough;

impl Operator for PassThrough {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        out.push(batch);
        Ok(())
    }
}
