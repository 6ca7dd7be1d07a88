//! A kafka or upsert-kafka table's options resolved and checked once: topics, the librdkafka
//! properties, key and value formats with the columns each one carries, where reading starts and
//! ends, and how the sink partitions and delivers.

use std::collections::BTreeMap;
use std::time::Duration;

use rsql_common::catalog::TableDef;
use rsql_common::options::Opts;
use rsql_common::types::LogicalType;
use rsql_common::{Result, RsqlError};
use rsql_connectors::formats;

/// Where a source starts reading each partition.
#[derive(Clone, Debug, PartialEq)]
pub enum StartupMode {
    Earliest,
    Latest,
    /// The group's committed offsets; partitions without one follow
    /// `properties.auto.offset.reset` (earliest unless set).
    GroupOffsets,
    /// The first offset whose timestamp is at or after these epoch milliseconds.
    Timestamp(i64),
    /// Per partition; partitions not listed start from the committed offset, else earliest.
    SpecificOffsets(BTreeMap<i32, i64>),
}

/// Where a bounded source stops (exclusive end offset per partition).
#[derive(Clone, Debug, PartialEq)]
pub enum BoundedMode {
    /// The high watermarks seen when the source starts.
    Latest,
    GroupOffsets,
    Timestamp(i64),
    /// Per partition; partitions not listed end at their high watermark at start.
    SpecificOffsets(BTreeMap<i32, i64>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitioner {
    /// By key hash (murmur2, as Java clients) when there is a key, else librdkafka's choice.
    Default,
    /// Every row to partition 0.
    Fixed,
    RoundRobin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    None,
    AtLeastOnce,
    ExactlyOnce,
}

/// A resolved kafka / upsert-kafka table.
#[derive(Clone, Debug)]
pub struct KafkaTable {
    pub table: TableDef,
    pub upsert: bool,
    pub topics: Vec<String>,
    pub topic_pattern: Option<String>,
    /// `properties.*` without the prefix, handed to librdkafka.
    pub properties: BTreeMap<String, String>,
    pub value_format: String,
    /// Prefix of the value format's options: `value.` or `` (for `'format'`).
    pub value_prefix: &'static str,
    pub key_format: Option<String>,
    /// The table's physical columns in order.
    pub physical: Vec<(String, LogicalType)>,
    /// Indices into `physical` of the columns in the key, in key order.
    pub key_fields: Vec<usize>,
    /// Indices into `physical` of the columns in the value.
    pub value_fields: Vec<usize>,
    pub key_prefix: String,
    pub startup: StartupMode,
    pub bounded: Option<BoundedMode>,
    pub group_id: Option<String>,
    /// How often an unbounded source looks for new partitions and topics (None: never).
    pub discovery_interval: Option<Duration>,
    pub partitioner: Partitioner,
    pub delivery: DeliveryGuarantee,
    pub transactional_id_prefix: Option<String>,
    /// upsert-kafka sink buffering (both set and positive to be on).
    pub buffer_max_rows: usize,
    pub buffer_interval: Option<Duration>,
    /// `sink.parallelism`: how many writers (producers) the sink runs.
    pub sink_parallelism: usize,
}

fn parse_offsets(opts: &Opts<'_>, key: &str) -> Result<BTreeMap<i32, i64>> {
    let v = opts.required(key)?;
    let mut out = BTreeMap::new();
    for part in v.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let mut partition = None;
        let mut offset = None;
        for kv in part.split(',') {
            let (k, val) = kv.split_once(':').ok_or_else(|| {
                opts.error(key, format!("'{part}' must look like 'partition:0,offset:42'"))
            })?;
            match k.trim() {
                "partition" => partition = val.trim().parse::<i32>().ok(),
                "offset" => offset = val.trim().parse::<i64>().ok(),
                _ => return Err(opts.error(key, format!("'{part}' must look like 'partition:0,offset:42'"))),
            }
        }
        match (partition, offset) {
            (Some(p), Some(o)) if p >= 0 && o >= 0 => {
                out.insert(p, o);
            }
            _ => return Err(opts.error(key, format!("'{part}' must look like 'partition:0,offset:42'"))),
        }
    }
    if out.is_empty() {
        return Err(opts.error(key, "lists no partition; write 'partition:0,offset:42;partition:1,offset:7'"));
    }
    Ok(out)
}

impl KafkaTable {
    /// Resolves and checks the options of a `kafka` (`upsert = false`) or `upsert-kafka` table.
    pub fn resolve(table: &TableDef, upsert: bool) -> Result<KafkaTable> {
        let opts = Opts::new(table);
        let connector = if upsert { "upsert-kafka" } else { "kafka" };
        let properties = opts.with_prefix("properties.");
        if !properties.contains_key("bootstrap.servers") {
            return Err(opts.error(
                "properties.bootstrap.servers",
                "is required; add 'properties.bootstrap.servers' = 'host:9092' to the WITH clause",
            ));
        }
        let topics: Vec<String> =
            opts.get("topic").map(|t| t.split(';').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
        let topic_pattern = opts.get("topic-pattern").map(str::to_string);
        match (topics.is_empty(), &topic_pattern) {
            (true, None) => {
                return Err(opts.error(
                    "topic",
                    format!("is required; a {connector} table needs 'topic'{}", if upsert { "" } else { " or 'topic-pattern'" }),
                ))
            }
            (false, Some(_)) => return Err(opts.error("topic-pattern", "cannot be set together with 'topic'; choose one")),
            _ => {}
        }
        if let Some(p) = &topic_pattern {
            regex::Regex::new(p).map_err(|e| opts.error("topic-pattern", format!("'{p}' is not a valid regular expression: {e}")))?;
        }

        // Formats.
        let (value_format, value_prefix) = match (opts.get("format"), opts.get("value.format")) {
            (Some(_), Some(_)) => return Err(opts.error("format", "cannot be set together with 'value.format'; keep one")),
            (Some(_), None) if upsert => {
                return Err(opts.error("format", "upsert-kafka takes 'key.format' and 'value.format' instead of 'format'"))
            }
            (Some(f), None) => {
                formats::check_format(table, "format", f)?;
                (f.to_string(), "")
            }
            (None, Some(f)) => {
                formats::check_format(table, "value.format", f)?;
                (f.to_string(), "value.")
            }
            (None, None) => {
                return Err(opts.error(
                    if upsert { "value.format" } else { "format" },
                    "is required; for example 'value.format' = 'json'",
                ))
            }
        };
        let key_format = opts.get("key.format").map(str::to_string);
        if let Some(f) = &key_format {
            formats::check_format(table, "key.format", f)?;
            if formats::is_changelog_format(f) {
                return Err(opts.error("key.format", format!("'{f}' is a changelog format and cannot encode a key; use 'json', 'csv' or 'raw'")));
            }
        }
        if upsert && formats::is_changelog_format(&value_format) {
            return Err(opts.error(
                "value.format",
                format!("'{value_format}' is a changelog format; upsert-kafka writes the row itself, use 'json', 'csv' or 'raw'"),
            ));
        }

        let physical: Vec<(String, LogicalType)> = table.physical_columns().map(|c| (c.name.clone(), c.ty.clone())).collect();
        let find = |name: &str| physical.iter().position(|(n, _)| n == name);

        // Key fields.
        let key_fields: Vec<usize> = if upsert {
            let pk = table.primary_key.as_ref().ok_or_else(|| {
                RsqlError::validation(
                    format!(
                        "table '{}': an upsert-kafka table needs a PRIMARY KEY; add PRIMARY KEY (col) NOT ENFORCED",
                        table.path.name
                    ),
                    Some(table.location),
                )
            })?;
            if key_format.is_none() {
                return Err(opts.error("key.format", "is required for upsert-kafka; for example 'key.format' = 'json'"));
            }
            if opts.get("key.fields").is_some() {
                return Err(opts.error("key.fields", "is not used by upsert-kafka: the key is the primary key"));
            }
            pk.iter()
                .map(|k| {
                    find(k).ok_or_else(|| {
                        RsqlError::validation(format!("table '{}': primary key column '{k}' is not a physical column", table.path.name), None)
                    })
                })
                .collect::<Result<_>>()?
        } else {
            match (opts.get("key.fields"), &key_format) {
                (None, None) => Vec::new(),
                (Some(_), None) => return Err(opts.error("key.fields", "needs 'key.format' too")),
                (None, Some(_)) => return Err(opts.error("key.format", "needs 'key.fields' too, e.g. 'key.fields' = 'id'")),
                (Some(fields), Some(_)) => fields
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|f| {
                        find(f).ok_or_else(|| {
                            opts.error("key.fields", format!("'{f}' is not a physical column of the table"))
                        })
                    })
                    .collect::<Result<_>>()?,
            }
        };
        let key_prefix = opts.get("key.fields-prefix").unwrap_or("").to_string();
        let include = opts.get("value.fields-include").unwrap_or("ALL").to_ascii_uppercase();
        if !key_prefix.is_empty() {
            if include != "EXCEPT_KEY" {
                return Err(opts.error("key.fields-prefix", "needs 'value.fields-include' = 'EXCEPT_KEY'"));
            }
            for &k in &key_fields {
                if !physical[k].0.starts_with(&key_prefix) {
                    return Err(opts.error(
                        "key.fields-prefix",
                        format!("key column '{}' does not start with the prefix '{key_prefix}'", physical[k].0),
                    ));
                }
            }
        }
        let value_fields: Vec<usize> = if include == "EXCEPT_KEY" {
            (0..physical.len()).filter(|i| !key_fields.contains(i)).collect()
        } else {
            (0..physical.len()).collect()
        };
        if value_fields.is_empty() {
            return Err(opts.error("value.fields-include", "leaves no column in the value; use 'ALL'"));
        }

        // Start and bound.
        let startup = if upsert {
            StartupMode::Earliest
        } else {
            match opts.get("scan.startup.mode").unwrap_or("group-offsets") {
                "earliest-offset" => StartupMode::Earliest,
                "latest-offset" => StartupMode::Latest,
                "group-offsets" => StartupMode::GroupOffsets,
                "timestamp" => StartupMode::Timestamp(
                    opts.opt_int("scan.startup.timestamp-millis")?
                        .ok_or_else(|| opts.error("scan.startup.timestamp-millis", "is required when 'scan.startup.mode' = 'timestamp'"))?,
                ),
                "specific-offsets" => StartupMode::SpecificOffsets(parse_offsets(&opts, "scan.startup.specific-offsets")?),
                other => return Err(opts.error("scan.startup.mode", format!("'{other}' must be one of {}", STARTUP.join(", ")))),
            }
        };
        let bounded = match opts.get("scan.bounded.mode").unwrap_or("unbounded") {
            "unbounded" => None,
            "latest-offset" => Some(BoundedMode::Latest),
            "group-offsets" => Some(BoundedMode::GroupOffsets),
            "timestamp" => Some(BoundedMode::Timestamp(
                opts.opt_int("scan.bounded.timestamp-millis")?
                    .ok_or_else(|| opts.error("scan.bounded.timestamp-millis", "is required when 'scan.bounded.mode' = 'timestamp'"))?,
            )),
            "specific-offsets" => Some(BoundedMode::SpecificOffsets(parse_offsets(&opts, "scan.bounded.specific-offsets")?)),
            other => return Err(opts.error("scan.bounded.mode", format!("'{other}' must be one of {}", BOUNDED.join(", ")))),
        };
        let group_id = properties.get("group.id").cloned();
        if group_id.is_none() && (startup == StartupMode::GroupOffsets && !upsert && opts.get("scan.startup.mode").is_some()
            || bounded == Some(BoundedMode::GroupOffsets))
        {
            return Err(opts.error("properties.group.id", "is required to read from or up to the group's committed offsets"));
        }

        let discovery = opts.duration("scan.topic-partition-discovery.interval", Duration::from_secs(300))?;
        let discovery_interval = if upsert || discovery.is_zero() { None } else { Some(discovery) };

        let partitioner = match opts.get("sink.partitioner").unwrap_or("default") {
            "default" => Partitioner::Default,
            "fixed" => Partitioner::Fixed,
            "round-robin" => Partitioner::RoundRobin,
            other => {
                return Err(opts.error(
                    "sink.partitioner",
                    format!("'{other}' is not supported; use 'default', 'fixed' or 'round-robin' (custom partitioner classes cannot run here)"),
                ))
            }
        };
        let delivery_key = if opts.get("sink.delivery-guarantee").is_some() { "sink.delivery-guarantee" } else { "sink.semantic" };
        let delivery = match opts.get(delivery_key).map(|s| s.to_ascii_lowercase().replace('_', "-")).as_deref() {
            None | Some("at-least-once") => DeliveryGuarantee::AtLeastOnce,
            Some("none") => DeliveryGuarantee::None,
            Some("exactly-once") => DeliveryGuarantee::ExactlyOnce,
            Some(other) => return Err(opts.error(delivery_key, format!("'{other}' must be none, at-least-once or exactly-once"))),
        };
        let transactional_id_prefix = opts.get("sink.transactional-id-prefix").map(str::to_string);
        if delivery == DeliveryGuarantee::ExactlyOnce && transactional_id_prefix.is_none() {
            return Err(opts.error(
                "sink.transactional-id-prefix",
                "is required with 'sink.delivery-guarantee' = 'exactly-once'; pick a prefix unique to this job",
            ));
        }
        let buffer_max_rows = opts.int("sink.buffer-flush.max-rows", 0)?;
        let buffer_interval = opts.duration("sink.buffer-flush.interval", Duration::ZERO)?;
        if (buffer_max_rows > 0) == buffer_interval.is_zero() {
            return Err(opts.error(
                if buffer_max_rows > 0 { "sink.buffer-flush.interval" } else { "sink.buffer-flush.max-rows" },
                "must be set too: buffering needs both 'sink.buffer-flush.max-rows' and 'sink.buffer-flush.interval' greater than zero",
            ));
        }
        if buffer_max_rows < 0 {
            return Err(opts.error("sink.buffer-flush.max-rows", "must not be negative"));
        }

        let sink_parallelism = match opts.opt_int("sink.parallelism")? {
            None => 1,
            Some(n) if (1..=1024).contains(&n) => n as usize,
            Some(n) => {
                return Err(opts.error(
                    "sink.parallelism",
                    format!("is {n}; it must be an integer from 1 to 1024 (the number of writers), e.g. 'sink.parallelism' = '2'"),
                ))
            }
        };

        let t = KafkaTable {
            table: table.clone(),
            upsert,
            topics,
            topic_pattern,
            properties,
            value_format,
            value_prefix,
            key_format,
            physical,
            key_fields,
            value_fields,
            key_prefix,
            startup,
            bounded,
            group_id,
            discovery_interval,
            partitioner,
            delivery,
            transactional_id_prefix,
            buffer_max_rows: buffer_max_rows as usize,
            buffer_interval: if buffer_interval.is_zero() { None } else { Some(buffer_interval) },
            sink_parallelism,
        };
        // Building the codecs checks the format options and the column types now.
        let value_idx: Vec<usize> = (0..t.value_fields.len()).collect();
        formats::create_decoder(&t.value_format, &t.value_columns(), table, t.value_prefix)?;
        formats::create_encoder(&t.value_format, &t.value_columns(), &value_idx, table, t.value_prefix)?;
        if let Some(kf) = &t.key_format {
            let key_idx: Vec<usize> = (0..t.key_fields.len()).collect();
            formats::create_decoder(kf, &t.key_columns(), table, "key.")?;
            formats::create_encoder(kf, &t.key_columns(), &key_idx, table, "key.")?;
        }
        Ok(t)
    }

