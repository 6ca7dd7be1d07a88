//! Event time: the watermark assigner that turns a table's `WATERMARK FOR` expression into
//! watermarks, the window table functions (TUMBLE, HOP, CUMULATE) that give each row its windows,
//! and the window aggregate that emits each window's groups once the watermark has passed the
//! window's end.
//!
//! Times are timestamp columns in microseconds; watermarks travel in milliseconds, as in Flink.
//! A window `[start, end)` is complete when the watermark reaches `end - 1 ms` (its last
//! millisecond); a row that arrives for a window already complete is late, and is dropped and
//! counted, as Flink's window aggregate drops it.

use std::collections::BTreeMap;

use rsql_common::arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray, UInt32Array};
use rsql_common::arrow::compute::{cast, take};
use rsql_common::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use rsql_common::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use tracing::{info, warn};

use super::aggregate::GroupAggregate;
use super::state::{RowCodec, StateReader, StateWriter};
use super::Operator;
use crate::graph::{AggCall, PhysExpr, WindowSpec};

/// One millisecond in the microseconds of timestamp columns.
const MILLI: i64 = 1000;

/// A timestamp column as i64 microseconds.
fn micros(col: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(col, &DataType::Int64)?)
}

/// Whether a window ending at `end` (microseconds) is complete at `watermark` (milliseconds).
fn fired(end: i64, watermark: i64) -> bool {
    end - MILLI <= watermark.saturating_mul(MILLI)
}

/// When a watermark assigner emits watermarks and when it declares its input idle, in
/// milliseconds of processing time (0: off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatermarkTiming {
    /// `pipeline.auto-watermark-interval`: watermarks are emitted on a timer of this period (and
    /// at once when a batch moves the watermark by more than the period); 0 emits after every
    /// batch that moves it.
    pub interval_ms: u64,
    /// `table.exec.source.idle-timeout`: an input without rows for this long is marked idle.
    pub idle_timeout_ms: u64,
}

impl WatermarkTiming {
    /// The period of the assigner's timer, as Flink picks it: the smaller of the two periods
    /// when it is at least five times smaller than the other, else a fifth of it.
    pub fn timer_period_ms(&self) -> Option<u64> {
        let (w, i) = (self.interval_ms, self.idle_timeout_ms);
        match (w, i) {
            (0, 0) => None,
            (0, x) | (x, 0) => Some(x),
            _ => {
                let (small, large) = (w.min(i), w.max(i));
                Some(if small.saturating_mul(5) < large { small } else { (small / 5).max(1) })
            }
        }
    }
}

/// Generates bounded-out-of-orderness watermarks: the largest value of the watermark expression
/// seen so far, emitted on the timer of `pipeline.auto-watermark-interval` when it advanced, or
/// at once after a batch that moved it by more than the interval. With an idle timeout it marks
/// its output idle when no row came for the timeout, and active again with the next batch, as
/// Flink's WatermarkAssignerOperator does.
pub struct WatermarkAssigner {
    rowtime: usize,
    expr: PhysExpr,
    current: i64,
    /// The last watermark emitted.
    emitted: i64,
    pending: Option<i64>,
    timing: WatermarkTiming,
    /// Batches processed, and how many had been at the last idleness check.
    processed: u64,
    checked_processed: Option<u64>,
    /// Processing time of the last check that saw new batches.
    active_at: u64,
    last_periodic: u64,
    idle: bool,
    status_change: Option<bool>,
}

impl WatermarkAssigner {
    pub fn new(rowtime: usize, expr: PhysExpr) -> Self {
        WatermarkAssigner {
            rowtime,
            expr,
            current: i64::MIN,
            emitted: i64::MIN,
            pending: None,
            timing: WatermarkTiming::default(),
            processed: 0,
            checked_processed: None,
            active_at: 0,
            last_periodic: 0,
            idle: false,
            status_change: None,
        }
    }

    pub fn with_timing(mut self, timing: WatermarkTiming) -> Self {
        self.timing = timing;
        self
    }

    fn advance(&mut self) {
        if self.current > self.emitted {
            self.emitted = self.current;
            self.pending = Some(self.current);
        }
    }
}

