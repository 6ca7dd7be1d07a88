//! Decode speed of the `json` and `csv` formats: about 1 M messages of about 100 bytes each
//! (INT, DOUBLE, STRING, BIGINT, TIMESTAMP(3)) decoded into Arrow batches of 8192 rows, as a
//! kafka source does. Prints messages/s and MB/s per format.
//!
//! `cargo run --release -p rsql-connectors --example decode_bench [messages]`

use std::time::Instant;

use rsql_common::catalog::{ColumnDef, ObjectPath, OptionValue, TableDef};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_connectors::formats::{create_decoder, DecodedRows};

fn table(format: &str, columns: &[(String, LogicalType)]) -> TableDef {
    TableDef {
        path: ObjectPath::new("default_catalog", "default_database", "bench"),
        columns: columns.iter().map(|(n, t)| ColumnDef::physical(n.clone(), t.clone())).collect(),
        primary_key: None,
        watermark: None,
        options: [("connector", "kafka"), ("format", format)]
            .iter()
            .map(|(k, v)| (k.to_string(), OptionValue { value: v.to_string(), location: Default::default() }))
            .collect(),
        comment: None,
        temporary: false,
        location: Default::default(),
    }
}

fn messages(format: &str, n: usize) -> Vec<Vec<u8>> {
    let regions = ["beijing", "shanghai", "shenzhen", "hangzhou"];
    (0..n)
        .map(|i| {
            let (id, rev, region, cust) = (i, (i % 1000) as f64 * 1.25, regions[i % 4], i % 5000);
            let ts = format!("2024-01-{:02} {:02}:{:02}:{:02}.{:03}", 1 + i % 28, i % 24, i % 60, (i / 60) % 60, i % 1000);
            match format {
                "json" => format!(
                    r#"{{"order_id":{id},"order_revenue":{rev},"order_region":"{region}","customer_id":{cust},"order_ts":"{ts}"}}"#
                ),
                _ => format!("{id},{rev},{region},{cust},{ts}"),
            }
            .into_bytes()
        })
        .collect()
}

fn main() -> rsql_common::Result<()> {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let columns: Vec<(String, LogicalType)> = vec![
        ("order_id".into(), LogicalType::not_null(FlinkType::Int)),
        ("order_revenue".into(), LogicalType::nullable(FlinkType::Double)),
        ("order_region".into(), LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))),
        ("customer_id".into(), LogicalType::nullable(FlinkType::BigInt)),
        ("order_ts".into(), LogicalType::nullable(FlinkType::Timestamp(3))),
    ];
    for format in ["json", "csv"] {
        let msgs = messages(format, n);
        let bytes: usize = msgs.iter().map(Vec::len).sum();
        let t = table(format, &columns);
        // "columns": the decoder's own path into the Arrow builders (`decode`); "row of values":
        // each message decoded into a row of values appended to the builders, the path every
        // decoder took before `json` learnt to fill the columns field by field.
        for via_rows in [false, true] {
            let mut best = f64::MAX;
            let mut rows_out = 0;
            for _ in 0..3 {
                let mut decoder = create_decoder(format, &columns, &t, "")?;
                let mut rows = DecodedRows::new(&columns, 8192)?;
                rows_out = 0;
                let start = Instant::now();
                for m in &msgs {
                    if via_rows {
                        decoder.decode_with(m, &mut |kind, values| rows.push(kind, values))?;
                    } else {
                        decoder.decode(m, &mut rows)?;
                    }
                    if rows.len() == 8192 {
                        rows_out += rows.finish()?.num_rows();
                    }
                }
                rows_out += rows.finish()?.num_rows();
                best = best.min(start.elapsed().as_secs_f64());
            }
            assert_eq!(rows_out, n);
            println!(
                "{format:5} {:13} {n} messages of {:.0} bytes: {:.2} M messages/s, {:.0} MB/s (best of 3, {:.3} s)",
                if via_rows { "row of values" } else { "columns" },
                bytes as f64 / n as f64,
                n as f64 / best / 1e6,
                bytes as f64 / best / 1e6,
                best
            );
        }
    }
    Ok(())
}
