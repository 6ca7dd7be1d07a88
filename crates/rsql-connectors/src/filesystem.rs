//! The `filesystem` connector: a bounded source that reads one file or every file of a directory
//! in a format (`json`, `csv`, `raw`, `debezium-json`, `canal-json`, `maxwell-json`), and a sink
//! that writes part files into a directory.
//!
//! Options: `path` (a local path or `file://` URL), `format`, the format's own options
//! (`json.*`, `csv.*`, ...), `sink.rolling-policy.file-size` (default 128MB), and
//! `sink.parallelism` (accepted; the sink runs as one writer).
//!
//! Source: files are read in name order, directories recursively; files and directories whose
//! names start with `.` or `_` are skipped (the sink's in-progress files are hidden that way).
//! Metadata columns: `file.path`, `file.name`, `file.size`, `file.modification-time`. A bad
//! record stops the job with the file, line and first bytes of the record, unless the format's
//! `ignore-parse-errors` is set.
//!
//! Sink: rows are encoded one per line into a hidden in-progress file
//! `.part-<id>-<n>.inprogress`; `flush` (every checkpoint and the end of the job) syncs it and
//! renames it to `part-<id>-<n>`, so a reader never sees a partly written file. Delivery
//! guarantee: at-least-once. Every row written before a flush is durable in a visible file after
//! it; a job that fails between flushes leaves its rows in a hidden in-progress file that no
//! reader picks up, and if the job is restarted from an earlier position those rows are written
//! again into a new part file. Append-only formats (`json`, `csv`, `raw`) accept only inserts; an
//! updating query into them is refused at planning. The changelog formats accept every row kind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::Datum;
use rsql_common::catalog::TableDef;
use rsql_common::options::{OptionKind, OptionSchema, OptionSpec, Opts};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::{ChangeBatch, Result, RowKind, RsqlError};
use rsql_runtime::connector::{
    ChangelogMode, ConnectorFactory, ConnectorRegistry, ProducedColumn, Sink, Source, SourceContext, SourceInfo,
};

use crate::formats::{self, DecodedRows, RowDecoder, RowEncoder};

pub fn register(reg: &mut ConnectorRegistry) {
    reg.register(Arc::new(FilesystemFactory));
}

/// Factory of the `filesystem` connector.
pub struct FilesystemFactory;

const META_PATH: &str = "file.path";
const META_NAME: &str = "file.name";
const META_SIZE: &str = "file.size";
const META_MTIME: &str = "file.modification-time";

fn table_format(table: &TableDef) -> Result<&str> {
    let f = Opts::new(table).required("format")?;
    formats::check_format(table, "format", f)?;
    Ok(f)
}

fn physical_columns(table: &TableDef) -> Vec<(String, LogicalType)> {
    table.physical_columns().map(|c| (c.name.clone(), c.ty.clone())).collect()
}

/// The local path of the `path` option (`file://` URLs allowed).
fn local_path(table: &TableDef) -> Result<PathBuf> {
    let opts = Opts::new(table);
    let p = opts.required("path")?;
    let p = if let Some(rest) = p.strip_prefix("file://") {
        rest
    } else if let Some((scheme, _)) = p.split_once("://") {
        return Err(opts.error("path", format!("the scheme '{scheme}://' is not supported; use a local path or a file:// URL")));
    } else {
        p
    };
    if p.is_empty() {
        return Err(opts.error("path", "is empty"));
    }
    Ok(PathBuf::from(p))
}

