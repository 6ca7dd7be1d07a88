//! Changelog operators. Each turns input batches (with row kinds) into output batches; stateful
//! ones keep keyed state encoded with arrow's row format and can snapshot it to bytes.

pub mod aggregate;
#[cfg(test)]
mod bench;
pub mod calc;
pub mod join;
pub mod lookup_join;
pub mod materializer;
pub mod normalize;
pub mod rank;
pub mod state;
pub mod window;
#[cfg(test)]
mod testutil;

use rsql_common::arrow::array::ArrayRef;
use rsql_common::arrow::datatypes::SchemaRef;
use rsql_common::{ChangeBatch, Result, RsqlError};

/// Casts computed columns to the planned schema's types where they differ (decoded state and
/// expression results can differ from the plan in representation only).
pub fn conform(cols: Vec<ArrayRef>, schema: &SchemaRef) -> Result<Vec<ArrayRef>> {
    cols.into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                rsql_common::arrow::compute::cast(&c, f.data_type()).map_err(RsqlError::from)
            }
        })
        .collect()
}

/// A synchronous operator driven by the executor.
pub trait Operator: Send {
    /// Processes one batch from input `input` (0 or 1), appending output batches to `out`.
    fn process(&mut self, input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()>;

    /// Called when the watermark of the inputs (the smallest over the open inputs, in
    /// milliseconds) advances, before it is passed on; event-time operators emit what it
    /// completes into `out`. Returns the watermark to pass on (None: pass nothing).
    fn on_watermark(&mut self, watermark: i64, _out: &mut Vec<ChangeBatch>) -> Result<Option<i64>> {
        Ok(Some(watermark))
    }

    /// A watermark the operator generated itself while processing (watermark assigners), to
    /// send after the batches of the last `process`.
    fn generated_watermark(&mut self) -> Option<i64> {
        None
    }

    /// The period of the operator's processing-time timer (None: it has none).
    fn timer_period(&self) -> Option<std::time::Duration> {
        None
    }

    /// The processing-time timer fired; `now` is milliseconds since the epoch. What the operator
    /// emits goes to `out`, watermarks and idleness to `generated_watermark` / `generated_idleness`.
    fn on_timer(&mut self, _now: u64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        Ok(())
    }

    /// A change of the idleness the operator generated itself since it was last asked (true: its
    /// output is idle and must not hold back downstream watermarks; false: active again).
    fn generated_idleness(&mut self) -> Option<bool> {
        None
    }

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
