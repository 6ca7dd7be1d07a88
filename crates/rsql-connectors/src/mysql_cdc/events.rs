//! Turns parsed binlog events into committed transactions of row changes, and keeps the binlog
//! position and GTID set after the last complete transaction.
//!
//! This step needs no server: the live reader (`source`) feeds it the events of its binlog
//! connection, and tests feed it events read from bytes (`fixture`). Table maps come from
//! whoever parsed the events (the stream keeps them, since rows events are decoded against
//! them). Statements other than BEGIN / COMMIT are handed back to the caller, which reloads a
//! captured table's columns when a statement changes it.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::binlog::events::{
    Event, EventData, GtidEvent, OptionalMetadataField, PreviousGtidsEvent, RotateEvent, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::EventType;
use mysql_async::BinlogStream;
use rsql_common::builder::Datum;
use rsql_common::{Result, RowKind, RsqlError};
use tracing::debug;

use super::decode::from_binlog;
use super::mariadb_events as maria;
use super::position::{format_uuid, BinlogPosition, GtidTracker};
use super::rowimage::RowPlan;
use super::source::{Captured, Change};

/// Where the table maps of the current binlog stream are kept.
pub(crate) trait TableMaps {
    fn table_map(&self, table_id: u64) -> Option<&TableMapEvent<'static>>;
}

impl TableMaps for BinlogStream {
    fn table_map(&self, table_id: u64) -> Option<&TableMapEvent<'static>> {
        self.get_tme(table_id)
    }
}

/// A captured table under a table id of the stream, with the plan of its row images (None:
/// the driver decodes them).
#[derive(Clone)]
pub(crate) struct Mapped {
    pub table: Arc<Captured>,
    plan: Option<Arc<RowPlan>>,
}

/// Event types the decoder looks at by number.
const HEARTBEAT_LOG_EVENT_V2: u8 = 41;

/// What one binlog event amounted to.
pub(crate) enum Step {
    /// A transaction committed with these row changes (possibly none for captured tables).
    Commit(Vec<Change>),
    /// Any other event.
    Progress,
    /// The server's keep-alive: it has nothing newer to send.
    Heartbeat,
    /// A statement other than BEGIN / COMMIT (DDL and the like), in its default database. When
    /// it ended a transaction, the position after it is already committed.
    Statement { database: String, sql: String },
    /// The deadline passed without an event.
    Idle,
}

/// The state of a binlog stream between events.
pub(crate) struct BinlogDecoder {
    /// After the last event read.
    pub pos: BinlogPosition,
    /// After the last complete transaction; a restart resumes here.
    pub committed: BinlogPosition,
    /// GTIDs seen so far (MariaDB: last per domain; MySQL: the executed set).
    pub gtids: GtidTracker,
    /// Inside a transaction: its changes are pending and the position is not a boundary.
    pub in_tx: bool,
    /// The open transaction began with BEGIN (or a MariaDB GTID), so a statement inside it does
    /// not end it; after a MySQL GTID event alone, the next statement is its own transaction.
    tx_begun: bool,
    /// MySQL: the GTID of the open transaction, added to the executed set at its commit.
    open_gtid: Option<(String, u64)>,
    pending: Vec<Change>,
    /// Captured tables by (database, table).
    pub tables: HashMap<(String, String), Arc<Captured>>,
    /// Table ids of the current stream: the captured table, or None for other tables.
    pub table_ids: HashMap<u64, Option<Mapped>>,
    /// Whether row images are decoded by `rowimage` where its plan covers the table (true; the
    /// driver's decoder otherwise).
    pub fast_rows: bool,
    /// Transactions committed before this time (ms) are skipped.
    pub skip_before_ms: Option<i64>,
    /// Whether the server checksums binlog events.
    pub checksum: bool,
    /// Whether this connection has seen its format description event.
    pub seen_fde: bool,
    /// The connection was opened by GTID and no event with a real offset has come yet, so the
    /// file offset is not known: committed positions keep an empty file (resume by GTID).
    by_gtid: bool,
}

impl BinlogDecoder {
    pub fn new(start: BinlogPosition, tables: HashMap<(String, String), Arc<Captured>>, checksum: bool) -> Self {
        let gtids = GtidTracker::parse(&start.gtid_set).unwrap_or_default();
        BinlogDecoder {
            pos: start.clone(),
            committed: start,
            gtids,
            in_tx: false,
            tx_begun: false,
            open_gtid: None,
            pending: Vec::new(),
            tables,
            table_ids: HashMap::new(),
            fast_rows: true,
            skip_before_ms: None,
            checksum,
            seen_fde: false,
            by_gtid: false,
        }
    }