impl Operator for WatermarkAssigner {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        debug_assert!(self.rowtime < batch.data.num_columns());
        self.processed += 1;
        if self.idle {
            self.idle = false;
            self.status_change = Some(false);
        }
        let v = self.expr.evaluate(&batch.data)?.into_array(batch.num_rows())?;
        let v = micros(&v)?;
        let v = v.as_primitive::<Int64Type>();
        // Rows whose expression is NULL do not move the watermark.
        if let Some(max) = v.iter().flatten().max() {
            let ms = max.div_euclid(MILLI);
            self.current = self.current.max(ms);
        }
        out.push(batch);
        // Emit at once when the watermark moved by more than the interval (every move when the
        // interval is 0); smaller moves wait for the timer.
        let interval = i64::try_from(self.timing.interval_ms).unwrap_or(i64::MAX);
        if self.current.saturating_sub(self.emitted) > interval {
            self.advance();
        }
        Ok(())
    }

    fn timer_period(&self) -> Option<std::time::Duration> {
        self.timing.timer_period_ms().map(std::time::Duration::from_millis)
    }

    fn on_timer(&mut self, now: u64, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        let t = self.timing;
        if t.interval_ms > 0 && self.last_periodic.saturating_add(t.interval_ms) <= now {
            self.last_periodic = now;
            self.advance();
        }
        if self.checked_processed != Some(self.processed) {
            self.checked_processed = Some(self.processed);
            self.active_at = now;
        }
        if t.idle_timeout_ms > 0 && !self.idle && self.active_at.saturating_add(t.idle_timeout_ms) <= now {
            self.idle = true;
            self.status_change = Some(true);
        }
        Ok(())
    }

    fn generated_idleness(&mut self) -> Option<bool> {
        self.status_change.take()
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<ChangeBatch>) -> Result<Option<i64>> {
        Ok(None)
    }

    fn generated_watermark(&mut self) -> Option<i64> {
        self.pending.take()
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        w.i64(self.current);
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        self.current = StateReader::new(bytes).i64()?;
        // Downstream operators restored their own watermarks: only later ones are news.
        self.emitted = self.current;
        Ok(())
    }
}

/// Assigns windows to rows: each insert-only input row once per window, with the window's
/// start, end and time appended.
pub struct WindowTableFunction {
    time_col: usize,
    spec: WindowSpec,
    schema: SchemaRef,
    describe: String,
    windows: Vec<(i64, i64)>,
}

impl WindowTableFunction {
    pub fn new(time_col: usize, spec: WindowSpec, schema: SchemaRef, describe: &str) -> Self {
        WindowTableFunction { time_col, spec, schema, describe: describe.to_string(), windows: Vec::new() }
    }
}

impl Operator for WindowTableFunction {
    fn process(&mut self, _input: usize, batch: ChangeBatch, out: &mut Vec<ChangeBatch>) -> Result<()> {
        if let Some(k) = batch.kinds.iter().find(|k| **k != RowKind::Insert) {
            return Err(RsqlError::execution(format!("{}: received a {k} row, but a window table function takes only inserts", self.describe)));
        }
        let times = micros(batch.data.column(self.time_col))?;
        let times = times.as_primitive::<Int64Type>();
        let n = batch.num_rows();
        let mut idx: Vec<u32> = Vec::with_capacity(n);
        let mut starts: Vec<i64> = Vec::with_capacity(n);
        let mut ends: Vec<i64> = Vec::with_capacity(n);
        for i in 0..n {
            if times.is_null(i) {
                let name = batch.schema().field(self.time_col).name().clone();
                return Err(RsqlError::execution(format!(
                    "{}: the time attribute '{name}' is NULL in a row; filter such rows out before the window (WHERE {name} IS NOT NULL)",
                    self.describe
                )));
            }
            self.spec.assign(times.value(i), &mut self.windows);
            for &(s, e) in &self.windows {
                idx.push(i as u32);
                starts.push(s);
                ends.push(e);
            }
        }
        if idx.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(idx);
        let mut cols: Vec<ArrayRef> = batch.data.columns().iter().map(|c| take(c.as_ref(), &indices, None)).collect::<std::result::Result<_, _>>()?;
        let times: Vec<i64> = ends.iter().map(|e| e - MILLI).collect();
        cols.push(std::sync::Arc::new(TimestampMicrosecondArray::from(starts)));
        cols.push(std::sync::Arc::new(TimestampMicrosecondArray::from(ends)));
        cols.push(std::sync::Arc::new(TimestampMicrosecondArray::from(times)));
        let cols = super::conform(cols, &self.schema)?;
        let rows = indices.len();
        let data = RecordBatch::try_new_with_options(self.schema.clone(), cols, &RecordBatchOptions::new().with_row_count(Some(rows)))?;
        out.push(ChangeBatch::inserts(data));
        Ok(())
    }
}