fn parse_size(v: &str) -> Option<u64> {
    let t = v.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.trim() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl ConnectorFactory for FilesystemFactory {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn options(&self, table: &TableDef) -> OptionSchema {
        let mut schema = OptionSchema::new(vec![
            OptionSpec::required("path", OptionKind::String),
            OptionSpec::required("format", OptionKind::String),
            OptionSpec::optional("sink.rolling-policy.file-size", OptionKind::String),
            OptionSpec::optional("sink.parallelism", OptionKind::Int),
        ]);
        if let Some(f) = table.option("format") {
            if let Ok(specs) = formats::format_options(f, "") {
                schema.extend(specs);
            }
        }
        schema
    }

    fn validate(&self, table: &TableDef) -> Result<()> {
        let format = table_format(table)?;
        local_path(table)?;
        if let Some(v) = table.option("sink.rolling-policy.file-size") {
            if parse_size(v).is_none() {
                return Err(Opts::new(table).error("sink.rolling-policy.file-size", format!("'{v}' is not a size such as '128MB'")));
            }
        }
        // Building a decoder and an encoder checks the format options and the column types.
        let cols = physical_columns(table);
        let idx: Vec<usize> = (0..cols.len()).collect();
        formats::create_decoder(format, &cols, table, "")?;
        formats::create_encoder(format, &cols, &idx, table, "")?;
        Ok(())
    }

    fn metadata_keys(&self) -> Vec<(&'static str, LogicalType)> {
        vec![
            (META_PATH, LogicalType::not_null(FlinkType::Varchar(MAX_LENGTH))),
            (META_NAME, LogicalType::not_null(FlinkType::Varchar(MAX_LENGTH))),
            (META_SIZE, LogicalType::not_null(FlinkType::BigInt)),
            (META_MTIME, LogicalType::not_null(FlinkType::TimestampLtz(3))),
        ]
    }

    fn source_info(&self, table: &TableDef) -> Result<SourceInfo> {
        let format = table_format(table)?;
        let changelog_mode = if formats::is_changelog_format(format) { ChangelogMode::All } else { ChangelogMode::InsertOnly };
        Ok(SourceInfo { changelog_mode, bounded: true })
    }

    fn sink_accepts_updates(&self, table: &TableDef) -> bool {
        table.option("format").map(formats::is_changelog_format).unwrap_or(false)
    }

    fn create_source(&self, table: &TableDef, columns: &[ProducedColumn]) -> Result<Box<dyn Source>> {
        let format = table_format(table)?.to_string();
        let physical = physical_columns(table);
        let decoder = formats::create_decoder(&format, &physical, table, "")?;
        let mut outputs = Vec::with_capacity(columns.len());
        for c in columns {
            outputs.push(match c {
                ProducedColumn::Physical { name, .. } => {
                    let i = physical.iter().position(|(n, _)| n == name).ok_or_else(|| {
                        RsqlError::execution(format!("filesystem table '{}' has no physical column '{name}'", table.path.name))
                    })?;
                    Output::Physical(i)
                }
                ProducedColumn::Metadata { key, .. } => match key.as_str() {
                    META_PATH => Output::Path,
                    META_NAME => Output::Name,
                    META_SIZE => Output::Size,
                    META_MTIME => Output::ModificationTime,
                    other => {
                        return Err(RsqlError::validation(
                            format!(
                                "table '{}': the filesystem connector has no metadata key '{other}'; available: {META_PATH}, {META_NAME}, {META_SIZE}, {META_MTIME}",
                                table.path.name
                            ),
                            None,
                        ))
                    }
                },
            });
        }
        Ok(Box::new(FilesystemSource {
            table: table.clone(),
            format,
            path: local_path(table)?,
            decoder,
            outputs,
            produced: columns.iter().map(|c| (c.name().to_string(), c.ty().clone())).collect(),
            resume: None,
        }))
    }

    fn create_sink(&self, table: &TableDef, input_mode: &ChangelogMode) -> Result<Box<dyn Sink>> {
        let format = table_format(table)?.to_string();
        if !input_mode.is_insert_only() && !formats::is_changelog_format(&format) {
            return Err(RsqlError::unsupported(format!(
                "table '{}': the filesystem sink with format '{format}' accepts only inserts, but the query produces updates; \
                 use 'format' = 'debezium-json' (or canal-json, maxwell-json) to write a changelog",
                table.path.name
            )));
        }
        let cols = physical_columns(table);
        let idx: Vec<usize> = (0..cols.len()).collect();
        let encoder = formats::create_encoder(&format, &cols, &idx, table, "")?;
        let roll_size = match table.option("sink.rolling-policy.file-size") {
            Some(v) => parse_size(v).unwrap_or(128 << 20),
            None => 128 << 20,
        };
        Ok(Box::new(FilesystemSink {
            table: table.path.name.clone(),
            dir: local_path(table)?,
            changelog: formats::is_changelog_format(&format),
            encoder,
            id: unique_id(),
            part: 0,
            current: None,
            buf: Vec::with_capacity(1 << 16),
            roll_size,
        }))
    }
}

enum Output {
    Physical(usize),
    Path,
    Name,
    Size,
    ModificationTime,
}

struct FilesystemSource {
    table: TableDef,
    format: String,
    path: PathBuf,
    decoder: Box<dyn RowDecoder>,
    outputs: Vec<Output>,
    produced: Vec<(String, LogicalType)>,
    /// Where to resume: the file and the number of its records already read; files that sort
    /// before it are done. `None` file with a count means everything was read.
    resume: Option<(Option<String>, u64)>,
}

/// The position after `record` records of `file` (None: all files read).
fn fs_position(file: Option<&str>, record: u64) -> Vec<u8> {
    serde_json::json!({ "file": file, "record": record }).to_string().into_bytes()
}

/// Every readable file under `path` in name order (hidden `.`/`_` names skipped).
fn list_files(path: &Path, table: &str) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        RsqlError::io(
            format!("table '{table}': cannot read path '{}'; check the 'path' option", path.display()),
            e,
        )
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| RsqlError::io(format!("table '{table}': cannot list directory '{}'", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| RsqlError::io(format!("table '{table}': cannot list '{}'", dir.display()), e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let p = entry.path();
            let ft = entry.file_type().map_err(|e| RsqlError::io(format!("table '{table}': cannot stat '{}'", p.display()), e))?;
            if ft.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[async_trait]
impl Source for FilesystemSource {
    async fn run(&mut self, ctx: SourceContext) -> Result<()> {
        let tname = self.table.path.name.clone();
        let files = list_files(&self.path, &tname)?;
        let batch_size = ctx.batch_size.max(1);
        let mut out = DecodedRows::new(&self.produced, batch_size)?;
        let resume = self.resume.take();
        if let Some((None, _)) = resume {
            return Ok(());
        }
        for file in files {
            if ctx.is_stopping() {
                return Ok(());
            }
            let file_key = file.display().to_string();
            let skip = match &resume {
                Some((Some(f), n)) if *f == file_key => *n,
                Some((Some(f), _)) if file_key < *f => continue,
                _ => 0,
            };
            let data = tokio::fs::read(&file)
                .await
                .map_err(|e| RsqlError::io(format!("table '{tname}': cannot read file '{}'", file.display()), e))?;
            let meta = std::fs::metadata(&file).ok();
            let size = meta.as_ref().map(|m| m.len() as i64).unwrap_or(data.len() as i64);
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| (d.as_millis() as i64) * 1000)
                .unwrap_or(0);
            let file_path = file.display().to_string();
            let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let ranges = formats::record_ranges(&self.format, &data, &self.table, "")?;
            let mut line = 1usize;
            let mut counted_to = 0usize;
            for (index, r) in ranges.into_iter().enumerate() {
                if (index as u64) < skip {
                    continue;
                }
                line += data[counted_to..r.start].iter().filter(|b| **b == b'\n').count();
                counted_to = r.start;
                let record = &data[r.clone()];
                let outputs = &self.outputs;
                let result = self.decoder.decode_with(record, &mut |kind: RowKind, values: Vec<Datum>| {
                    let row: Vec<Datum> = outputs
                        .iter()
                        .map(|o| match o {
                            Output::Physical(i) => values.get(*i).cloned().unwrap_or(Datum::Null),
                            Output::Path => Datum::Str(file_path.clone()),
                            Output::Name => Datum::Str(file_name.clone()),
                            Output::Size => Datum::Int(size),
                            Output::ModificationTime => Datum::Timestamp(mtime),
                        })
                        .collect();
                    out.push(kind, row)
                });
                if let Err(e) = result {
                    return Err(RsqlError::data(
                        format!("table '{tname}': file '{file_path}' line {line}"),
                        format!("{e}; the record starts with {}", formats::describe_bytes(record)),
                    ));
                }
                if out.len() >= batch_size {
                    ctx.emit(out.finish()?).await?;
                    ctx.position(fs_position(Some(&file_key), index as u64 + 1)).await?;
                    if ctx.is_stopping() {
                        return Ok(());
                    }
                }
            }
        }
        if !out.is_empty() {
            ctx.emit(out.finish()?).await?;
        }
        ctx.position(fs_position(None, 0)).await?;
        let skipped = self.decoder.skipped();
        if skipped > 0 {
            tracing::warn!(table = %tname, skipped, "filesystem source skipped records that did not parse");
        }
        Ok(())
    }

    fn checkpointable(&self) -> bool {
        true
    }

    fn restore(&mut self, position: &[u8]) -> Result<()> {
        let bad = || RsqlError::execution(format!("filesystem table '{}': the saved position is damaged", self.table.path.name));
        let v: serde_json::Value = serde_json::from_slice(position).map_err(|_| bad())?;
        let file = v.get("file").ok_or_else(bad)?.as_str().map(str::to_string);
        let record = v.get("record").and_then(|r| r.as_u64()).ok_or_else(bad)?;
        self.resume = Some((file, record));
        Ok(())
    }
}

fn unique_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{:x}-{}", nanos, std::process::id(), seq)
}

struct OpenFile {
    file: std::fs::File,
    tmp: PathBuf,
    done: PathBuf,
    bytes: u64,
}

struct FilesystemSink {
    table: String,
    dir: PathBuf,
    changelog: bool,
    encoder: Box<dyn RowEncoder>,
    id: String,
    part: u64,
    current: Option<OpenFile>,
    buf: Vec<u8>,
    roll_size: u64,
}

impl FilesystemSink {
    fn open(&mut self) -> Result<&mut OpenFile> {
        if self.current.is_none() {
            if self.dir.is_file() {
                return Err(RsqlError::connector(
                    format!("table '{}'", self.table),
                    format!("'{}' is a file; the filesystem sink writes part files into a directory", self.dir.display()),
                ));
            }
            std::fs::create_dir_all(&self.dir).map_err(|e| {
                RsqlError::io(format!("table '{}': cannot create directory '{}'", self.table, self.dir.display()), e)
            })?;
            let name = format!("part-{}-{}", self.id, self.part);
            self.part += 1;
            let tmp = self.dir.join(format!(".{name}.inprogress"));
            let done = self.dir.join(name);
            let file = std::fs::File::create(&tmp)
                .map_err(|e| RsqlError::io(format!("table '{}': cannot create '{}'", self.table, tmp.display()), e))?;
            self.current = Some(OpenFile { file, tmp, done, bytes: 0 });
        }
        match self.current.as_mut() {
            Some(f) => Ok(f),
            None => Err(RsqlError::execution("filesystem sink: no open file")),
        }
    }

    fn write_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let table = self.table.clone();
        let buf = std::mem::take(&mut self.buf);
        let f = self.open()?;
        f.file
            .write_all(&buf)
            .map_err(|e| RsqlError::io(format!("table '{table}': cannot write '{}'", f.tmp.display()), e))?;
        f.bytes += buf.len() as u64;
        let roll = f.bytes >= self.roll_size;
        self.buf = buf;
        self.buf.clear();
        if roll {
            self.commit()?;
        }
        Ok(())
    }

    /// Syncs the in-progress file and makes it visible under its final name.
    fn commit(&mut self) -> Result<()> {
        if let Some(f) = self.current.take() {
            f.file
                .sync_data()
                .map_err(|e| RsqlError::io(format!("table '{}': cannot sync '{}'", self.table, f.tmp.display()), e))?;
            std::fs::rename(&f.tmp, &f.done).map_err(|e| {
                RsqlError::io(format!("table '{}': cannot rename '{}' to '{}'", self.table, f.tmp.display(), f.done.display()), e)
            })?;
        }
        Ok(())
    }

    fn encode_batch(&mut self, data: &RecordBatch, kinds: &[RowKind]) -> Result<()> {
        for (row, kind) in kinds.iter().enumerate() {
            if !self.changelog && *kind != RowKind::Insert {
                return Err(RsqlError::execution(format!(
                    "table '{}': the filesystem sink got a {} row but its format accepts only inserts",
                    self.table, kind
                )));
            }
            self.encoder.encode(data, row, *kind, &mut self.buf)?;
            self.buf.push(b'\n');
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FilesystemSink {
    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        self.encode_batch(&batch.data, &batch.kinds)?;
        if self.buf.len() >= 1 << 20 {
            self.write_buf()?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.write_buf()?;
        self.commit()
    }

    async fn close(&mut self) -> Result<()> {
        self.flush().await
    }
}

/// Options of a filesystem table, for tests and tools that build one by hand.
pub fn options(path: &str, format: &str, extra: &[(&str, &str)]) -> BTreeMap<String, rsql_common::catalog::OptionValue> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        m.insert(k.to_string(), rsql_common::catalog::OptionValue { value: v.to_string(), location: Default::default() });
    };
    put("connector", "filesystem");
    put("path", path);
    put("format", format);
    for (k, v) in extra {
        put(k, v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::builder::datum_at;
    use rsql_common::catalog::{ColumnDef, ObjectPath};
    use rsql_runtime::connector::Message;
    use tokio::sync::{mpsc, watch};

    fn table(path: &str, format: &str, extra: &[(&str, &str)]) -> TableDef {
        TableDef {
            path: ObjectPath::new("default_catalog", "default_database", "t"),
            columns: vec![
                ColumnDef::physical("id", LogicalType::not_null(FlinkType::Int)),
                ColumnDef::physical("name", LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))),
                ColumnDef::physical("price", LogicalType::nullable(FlinkType::Float)),
            ],
            primary_key: None,
            watermark: None,
            options: options(path, format, extra),
            comment: None,
            temporary: false,
            location: Default::default(),
        }
    }

    fn produced(t: &TableDef) -> Vec<ProducedColumn> {
        t.physical_columns().map(|c| ProducedColumn::Physical { name: c.name.clone(), ty: c.ty.clone() }).collect()
    }

    async fn read_all(t: &TableDef, cols: &[ProducedColumn]) -> Result<Vec<(RowKind, Vec<Datum>)>> {
        Ok(read_from(t, cols, None).await?.0)
    }

    /// Reads the table (resuming from `from`); returns the rows and the positions reported.
    async fn read_from(
        t: &TableDef,
        cols: &[ProducedColumn],
        from: Option<&[u8]>,
    ) -> Result<(Vec<(RowKind, Vec<Datum>)>, Vec<(usize, Vec<u8>)>)> {
        let mut src = FilesystemFactory.create_source(t, cols)?;
        if let Some(p) = from {
            src.restore(p)?;
        }
        let (tx, mut rx) = mpsc::channel(1024);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let ctx = SourceContext {
            out: tx,
            stop: stop_rx,
            table: "t".into(),
            max_batch_delay: std::time::Duration::from_millis(10),
            batch_size: 2,
        };
        src.run(ctx).await?;
        let mut rows = Vec::new();
        let mut positions = Vec::new();
        while let Ok(m) = rx.try_recv() {
            match m {
                Message::Batch(b) => {
                    for r in 0..b.num_rows() {
                        let vals = b.data.columns().iter().map(|c| datum_at(c.as_ref(), r)).collect::<Result<Vec<_>>>()?;
                        rows.push((b.kinds[r], vals));
                    }
                }
                Message::Position(p) => positions.push((rows.len(), p)),
                _ => {}
            }
        }
        Ok((rows, positions))
    }

    #[tokio::test]
    async fn resumes_from_every_reported_position() {
        let dir = tmpdir("resume");
        std::fs::write(dir.join("a.csv"), "1,a,1\n2,b,2\n3,c,3\n").unwrap();
        std::fs::write(dir.join("b.csv"), "4,d,4\n5,e,5\n").unwrap();
        let t = table(dir.to_str().unwrap(), "csv", &[]);
        let (all, positions) = read_from(&t, &produced(&t), None).await.unwrap();
        assert_eq!(all.len(), 5);
        assert!(positions.len() >= 3, "{positions:?}");
        for (seen, pos) in positions {
            let (rest, _) = read_from(&t, &produced(&t), Some(&pos)).await.unwrap();
            assert_eq!(rest, all[seen..].to_vec(), "resuming after {seen} rows");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rsql-fs-{name}-{}", unique_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn batch(t: &TableDef, rows: Vec<Vec<Datum>>) -> RecordBatch {
        let cols: Vec<(String, LogicalType)> = physical_columns(t);
        let mut b = rsql_common::builder::RowsBuilder::new(&cols, 4).unwrap();
        for r in rows {
            b.append_row(r).unwrap();
        }
        b.finish().unwrap()
    }

    #[tokio::test]
    async fn writes_and_reads_json_part_files() {
        let dir = tmpdir("json");
        let t = table(dir.to_str().unwrap(), "json", &[]);
        FilesystemFactory.validate(&t).unwrap();
        let mut sink = FilesystemFactory.create_sink(&t, &ChangelogMode::InsertOnly).unwrap();
        let data = batch(
            &t,
            vec![
                vec![Datum::Int(1), Datum::Str("beijing".into()), Datum::Float(10.0)],
                vec![Datum::Int(2), Datum::Null, Datum::Float(2.5)],
                vec![Datum::Int(3), Datum::Str("a \"q\"".into()), Datum::Null],
            ],
        );
        sink.write(ChangeBatch::inserts(data)).await.unwrap();
        // Nothing visible before the flush.
        assert!(list_files(&dir, "t").unwrap().is_empty());
        sink.flush().await.unwrap();
        sink.close().await.unwrap();
        let files = list_files(&dir, "t").unwrap();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert_eq!(
            text,
            "{\"id\":1,\"name\":\"beijing\",\"price\":10.0}\n{\"id\":2,\"name\":null,\"price\":2.5}\n{\"id\":3,\"name\":\"a \\\"q\\\"\",\"price\":null}\n"
        );
        let rows = read_all(&t, &produced(&t)).await.unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].1, vec![Datum::Int(1), Datum::Str("beijing".into()), Datum::Float(10.0)]);
        assert_eq!(rows[2].1, vec![Datum::Int(3), Datum::Str("a \"q\"".into()), Datum::Null]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn reads_csv_with_metadata_and_reports_bad_lines() {
        let dir = tmpdir("csv");
        std::fs::write(dir.join("a.csv"), "1,\"x,\ny\",1.5\n2,z,\n").unwrap();
        std::fs::write(dir.join("_ignored"), "garbage").unwrap();
        let t = table(dir.to_str().unwrap(), "csv", &[]);
        let mut cols = produced(&t);
        cols.push(ProducedColumn::Metadata {
            key: META_NAME.into(),
            name: "fname".into(),
            ty: LogicalType::not_null(FlinkType::Varchar(MAX_LENGTH)),
        });
        let rows = read_all(&t, &cols).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1[1], Datum::Str("x,\ny".into()));
        assert_eq!(rows[1].1, vec![Datum::Int(2), Datum::Str("z".into()), Datum::Null, Datum::Str("a.csv".into())]);

        std::fs::write(dir.join("b.csv"), "3,ok,1\nnope,bad,1\n").unwrap();
        let err = read_all(&t, &produced(&t)).await.unwrap_err().to_string();
        assert!(err.contains("b.csv' line 2"), "{err}");
        assert!(err.contains("'nope,bad,1'"), "{err}");
        let t2 = table(dir.to_str().unwrap(), "csv", &[("csv.ignore-parse-errors", "true")]);
        assert_eq!(read_all(&t2, &produced(&t2)).await.unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn debezium_files_carry_the_changelog() {
        let dir = tmpdir("dbz");
        let t = table(dir.to_str().unwrap(), "debezium-json", &[]);
        assert!(FilesystemFactory.sink_accepts_updates(&t));
        assert!(!FilesystemFactory.sink_accepts_updates(&table("/x", "json", &[])));
        assert!(FilesystemFactory.create_sink(&table("/x", "json", &[]), &ChangelogMode::All).is_err());
        let mut sink = FilesystemFactory.create_sink(&t, &ChangelogMode::All).unwrap();
        let data = batch(
            &t,
            vec![
                vec![Datum::Int(1), Datum::Str("a".into()), Datum::Float(1.0)],
                vec![Datum::Int(1), Datum::Str("a".into()), Datum::Float(1.0)],
                vec![Datum::Int(1), Datum::Str("b".into()), Datum::Float(2.0)],
                vec![Datum::Int(1), Datum::Str("b".into()), Datum::Float(2.0)],
            ],
        );
        let kinds = vec![RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter, RowKind::Delete];
        sink.write(ChangeBatch::new(data, kinds)).await.unwrap();
        sink.close().await.unwrap();
        let rows = read_all(&t, &produced(&t)).await.unwrap();
        let kinds: Vec<RowKind> = rows.iter().map(|r| r.0).collect();
        // Flink writes -U as a delete and +U as an insert.
        assert_eq!(kinds, vec![RowKind::Insert, RowKind::Delete, RowKind::Insert, RowKind::Delete]);
        assert_eq!(FilesystemFactory.source_info(&t).unwrap().changelog_mode, ChangelogMode::All);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn options_are_checked() {
        let reg_opts = FilesystemFactory.options(&table("/x", "json", &[]));
        let t = table("/x", "json", &[("json.fail-on-missing-feld", "true")]);
        let e = reg_opts.validate(&t).unwrap_err().to_string();
        assert!(e.contains("did you mean 'json.fail-on-missing-field'"), "{e}");
        let e = FilesystemFactory.validate(&table("/x", "jsn", &[])).unwrap_err().to_string();
        assert!(e.contains("did you mean 'json'"), "{e}");
        let e = FilesystemFactory.validate(&table("hdfs://x/y", "json", &[])).unwrap_err().to_string();
        assert!(e.contains("hdfs://"), "{e}");
        assert_eq!(parse_size("128MB"), Some(128 << 20));
        assert_eq!(parse_size("10 kb"), Some(10 << 10));
    }
}