    /// Whether the row images of a table id are read by the direct decoder.
    #[cfg(test)]
    pub fn has_row_plan(&self, table_id: u64) -> bool {
        matches!(self.table_ids.get(&table_id), Some(Some(Mapped { plan: Some(_), .. })))
    }

    /// Forgets the state of the previous connection; reading goes on from `committed`.
    pub fn reset_connection(&mut self) {
        self.pos = self.committed.clone();
        self.pending.clear();
        self.in_tx = false;
        self.tx_begun = false;
        self.open_gtid = None;
        self.table_ids.clear();
        self.seen_fde = false;
        self.by_gtid = self.committed.file.is_empty();
        if let Ok(g) = GtidTracker::parse(&self.committed.gtid_set) {
            self.gtids = g;
        }
    }

    /// Applies one event. `maps` holds the table maps of the stream the event came from.
    pub fn apply(&mut self, ev: &Event, maps: &dyn TableMaps) -> Result<Step> {
        let header = ev.header();
        let ty = header.event_type_raw();
        let ts_ms = header.timestamp() as i64 * 1000;
        let log_pos = header.log_pos() as u64;
        tracing::trace!(event_type = ty, log_pos, size = header.event_size(), position = %self.pos, "mysql-cdc: binlog event");
        // Formatted only when an error needs it.
        let (at_file, at_pos) = (self.pos.file.clone(), self.pos.pos);
        let ctx = || format!("mysql-cdc binlog at {at_file}:{at_pos}");
        let data_err = |e: std::io::Error| RsqlError::data(ctx(), e);

        if ty == EventType::ROTATE_EVENT as u8 {
            let r: RotateEvent<'_> = ev.read_event().map_err(data_err)?;
            let mut name = r.name_raw();
            // The rotate event a new connection starts with comes before the format description,
            // so its checksum is still attached to the name.
            if !self.seen_fde && self.checksum && name.len() > 4 {
                name = &name[..name.len() - 4];
            }
            self.pos = BinlogPosition::new(String::from_utf8_lossy(name).into_owned(), r.position());
            if !self.in_tx {
                self.mark_committed();
            }
            return Ok(Step::Progress);
        }
        if ty == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
            self.seen_fde = true;
            return Ok(Step::Progress);
        }
        if ty == EventType::HEARTBEAT_EVENT as u8 || ty == HEARTBEAT_LOG_EVENT_V2 {
            return Ok(Step::Heartbeat);
        }
        if log_pos > 0 {
            self.by_gtid = false;
        }
        if log_pos > self.pos.pos {
            self.pos.pos = log_pos;
        }