/// One pending window of a window aggregate: its groups' accumulators, and each group's
/// latest result row.
struct PendingWindow {
    agg: GroupAggregate,
    /// Group key bytes -> result row bytes.
    results: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Window aggregation: per window, a group aggregate over the window's rows; a window's groups
/// are emitted as inserts when the watermark completes the window, and its state is dropped.
pub struct WindowAggregate {
    input: SchemaRef,
    group: Vec<usize>,
    window_start: usize,
    window_end: usize,
    aggs: Vec<AggCall>,
    schema: SchemaRef,
    describe: String,
    key_codec: RowCodec,
    row_codec: RowCodec,
    /// By (end, start): windows fire in the order of their ends.
    windows: BTreeMap<(i64, i64), PendingWindow>,
    watermark: i64,
    late: u64,
    tmp: Vec<ChangeBatch>,
}

impl WindowAggregate {
    pub fn new(input: SchemaRef, group: &[usize], window_start: usize, window_end: usize, aggs: Vec<AggCall>, schema: SchemaRef, describe: &str) -> Result<Self> {
        let ng = group.len();
        let key_cols: Vec<usize> = (0..ng).collect();
        Ok(WindowAggregate {
            key_codec: RowCodec::new(&schema, Some(&key_cols))?,
            row_codec: RowCodec::new(&schema, None)?,
            input,
            group: group.to_vec(),
            window_start,
            window_end,
            aggs,
            schema,
            describe: describe.to_string(),
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            late: 0,
            tmp: Vec::new(),
        })
    }

    /// (Row, window) pairs dropped because their window had already been emitted.
    pub fn late_rows(&self) -> u64 {
        self.late
    }

    fn new_window(&self) -> Result<PendingWindow> {
        Ok(PendingWindow {
            agg: GroupAggregate::new(self.input.clone(), &self.group, self.aggs.clone(), self.schema.clone(), true)?,
            results: BTreeMap::new(),
        })
    }