    /// The table's name, for messages.
    pub fn name(&self) -> &str {
        &self.table.path.name
    }

    /// The key's fields as the key format names them (`key.fields-prefix` removed).
    pub fn key_columns(&self) -> Vec<(String, LogicalType)> {
        self.key_fields
            .iter()
            .map(|&i| {
                let (n, t) = &self.physical[i];
                (n.strip_prefix(&self.key_prefix).unwrap_or(n).to_string(), t.clone())
            })
            .collect()
    }

    /// The value's fields.
    pub fn value_columns(&self) -> Vec<(String, LogicalType)> {
        self.value_fields.iter().map(|&i| self.physical[i].clone()).collect()
    }

    /// `topic 'a'` or `topics 'a', 'b'` or `topics matching 'p'`, for messages.
    pub fn describe_topics(&self) -> String {
        match &self.topic_pattern {
            Some(p) => format!("topics matching '{p}'"),
            None if self.topics.len() == 1 => format!("topic '{}'", self.topics[0]),
            None => format!("topics {}", self.topics.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ")),
        }
    }

    /// The bootstrap servers, for messages.
    pub fn servers(&self) -> &str {
        self.properties.get("bootstrap.servers").map(String::as_str).unwrap_or("?")
    }

    /// A librdkafka config with the table's properties.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

const STARTUP: &[&str] = &["earliest-offset", "latest-offset", "group-offsets", "timestamp", "specific-offsets"];
const BOUNDED: &[&str] = &["unbounded", "latest-offset", "group-offsets", "timestamp", "specific-offsets"];

#[cfg(test)]
mod tests {
    use super::*;
    use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue};
    use rsql_common::types::FlinkType;

    pub(crate) fn table(opts: &[(&str, &str)], pk: Option<&[&str]>) -> TableDef {
        TableDef {
            path: ObjectPath::new("default_catalog", "default_database", "t"),
            columns: vec![
                ColumnDef::physical("id", LogicalType::not_null(FlinkType::Int)),
                ColumnDef::physical("name", LogicalType::nullable(FlinkType::Varchar(40))),
            ],
            primary_key: pk.map(|p| p.iter().map(|s| s.to_string()).collect()),
            watermark: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), OptionValue { value: v.to_string(), location: Default::default() }))
                .collect(),
            comment: None,
            temporary: false,
            location: Default::default(),
        }
    }

    #[test]
    fn upsert_needs_a_primary_key_and_both_formats() {
        let base = [("connector", "upsert-kafka"), ("topic", "t"), ("properties.bootstrap.servers", "x:1")];
        let mut o = base.to_vec();
        o.extend([("key.format", "json"), ("value.format", "json")]);
        let e = KafkaTable::resolve(&table(&o, None), true).unwrap_err().to_string();
        assert!(e.contains("PRIMARY KEY"), "{e}");
        let t = KafkaTable::resolve(&table(&o, Some(&["id"])), true).unwrap();
        assert_eq!(t.key_fields, vec![0]);
        assert_eq!(t.value_fields, vec![0, 1]);
        assert_eq!(t.startup, StartupMode::Earliest);
        let e = KafkaTable::resolve(&table(&base, Some(&["id"])), true).unwrap_err().to_string();
        assert!(e.contains("value.format"), "{e}");
        let mut o2 = o.clone();
        o2.push(("value.fields-include", "EXCEPT_KEY"));
        assert_eq!(KafkaTable::resolve(&table(&o2, Some(&["id"])), true).unwrap().value_fields, vec![1]);
        let mut o3 = o.clone();
        o3.push(("sink.buffer-flush.max-rows", "10"));
        let e = KafkaTable::resolve(&table(&o3, Some(&["id"])), true).unwrap_err().to_string();
        assert!(e.contains("sink.buffer-flush.interval"), "{e}");
    }

    #[test]
    fn kafka_options() {
        let o = [
            ("connector", "kafka"),
            ("topic", "t"),
            ("properties.bootstrap.servers", "x:1"),
            ("format", "json"),
            ("scan.startup.mode", "specific-offsets"),
            ("scan.startup.specific-offsets", "partition:0,offset:42;partition:1,offset:7"),
            ("scan.bounded.mode", "latest-offset"),
        ];
        let t = KafkaTable::resolve(&table(&o, None), false).unwrap();
        assert_eq!(t.startup, StartupMode::SpecificOffsets([(0, 42), (1, 7)].into_iter().collect()));
        assert_eq!(t.bounded, Some(BoundedMode::Latest));
        let bad = [("connector", "kafka"), ("topic", "t"), ("properties.bootstrap.servers", "x:1"), ("format", "jsn")];
        let e = KafkaTable::resolve(&table(&bad, None), false).unwrap_err().to_string();
        assert!(e.contains("did you mean 'json'"), "{e}");
        let no_servers = [("connector", "kafka"), ("topic", "t"), ("format", "json")];
        assert!(KafkaTable::resolve(&table(&no_servers, None), false).unwrap_err().to_string().contains("bootstrap.servers"));
        let key = [
            ("connector", "kafka"),
            ("topic", "t"),
            ("properties.bootstrap.servers", "x:1"),
            ("format", "json"),
            ("key.format", "json"),
            ("key.fields", "nme"),
        ];
        let e = KafkaTable::resolve(&table(&key, None), false).unwrap_err().to_string();
        assert!(e.contains("'nme' is not a physical column"), "{e}");
    }
}