        let mut step = Step::Progress;
        // In timestamp mode, table maps and rows written before the start time are not looked at
        // (the tables may have had other definitions then).
        let before_start = self.skip_before_ms.is_some_and(|min| ts_ms + 999 < min);
        match ty {
            t if before_start && (t == EventType::TABLE_MAP_EVENT as u8 || matches!(t, 23..=25 | 30..=32)) => {}
            maria::GTID_EVENT => {
                let g = maria::parse_gtid(ev.data(), header.server_id())?;
                self.gtids.maria.update(g.domain, g.server, g.seq);
                self.pending.clear();
                self.in_tx = !g.is_standalone();
                self.tx_begun = self.in_tx;
            }
            maria::GTID_LIST_EVENT => {
                for (d, s, q) in maria::parse_gtid_list(ev.data())? {
                    self.gtids.maria.update(d, s, q);
                }
            }
            maria::BINLOG_CHECKPOINT_EVENT => {
                debug!(file = %maria::parse_binlog_checkpoint(ev.data())?, "mysql-cdc: binlog checkpoint");
            }
            maria::ANNOTATE_ROWS_EVENT => {
                tracing::trace!(statement = %maria::parse_annotate_rows(ev.data()), "mysql-cdc: rows annotation");
            }
            maria::QUERY_COMPRESSED_EVENT | maria::FIRST_ROWS_COMPRESSED_EVENT..=maria::LAST_ROWS_COMPRESSED_EVENT => {
                return Err(RsqlError::connector(
                    ctx(),
                    "the server writes compressed binlog events, which this reader cannot decode; run SET GLOBAL log_bin_compress = OFF",
                ));
            }
            // MySQL: a GTID (or an anonymous one when gtid_mode is off) opens each transaction;
            // the transaction counts as executed once its commit is read.
            t if t == EventType::GTID_EVENT as u8
                || t == EventType::ANONYMOUS_GTID_EVENT as u8
                || t == EventType::GTID_TAGGED_LOG_EVENT as u8 =>
            {
                if t != EventType::ANONYMOUS_GTID_EVENT as u8 {
                    let g: GtidEvent = ev.read_event().map_err(data_err)?;
                    let sid = match g.tag() {
                        Some(tag) => format!("{}:{}", format_uuid(&g.sid()), tag),
                        None => format_uuid(&g.sid()),
                    };
                    self.open_gtid = Some((sid, g.gno()));
                }
                self.pending.clear();
                self.in_tx = true;
                self.tx_begun = false;
            }
            t if t == EventType::PREVIOUS_GTIDS_EVENT as u8 => {
                let p: PreviousGtidsEvent<'_> = ev.read_event().map_err(data_err)?;
                for sid in p.sids() {
                    let key = match sid.tag() {
                        Some(tag) => format!("{}:{}", format_uuid(&sid.uuid()), tag),
                        None => format_uuid(&sid.uuid()),
                    };
                    for iv in sid.intervals() {
                        if iv.end() > iv.start() {
                            self.gtids.mysql.add_range(&key, iv.start(), iv.end() - 1);
                        }
                    }
                }
                if !self.in_tx {
                    self.mark_committed();
                }
            }
            // MySQL 8.0.20+: a compressed transaction. Its events follow, decompressed, from the
            // stream; the payload's end is not a boundary until their XID is read.
            t if t == EventType::TRANSACTION_PAYLOAD_EVENT as u8 => {
                self.in_tx = true;
            }
            t if t == EventType::XID_EVENT as u8 => {
                step = self.commit(ts_ms);
            }
            t if t == EventType::QUERY_EVENT as u8 => {
                let q = match ev.read_data().map_err(data_err)? {
                    Some(EventData::QueryEvent(q)) => q,
                    _ => return Ok(Step::Progress),
                };
                let sql = q.query();
                let trimmed = sql.trim();
                if trimmed.eq_ignore_ascii_case("BEGIN") {
                    self.pending.clear();
                    self.in_tx = true;
                    self.tx_begun = true;
                } else if trimmed.eq_ignore_ascii_case("COMMIT") {
                    step = self.commit(ts_ms);
                } else {
                    if !self.in_tx || !self.tx_begun {
                        self.in_tx = false;
                        self.mark_committed();
                    }
                    step = Step::Statement { database: q.schema().into_owned(), sql: trimmed.to_string() };
                }
            }
            t if t == EventType::TABLE_MAP_EVENT as u8 => {
                let tme: TableMapEvent<'_> = ev.read_event().map_err(data_err)?;
                let key = (tme.database_name().into_owned(), tme.table_name().into_owned());
                let mapped = match self.tables.get(&key) {
                    Some(c) => {
                        check_table_map(&tme, c).map_err(|m| RsqlError::connector(ctx(), m))?;
                        let plan = if self.fast_rows { RowPlan::new(&tme, &c.schema, &c.needed) } else { None };
                        Some(Mapped { table: c.clone(), plan: plan.map(Arc::new) })
                    }
                    None => None,
                };
                self.table_ids.insert(tme.table_id(), mapped);
            }
            23..=25 | 30..=32 => {
                self.decode_rows(ev, ts_ms, maps)?;
                if !self.in_tx {
                    // Row events outside BEGIN/GTID (old servers): commit at the statement end flag.
                    step = self.commit(ts_ms);
                }
            }
            t if t == EventType::PARTIAL_UPDATE_ROWS_EVENT as u8 => {
                return Err(RsqlError::connector(
                    ctx(),
                    "the server logs partial JSON updates; set binlog_row_value_options = '' so rows are logged whole",
                ));
            }
            _ => {
                if !self.in_tx {
                    self.mark_committed();
                }
            }
        }
        Ok(step)
    }

    fn mark_committed(&mut self) {
        if let Some((sid, gno)) = self.open_gtid.take() {
            self.gtids.mysql.add(&sid, gno);
        }
        if self.by_gtid {
            self.committed = BinlogPosition { file: String::new(), pos: 4, gtid_set: self.gtids.to_string() };
        } else {
            self.committed = self.pos.clone();
            self.committed.gtid_set = self.gtids.to_string();
        }
    }

    fn commit(&mut self, ts_ms: i64) -> Step {
        self.in_tx = false;
        self.tx_begun = false;
        self.mark_committed();
        let changes = std::mem::take(&mut self.pending);
        if self.skip_before_ms.is_some_and(|min| ts_ms < min) {
            return Step::Commit(Vec::new());
        }
        Step::Commit(changes)
    }

    fn decode_rows(&mut self, ev: &Event, ts_ms: i64, maps: &dyn TableMaps) -> Result<()> {
        let at = &self.pos;
        let data_err = |e: std::io::Error| RsqlError::data(format!("mysql-cdc binlog at {at}"), e);
        let Some(EventData::RowsEvent(re)) = ev.read_data().map_err(data_err)? else { return Ok(()) };
        let Some(Some(Mapped { table, plan })) = self.table_ids.get(&re.table_id()).cloned() else { return Ok(()) };
        let (before_kind, after_kind) = match &re {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => (None, Some(RowKind::Insert)),
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => (Some(RowKind::Delete), None),
            _ => (Some(RowKind::UpdateBefore), Some(RowKind::UpdateAfter)),
        };
        // Images holding every column (binlog_row_image = FULL) are read by the plan.
        let ncols = table.schema.columns.len();
        let before_full = re.columns_before_image().is_none_or(|b| b.len() >= ncols && b.iter().take(ncols).all(|x| *x));
        let after_full = re.columns_after_image().is_none_or(|b| b.len() >= ncols && b.iter().take(ncols).all(|x| *x));
        if let Some(plan) = plan {
            if re.num_columns() as usize == ncols && before_full && after_full {
                let mut data = re.rows_data();
                while !data.is_empty() {
                    for kind in [before_kind, after_kind].into_iter().flatten() {
                        let row = plan.decode(&table.schema, &mut data).map_err(|e| {
                            RsqlError::data(format!("mysql-cdc binlog at {at}"), e)
                        })?;
                        self.pending.push(Change { table: table.clone(), kind, row, ts_ms });
                    }
                }
                return Ok(());
            }
        }
        let Some(tme) = maps.table_map(re.table_id()) else {
            return Err(RsqlError::data(format!("mysql-cdc binlog at {at}"), "a rows event without its table map"));
        };
        // mysql_common panics on some values (a negative TIME(1)/TIME(2) with a fraction);
        // decode inside catch_unwind so such a row is an error, not a crash.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| re.rows(tme).collect::<Vec<_>>()))
            .map_err(|_| {
                RsqlError::data(
                    format!("mysql-cdc binlog at {at}"),
                    format!(
                        "the binlog row decoder failed on a row of {} (a negative TIME(1) or TIME(2) value with a fraction is a known case); change such columns to TIME(3) or wider",
                        table.schema.qualified()
                    ),
                )
            })?;
        for r in decoded {
            let (before, after) = r.map_err(data_err)?;
            for (img, kind) in [(before, before_kind), (after, after_kind)] {
                let (Some(mut img), Some(kind)) = (img, kind) else { continue };
                let mut row = Vec::with_capacity(table.schema.columns.len());
                for (i, col) in table.schema.columns.iter().enumerate() {
                    if !table.needed[i] {
                        row.push(Datum::Null);
                        continue;
                    }
                    let v = img.take(i).ok_or_else(|| {
                        RsqlError::data(
                            format!("mysql-cdc binlog at {at}"),
                            format!(
                                "column {} of {} is missing from the row image; set binlog_row_image = FULL",
                                col.name,
                                table.schema.qualified()
                            ),
                        )
                    })?;
                    row.push(from_binlog(col, v)?);
                }
                self.pending.push(Change { table: table.clone(), kind, row, ts_ms });
            }
        }
        Ok(())
    }
}

/// Checks a captured table's map against the columns read from information_schema: the count
/// always, and the names when the server logs them (MySQL's binlog_row_metadata = FULL).
fn check_table_map(tme: &TableMapEvent<'_>, c: &Captured) -> std::result::Result<(), String> {
    let changed = |what: String| {
        format!(
            "table {} {what}: its definition changed while it was being captured; restart the job with a new snapshot",
            c.schema.qualified()
        )
    };
    if tme.columns_count() as usize != c.schema.columns.len() {
        return Err(changed(format!(
            "has {} columns in the binlog but {} in information_schema",
            tme.columns_count(),
            c.schema.columns.len()
        )));
    }
    for field in tme.iter_optional_meta() {
        let Ok(OptionalMetadataField::ColumnName(names)) = field else { continue };
        for (i, name) in names.iter_names().enumerate() {
            let Ok(name) = name else { break };
            let Some(col) = c.schema.columns.get(i) else { break };
            if !name.name().eq_ignore_ascii_case(&col.name) {
                return Err(changed(format!(
                    "names column {} '{}' in the binlog but '{}' in information_schema",
                    i + 1,
                    name.name(),
                    col.name
                )));
            }
        }
    }
    Ok(())
}