    /// Emits and forgets every window complete at `watermark` (all of them for None).
    fn fire(&mut self, watermark: Option<i64>, out: &mut Vec<ChangeBatch>) -> Result<()> {
        while let Some((&(end, start), _)) = self.windows.iter().next() {
            if let Some(wm) = watermark {
                if !fired(end, wm) {
                    break;
                }
            }
            let Some(w) = self.windows.remove(&(end, start)) else { break };
            if w.results.is_empty() {
                continue;
            }
            let n = w.results.len();
            let cols = self.row_codec.decode(w.results.values().map(|r| r.as_slice()))?;
            let cols = super::conform(cols, &self.schema)?;
            let data = RecordBatch::try_new_with_options(self.schema.clone(), cols, &RecordBatchOptions::new().with_row_count(Some(n)))?;
            out.push(ChangeBatch::inserts(data));
        }
        Ok(())
    }
}

impl Operator for WindowAggregate {
    fn process(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Vec<ChangeBatch>) -> Result<()> {
        if let Some(k) = batch.kinds.iter().find(|k| **k != RowKind::Insert) {
            return Err(RsqlError::execution(format!("{}: received a {k} row, but window aggregation takes only inserts", self.describe)));
        }
        let starts = micros(batch.data.column(self.window_start))?;
        let ends = micros(batch.data.column(self.window_end))?;
        let (starts, ends) = (starts.as_primitive::<Int64Type>(), ends.as_primitive::<Int64Type>());
        let mut by_window: BTreeMap<(i64, i64), Vec<u32>> = BTreeMap::new();
        let late_before = self.late;
        for i in 0..batch.num_rows() {
            if starts.is_null(i) || ends.is_null(i) {
                return Err(RsqlError::execution(format!("{}: a row without window_start or window_end", self.describe)));
            }
            let (s, e) = (starts.value(i), ends.value(i));
            if fired(e, self.watermark) {
                self.late += 1;
                continue;
            }
            by_window.entry((e, s)).or_default().push(i as u32);
        }
        if late_before == 0 && self.late > 0 {
            warn!(
                "{}: dropping late rows (their window was already emitted at watermark {}); a larger WATERMARK delay keeps them",
                self.describe, self.watermark
            );
        }
        for (w, idx) in by_window {
            let rows = if idx.len() == batch.num_rows() { batch.clone() } else { batch.take(&idx, vec![RowKind::Insert; idx.len()])? };
            if !self.windows.contains_key(&w) {
                let pw = self.new_window()?;
                self.windows.insert(w, pw);
            }
            let Some(pw) = self.windows.get_mut(&w) else { continue };
            pw.agg.process(0, rows, &mut self.tmp)?;
            for b in self.tmp.drain(..) {
                let keys = self.key_codec.encode(b.data.columns())?;
                let full = self.row_codec.encode(b.data.columns())?;
                for (i, k) in b.kinds.iter().enumerate() {
                    if matches!(k, RowKind::Insert | RowKind::UpdateAfter) {
                        pw.results.insert(keys.row(i).as_ref().to_vec(), full.row(i).as_ref().to_vec());
                    }
                }
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<ChangeBatch>) -> Result<Option<i64>> {
        self.watermark = self.watermark.max(watermark);
        self.fire(Some(self.watermark), out)?;
        Ok(Some(watermark))
    }

    fn on_end(&mut self, out: &mut Vec<ChangeBatch>) -> Result<()> {
        // The end of a bounded input is the final watermark: every window completes.
        self.fire(None, out)?;
        if self.late > 0 {
            info!("{}: dropped {} late rows", self.describe, self.late);
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Vec<u8>> {
        let mut w = StateWriter::default();
        w.i64(self.watermark);
        w.u64(self.late);
        w.u64(self.windows.len() as u64);
        for (&(end, start), pw) in &self.windows {
            w.i64(end);
            w.i64(start);
            w.bytes(&pw.agg.snapshot()?);
            w.u64(pw.results.len() as u64);
            for (k, r) in &pw.results {
                w.bytes(k);
                w.bytes(r);
            }
        }
        Ok(w.buf)
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let mut r = StateReader::new(bytes);
        self.watermark = r.i64()?;
        self.late = r.u64()?;
        let n = r.u64()?;
        self.windows.clear();
        for _ in 0..n {
            let end = r.i64()?;
            let start = r.i64()?;
            let mut pw = self.new_window()?;
            pw.agg.restore(r.bytes()?)?;
            let m = r.u64()?;
            for _ in 0..m {
                let k = r.bytes()?.to_vec();
                let v = r.bytes()?.to_vec();
                pw.results.insert(k, v);
            }
            self.windows.insert((end, start), pw);
        }
        if !r.is_empty() {
            return Err(RsqlError::execution("window aggregate state snapshot has trailing bytes"));
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.windows
            .values()
            .map(|w| w.agg.state_size() + w.results.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rsql_common::arrow::array::Int64Array;
    use rsql_common::arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;
    use crate::graph::{AggFunc, WindowKind};

    const S: i64 = 1_000_000;

    fn ts_type() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    }

    /// Input of a window TVF: (k BIGINT, v BIGINT, ts TIMESTAMP(3)).
    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("v", DataType::Int64, true), Field::new("ts", ts_type(), false)]))
    }

    fn tvf_schema() -> SchemaRef {
        let mut f: Vec<Field> = input_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        for n in ["window_start", "window_end", "window_time"] {
            f.push(Field::new(n, ts_type(), false));
        }
        Arc::new(Schema::new(f))
    }

    /// Rows (k, v, ts in milliseconds).
    fn rows(r: &[(i64, i64, i64)]) -> ChangeBatch {
        let data = RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from(r.iter().map(|x| x.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(r.iter().map(|x| x.1).collect::<Vec<_>>())),
                Arc::new(TimestampMicrosecondArray::from(r.iter().map(|x| x.2 * MILLI).collect::<Vec<_>>())),
            ],
        )
        .expect("batch");
        ChangeBatch::inserts(data)
    }

    fn show(out: &[ChangeBatch]) -> Vec<String> {
        let mut v = Vec::new();
        for b in out {
            for i in 0..b.num_rows() {
                let cells: Vec<String> = b
                    .data
                    .columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(i) {
                            return "null".into();
                        }
                        match c.data_type() {
                            DataType::Timestamp(..) => format!("{}s", micros(c).expect("cast").as_primitive::<Int64Type>().value(i) as f64 / S as f64),
                            _ => micros(c).map(|a| a.as_primitive::<Int64Type>().value(i).to_string()).unwrap_or_else(|_| "?".into()),
                        }
                    })
                    .collect();
                v.push(format!("{}[{}]", b.kinds[i], cells.join(", ")));
            }
        }
        v
    }

