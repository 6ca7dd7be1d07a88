//! Prints how fast datagen builds batches, with no engine around it:
//! `cargo run --release -p rsql-connectors --example datagen_speed`.

use std::collections::BTreeMap;
use std::time::Instant;

use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue, TableDef};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::Location;
use rsql_connectors::datagen::DatagenSource;
use rsql_runtime::ProducedColumn;

fn main() {
    let columns = vec![
        ColumnDef::physical("event_id", LogicalType::nullable(FlinkType::BigInt)),
        ColumnDef::physical("user_id", LogicalType::nullable(FlinkType::Int)),
        ColumnDef::physical("amount", LogicalType::nullable(FlinkType::Double)),
        ColumnDef::physical("category", LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))),
    ];
    let mut options = BTreeMap::new();
    for (k, v) in [("connector", "datagen"), ("fields.user_id.min", "1"), ("fields.user_id.max", "1000000"), ("fields.category.length", "4")] {
        options.insert(k.to_string(), OptionValue { value: v.to_string(), location: Location::default() });
    }
    let table = TableDef {
        path: ObjectPath::new("default_catalog", "default_database", "events"),
        columns,
        primary_key: None,
        watermark: None,
        options,
        comment: None,
        temporary: false,
        location: Location::default(),
    };
    let produced: Vec<ProducedColumn> = table.columns.iter().map(|c| ProducedColumn::Physical { name: c.name.clone(), ty: c.ty.clone() }).collect();
    for (label, cols) in [("bigint+int+double+string(4)", produced.clone()), ("int+double", produced[1..3].to_vec())] {
        let mut src = match DatagenSource::new(&table, &cols) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
        let started = Instant::now();
        let mut rows = 0;
        while rows < 20_000_000 {
            match src.next_batch(8192) {
                Ok(Some(b)) => rows += b.num_rows(),
                Ok(None) => break,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!("datagen {label}: {rows} rows in {secs:.3} s = {:.1} M rows/s", rows as f64 / secs / 1e6);
    }
}