    fn spec(kind: WindowKind, size_s: i64, step_s: i64) -> WindowSpec {
        WindowSpec { kind, size: size_s * S, step: step_s * S, offset: 0 }
    }

    #[test]
    fn assigns_tumble_hop_cumulate_windows() {
        let mut w = Vec::new();
        spec(WindowKind::Tumble, 10, 10).assign(12 * S, &mut w);
        assert_eq!(w, vec![(10 * S, 20 * S)]);
        spec(WindowKind::Tumble, 10, 10).assign(-1, &mut w);
        assert_eq!(w, vec![(-10 * S, 0)]);
        WindowSpec { offset: 3 * S, ..spec(WindowKind::Tumble, 10, 10) }.assign(12 * S, &mut w);
        assert_eq!(w, vec![(3 * S, 13 * S)]);
        spec(WindowKind::Hop, 10, 5).assign(12 * S, &mut w);
        assert_eq!(w, vec![(10 * S, 20 * S), (5 * S, 15 * S)]);
        spec(WindowKind::Hop, 10, 5).assign(10 * S, &mut w);
        assert_eq!(w, vec![(10 * S, 20 * S), (5 * S, 15 * S)]);
        spec(WindowKind::Cumulate, 10, 2).assign(13 * S, &mut w);
        assert_eq!(w, vec![(10 * S, 14 * S), (10 * S, 16 * S), (10 * S, 18 * S), (10 * S, 20 * S)]);
        spec(WindowKind::Cumulate, 10, 2).assign(19 * S, &mut w);
        assert_eq!(w, vec![(10 * S, 20 * S)]);
    }

    #[test]
    fn describes_windows_as_flink_plans_do() {
        assert_eq!(spec(WindowKind::Tumble, 600, 600).describe("ts"), "TUMBLE(time_col=[ts], size=[10 min])");
        assert_eq!(spec(WindowKind::Hop, 10, 5).describe("ts"), "HOP(time_col=[ts], size=[10 s], slide=[5 s])");
        assert_eq!(
            WindowSpec { offset: 1500, ..spec(WindowKind::Cumulate, 3600, 60) }.describe("ts"),
            "CUMULATE(time_col=[ts], max_size=[1 h], step=[1 min], offset=[1 ms])"
        );
    }

    #[test]
    fn window_table_function_appends_window_columns_per_window() {
        let mut op = WindowTableFunction::new(2, spec(WindowKind::Hop, 10, 5), tvf_schema(), "WindowTableFunction");
        let mut out = Vec::new();
        op.process(0, rows(&[(1, 7, 12_000)]), &mut out).expect("process");
        assert_eq!(show(&out), vec!["+I[1, 7, 12s, 10s, 20s, 19.999s]", "+I[1, 7, 12s, 5s, 15s, 14.999s]"]);
        let mut bad = rows(&[(1, 7, 12_000)]);
        bad.kinds[0] = RowKind::Delete;
        let e = op.process(0, bad, &mut out).expect_err("deletes are refused");
        assert!(e.to_string().contains("only inserts"), "{e}");
    }

    /// WindowAggregate over TVF rows grouped by (window_start, window_end, k): COUNT(*), SUM(v).
    fn window_agg() -> (WindowTableFunction, WindowAggregate) {
        let tvf = WindowTableFunction::new(2, spec(WindowKind::Tumble, 10, 10), tvf_schema(), "WindowTableFunction");
        let ts = tvf_schema();
        // Pre-projection as the planner builds it: window_start, window_end, k, v.
        let pre = Arc::new(Schema::new(vec![ts.field(3).clone(), ts.field(4).clone(), ts.field(0).clone(), ts.field(1).clone()]));
        let out = Arc::new(Schema::new(vec![
            ts.field(3).clone(),
            ts.field(4).clone(),
            ts.field(0).clone(),
            Field::new("cnt", DataType::Int64, false),
            Field::new("total", DataType::Int64, true),
        ]));
        let aggs = vec![
            AggCall { func: AggFunc::CountStar, arg: None, distinct: false, filter: None, output_type: DataType::Int64, name: "cnt".into() },
            AggCall { func: AggFunc::Sum, arg: Some(3), distinct: false, filter: None, output_type: DataType::Int64, name: "total".into() },
        ];
        let agg = WindowAggregate::new(pre, &[0, 1, 2], 0, 1, aggs, out, "WindowAggregate").expect("agg");
        (tvf, agg)
    }

    /// Feeds rows through the TVF and a projection to (window_start, window_end, k, v).
    fn feed(tvf: &mut WindowTableFunction, agg: &mut WindowAggregate, r: &[(i64, i64, i64)], out: &mut Vec<ChangeBatch>) {
        let mut t = Vec::new();
        tvf.process(0, rows(r), &mut t).expect("tvf");
        for b in t {
            let cols = vec![b.data.column(3).clone(), b.data.column(4).clone(), b.data.column(0).clone(), b.data.column(1).clone()];
            let data = RecordBatch::try_new(agg.input.clone(), cols).expect("pre");
            agg.process(0, ChangeBatch::inserts(data), out).expect("agg");
        }
    }

    #[test]
    fn windows_fire_when_the_watermark_passes_their_end_and_late_rows_are_dropped() {
        let (mut tvf, mut agg) = window_agg();
        let mut out = Vec::new();
        feed(&mut tvf, &mut agg, &[(1, 10, 1_000), (2, 5, 3_000), (1, 1, 9_999), (1, 100, 10_000)], &mut out);
        assert!(out.is_empty(), "nothing before a watermark");
        agg.on_watermark(9_998, &mut out).expect("wm");
        assert!(out.is_empty(), "the window [0, 10 s) is complete only at 9.999 s");
        agg.on_watermark(9_999, &mut out).expect("wm");
        assert_eq!(show(&out), vec!["+I[0s, 10s, 1, 2, 11]", "+I[0s, 10s, 2, 1, 5]"]);
        out.clear();
        // Late: the window [0, 10 s) was emitted.
        feed(&mut tvf, &mut agg, &[(1, 1000, 5_000), (2, 1, 12_000)], &mut out);
        assert_eq!(agg.late_rows(), 1);
        agg.on_end(&mut out).expect("end");
        assert_eq!(show(&out), vec!["+I[10s, 20s, 1, 1, 100]", "+I[10s, 20s, 2, 1, 1]"]);
    }

    #[test]
    fn snapshot_and_restore_continue_identically() {
        let input: Vec<(i64, i64, i64)> = (0..200).map(|i| ((i * 7) % 5, i, (i * 37) % 5000 + (i / 10) * 1000)).collect();
        let run = |cut: Option<usize>| -> Vec<String> {
            let (mut tvf, mut agg) = window_agg();
            let mut out = Vec::new();
            for (n, chunk) in input.chunks(10).enumerate() {
                if cut == Some(n) {
                    let bytes = agg.snapshot().expect("snapshot");
                    let (t2, mut a2) = window_agg();
                    a2.restore(&bytes).expect("restore");
                    tvf = t2;
                    agg = a2;
                }
                feed(&mut tvf, &mut agg, chunk, &mut out);
                let wm = chunk.iter().map(|r| r.2).max().unwrap_or(0) - 2_000;
                agg.on_watermark(wm, &mut out).expect("wm");
            }
            agg.on_end(&mut out).expect("end");
            let mut s = show(&out);
            s.push(format!("late={}", agg.late_rows()));
            s
        };
        let whole = run(None);
        assert!(whole.len() > 10);
        for cut in [1, 7, 13, 19] {
            assert_eq!(run(Some(cut)), whole, "restored at chunk {cut}");
        }
        let (_, mut agg) = window_agg();
        assert!(agg.restore(&[1, 2, 3]).is_err(), "a truncated snapshot is an error");
    }

    #[test]
    fn watermark_assigner_emits_the_largest_expression_value() {
        use datafusion_physical_expr::expressions::Column;
        let expr: PhysExpr = Arc::new(Column::new("ts", 2));
        let mut op = WatermarkAssigner::new(2, expr);
        let mut out = Vec::new();
        op.process(0, rows(&[(1, 1, 5_000), (1, 1, 3_000)]), &mut out).expect("process");
        assert_eq!(op.generated_watermark(), Some(5_000));
        op.process(0, rows(&[(1, 1, 4_000)]), &mut out).expect("process");
        assert_eq!(op.generated_watermark(), None, "a watermark never goes back");
        assert_eq!(op.on_watermark(9_000, &mut out).expect("wm"), None, "upstream watermarks are replaced");
        let bytes = op.snapshot().expect("snapshot");
        let mut op2 = WatermarkAssigner::new(2, Arc::new(Column::new("ts", 2)));
        op2.restore(&bytes).expect("restore");
        op2.process(0, rows(&[(1, 1, 4_500)]), &mut out).expect("process");
        assert_eq!(op2.generated_watermark(), None);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn watermark_assigner_emits_on_its_timer_and_marks_idle_inputs() {
        use datafusion_physical_expr::expressions::Column;
        let timing = WatermarkTiming { interval_ms: 200, idle_timeout_ms: 1_000 };
        assert_eq!(timing.timer_period_ms(), Some(40));
        assert_eq!(WatermarkTiming { interval_ms: 200, idle_timeout_ms: 5_000 }.timer_period_ms(), Some(200));
        assert_eq!(WatermarkTiming { interval_ms: 0, idle_timeout_ms: 500 }.timer_period_ms(), Some(500));
        assert_eq!(WatermarkTiming::default().timer_period_ms(), None);
        let mut op = WatermarkAssigner::new(2, Arc::new(Column::new("ts", 2))).with_timing(timing);
        assert_eq!(op.timer_period(), Some(std::time::Duration::from_millis(40)));
        let mut out = Vec::new();
        op.process(0, rows(&[(1, 1, 5_000)]), &mut out).expect("process");
        assert_eq!(op.generated_watermark(), Some(5_000), "the first watermark goes out at once");
        op.process(0, rows(&[(1, 1, 5_150)]), &mut out).expect("process");
        assert_eq!(op.generated_watermark(), None, "a move of 150 ms waits for the 200 ms timer");
        op.on_timer(10_000, &mut out).expect("timer");
        assert_eq!(op.generated_watermark(), Some(5_150));
        op.process(0, rows(&[(1, 1, 5_500)]), &mut out).expect("process");
        assert_eq!(op.generated_watermark(), Some(5_500), "a move of more than the interval goes out at once");
        // A row came after the check at 10 000, so the timeout counts from the check at 10 200.
        op.on_timer(10_200, &mut out).expect("timer");
        assert_eq!(op.generated_idleness(), None);
        op.on_timer(11_100, &mut out).expect("timer");
        assert_eq!(op.generated_idleness(), None);
        op.on_timer(11_200, &mut out).expect("timer");
        assert_eq!(op.generated_idleness(), Some(true));
        op.on_timer(13_000, &mut out).expect("timer");
        assert_eq!(op.generated_idleness(), None, "idleness is reported once");
        op.process(0, rows(&[(1, 1, 5_600)]), &mut out).expect("process");
        assert_eq!(op.generated_idleness(), Some(false), "a batch makes the input active again");
        // Interval 0: every batch that moves the watermark emits it.
        let mut op = WatermarkAssigner::new(2, Arc::new(Column::new("ts", 2)));
        op.process(0, rows(&[(1, 1, 1_000)]), &mut out).expect("process");
        assert_eq!(op.generated_watermark(), Some(1_000));
        op.process(0, rows(&[(1, 1, 1_001)]), &mut out).expect("process");
        assert_eq!(op.generated_watermark(), Some(1_001));
        assert_eq!(op.timer_period(), None);
    }
}
