//! Round trips of every format through the public codec API, and the exact text Flink's formats
//! write for the seed's rows and for every scalar type.

use std::collections::BTreeMap;

use rsql_common::arrow::record_batch::RecordBatch;
use rsql_common::builder::{datum_at, Datum, RowsBuilder};
use rsql_common::catalog::{ObjectPath, OptionValue, TableDef};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::RowKind;
use rsql_connectors::formats::{self, DecodedRows};

fn table(opts: &[(&str, &str)]) -> TableDef {
    TableDef {
        path: ObjectPath::new("default_catalog", "default_database", "t"),
        columns: Vec::new(),
        primary_key: None,
        watermark: None,
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), OptionValue { value: v.to_string(), location: Default::default() }))
            .collect::<BTreeMap<_, _>>(),
        comment: None,
        temporary: false,
        location: Default::default(),
    }
}

fn cols(spec: &[(&str, FlinkType)]) -> Vec<(String, LogicalType)> {
    spec.iter().map(|(n, t)| (n.to_string(), LogicalType::nullable(t.clone()))).collect()
}

fn batch(columns: &[(String, LogicalType)], rows: Vec<Vec<Datum>>) -> RecordBatch {
    let mut b = RowsBuilder::new(columns, rows.len()).unwrap();
    for r in rows {
        b.append_row(r).unwrap();
    }
    b.finish().unwrap()
}

fn encode(format: &str, columns: &[(String, LogicalType)], t: &TableDef, b: &RecordBatch, kinds: &[RowKind]) -> Vec<String> {
    let idx: Vec<usize> = (0..columns.len()).collect();
    let mut enc = formats::create_encoder(format, columns, &idx, t, "").unwrap();
    (0..kinds.len())
        .map(|r| {
            let mut buf = Vec::new();
            enc.encode(b, r, kinds[r], &mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        })
        .collect()
}

fn decode(format: &str, columns: &[(String, LogicalType)], t: &TableDef, messages: &[&[u8]]) -> Vec<(RowKind, Vec<Datum>)> {
    let mut dec = formats::create_decoder(format, columns, t, "").unwrap();
    let mut out = DecodedRows::new(columns, 8).unwrap();
    for m in messages {
        dec.decode(m, &mut out).unwrap();
    }
    let b = out.finish().unwrap();
    (0..b.num_rows())
        .map(|r| (b.kinds[r], b.data.columns().iter().map(|c| datum_at(c.as_ref(), r).unwrap()).collect()))
        .collect()
}

fn s(v: &str) -> Datum {
    Datum::Str(v.into())
}

#[test]
fn seed_rows_print_exactly_like_flink() {
    let orders = cols(&[
        ("order_id", FlinkType::Int),
        ("order_revenue", FlinkType::Float),
        ("order_region", FlinkType::Varchar(40)),
        ("customer_id", FlinkType::Int),
    ]);
    let b = batch(
        &orders,
        vec![
            vec![Datum::Int(1), Datum::Float(10.0), s("beijing"), Datum::Int(1)],
            vec![Datum::Int(2), Datum::Float(10.0), s("beijing"), Datum::Int(1)],
        ],
    );
    let t = table(&[]);
    assert_eq!(
        encode("json", &orders, &t, &b, &[RowKind::Insert, RowKind::Insert]),
        vec![
            r#"{"order_id":1,"order_revenue":10.0,"order_region":"beijing","customer_id":1}"#,
            r#"{"order_id":2,"order_revenue":10.0,"order_region":"beijing","customer_id":1}"#,
        ]
    );
    let customers =
        cols(&[("customer_id", FlinkType::Int), ("customer_age", FlinkType::Float), ("customer_name", FlinkType::Varchar(MAX_LENGTH))]);
    let b = batch(&customers, vec![vec![Datum::Int(1), Datum::Float(22.0), s("emr_test")]]);
    assert_eq!(
        encode("json", &customers, &t, &b, &[RowKind::Insert]),
        vec![r#"{"customer_id":1,"customer_age":22.0,"customer_name":"emr_test"}"#]
    );
    let dws = cols(&[("order_region", FlinkType::Varchar(40)), ("order_cnt", FlinkType::BigInt), ("order_total_revenue", FlinkType::Float)]);
    let b = batch(&dws, vec![vec![s("beijing"), Datum::Int(2), Datum::Float(20.0)]]);
    assert_eq!(
        encode("json", &dws, &t, &b, &[RowKind::Insert]),
        vec![r#"{"order_region":"beijing","order_cnt":2,"order_total_revenue":20.0}"#]
    );
    // The key of an upsert-kafka table is the primary key in the key format.
    let key = vec![orders[0].clone()];
    let mut enc = formats::create_encoder("json", &key, &[0], &t, "key.").unwrap();
    let b = batch(&orders, vec![vec![Datum::Int(1), Datum::Float(10.0), s("beijing"), Datum::Int(1)]]);
    let mut buf = Vec::new();
    enc.encode(&b, 0, RowKind::Insert, &mut buf).unwrap();
    assert_eq!(buf, br#"{"order_id":1}"#);
}

fn all_types() -> Vec<(String, LogicalType)> {
    cols(&[
        ("b", FlinkType::Boolean),
        ("ti", FlinkType::TinyInt),
        ("si", FlinkType::SmallInt),
        ("i", FlinkType::Int),
        ("bi", FlinkType::BigInt),
        ("f", FlinkType::Float),
        ("d", FlinkType::Double),
        ("dec", FlinkType::Decimal(10, 2)),
        ("s", FlinkType::Varchar(MAX_LENGTH)),
        ("bytes", FlinkType::Varbinary(MAX_LENGTH)),
        ("date", FlinkType::Date),
        ("time", FlinkType::Time(0)),
        ("ts", FlinkType::Timestamp(3)),
        ("ltz", FlinkType::TimestampLtz(3)),
    ])
}

fn all_types_row() -> Vec<Datum> {
    let ts = rsql_common::builder::parse_timestamp("2024-01-02 03:04:05.123").unwrap();
    vec![
        Datum::Bool(true),
        Datum::Int(-8),
        Datum::Int(300),
        Datum::Int(-2_000_000_000),
        Datum::Int(9_000_000_000_000),
        Datum::Float(0.0009765625),
        Datum::Float(123456.789),
        Datum::Decimal(-1234, 2),
        s("tab\there \"q\" é"),
        Datum::Bytes(vec![0, 1, 2, 254, 255]),
        Datum::Date(rsql_common::builder::parse_date("2024-02-29").unwrap()),
        Datum::Time(rsql_common::builder::parse_time("23:59:58").unwrap()),
        Datum::Timestamp(ts),
        Datum::Timestamp(ts - 123_000),
    ]
}

#[test]
fn json_writes_every_type_like_flink_and_reads_it_back() {
    let c = all_types();
    let b = batch(&c, vec![all_types_row(), vec![Datum::Null; c.len()]]);
    let t = table(&[]);
    let out = encode("json", &c, &t, &b, &[RowKind::Insert, RowKind::Insert]);
    assert_eq!(
        out[0],
        r#"{"b":true,"ti":-8,"si":300,"i":-2000000000,"bi":9000000000000,"f":9.765625E-4,"d":123456.789,"dec":-12.34,"s":"tab\there \"q\" é","bytes":"AAEC/v8=","date":"2024-02-29","time":"23:59:58","ts":"2024-01-02 03:04:05.123","ltz":"2024-01-02 03:04:05Z"}"#
    );
    assert_eq!(
        out[1],
        r#"{"b":null,"ti":null,"si":null,"i":null,"bi":null,"f":null,"d":null,"dec":null,"s":null,"bytes":null,"date":null,"time":null,"ts":null,"ltz":null}"#
    );
    let back = decode("json", &c, &t, &[out[0].as_bytes(), out[1].as_bytes()]);
    assert_eq!(back[0].1, all_types_row());
    assert_eq!(back[1].1, vec![Datum::Null; c.len()]);

    let iso = table(&[("json.timestamp-format.standard", "ISO-8601"), ("json.encode.ignore-null-fields", "true")]);
    let two = cols(&[("ts", FlinkType::Timestamp(3)), ("ltz", FlinkType::TimestampLtz(3)), ("n", FlinkType::Int)]);
    let b2 = batch(&two, vec![vec![Datum::Timestamp(0), Datum::Timestamp(1_500_000), Datum::Null]]);
    assert_eq!(encode("json", &two, &iso, &b2, &[RowKind::Insert]), vec![r#"{"ts":"1970-01-01T00:00:00","ltz":"1970-01-01T00:00:01.5Z"}"#]);
}

#[test]
fn decimals_follow_big_decimal_unless_plain() {
    let c = cols(&[("v", FlinkType::Decimal(20, 8))]);
    let b = batch(&c, vec![vec![Datum::Decimal(1, 8)], vec![Datum::Decimal(12_345_678_900, 8)]]);
    assert_eq!(encode("json", &c, &table(&[]), &b, &[RowKind::Insert; 2]), vec![r#"{"v":1E-8}"#, r#"{"v":123.45678900}"#]);
    let plain = table(&[("json.encode.decimal-as-plain-number", "true")]);
    assert_eq!(encode("json", &c, &plain, &b, &[RowKind::Insert; 2]), vec![r#"{"v":0.00000001}"#, r#"{"v":123.45678900}"#]);
}

#[test]
fn json_reading_rules() {
    let c = cols(&[("a", FlinkType::Int), ("b", FlinkType::Varchar(MAX_LENGTH))]);
    let t = table(&[]);
    let got = decode("json", &c, &t, &[br#"{"b": {"x": [1, true]}, "extra": 1}"#, br#"{"a": "42", "b": 7.50}"#, b"", b"  \n"]);
    assert_eq!(got, vec![(RowKind::Insert, vec![Datum::Null, s(r#"{"x":[1,true]}"#)]), (RowKind::Insert, vec![Datum::Int(42), s("7.50")])]);

    let strict = table(&[("json.fail-on-missing-field", "true")]);
    let mut dec = formats::create_decoder("json", &c, &strict, "").unwrap();
    let mut out = DecodedRows::new(&c, 2).unwrap();
    let e = dec.decode(br#"{"a": 1}"#, &mut out).unwrap_err().to_string();
    assert!(e.contains("could not find field with name 'b'"), "{e}");

    let mut dec = formats::create_decoder("json", &c, &t, "").unwrap();
    let e = dec.decode(br#"{"a": "x"}"#, &mut out).unwrap_err().to_string();
    assert!(e.contains("field 'a'") && e.contains("INT"), "{e}");
    let e = dec.decode(br#"{"a": 1"#, &mut out).unwrap_err().to_string();
    assert!(e.contains("malformed JSON"), "{e}");

    let lenient = table(&[("json.ignore-parse-errors", "true")]);
    let mut dec = formats::create_decoder("json", &c, &lenient, "").unwrap();
    dec.decode(br#"{"a": "x"}"#, &mut out).unwrap();
    dec.decode(b"][", &mut out).unwrap();
    dec.decode(br#"{"a": 5}"#, &mut out).unwrap();
    assert_eq!(dec.skipped(), 2);
    assert_eq!(out.len(), 1);

    let both = table(&[("json.ignore-parse-errors", "true"), ("json.fail-on-missing-field", "true")]);
    assert!(formats::create_decoder("json", &c, &both, "").is_err());
}

#[test]
fn csv_round_trip_and_options() {
    let c = all_types();
    let t = table(&[]);
    let b = batch(&c, vec![all_types_row()]);
    let out = encode("csv", &c, &t, &b, &[RowKind::Insert]);
    assert_eq!(
        out[0],
        "true,-8,300,-2000000000,9000000000000,9.765625E-4,123456.789,-12.34,\"tab\there \"\"q\"\" é\",AAEC/v8=,2024-02-29,23:59:58,\"2024-01-02 03:04:05.123\",\"2024-01-02 03:04:05Z\""
    );
    let back = decode("csv", &c, &t, &[out[0].as_bytes()]);
    assert_eq!(back[0].1, all_types_row());

    let piped = table(&[("csv.field-delimiter", "|"), ("csv.disable-quote-character", "true"), ("csv.null-literal", "n/a")]);
    let two = cols(&[("a", FlinkType::Int), ("b", FlinkType::Varchar(MAX_LENGTH))]);
    let b = batch(&two, vec![vec![Datum::Int(1), s("x y")], vec![Datum::Null, Datum::Null]]);
    let out = encode("csv", &two, &piped, &b, &[RowKind::Insert; 2]);
    assert_eq!(out, vec!["1|x y", "n/a|n/a"]);
    assert_eq!(
        decode("csv", &two, &piped, &[out[0].as_bytes(), out[1].as_bytes()]),
        vec![(RowKind::Insert, vec![Datum::Int(1), s("x y")]), (RowKind::Insert, vec![Datum::Null, Datum::Null])]
    );
    let comments = table(&[("csv.allow-comments", "true")]);
    assert_eq!(decode("csv", &two, &comments, &[b"# note", b"3,z\r\n"]), vec![(RowKind::Insert, vec![Datum::Int(3), s("z")])]);
    let mut dec = formats::create_decoder("csv", &two, &t, "").unwrap();
    let mut rows = DecodedRows::new(&two, 1).unwrap();
    let e = dec.decode(b"1,a,extra", &mut rows).unwrap_err().to_string();
    assert!(e.contains("3 fields") && e.contains("csv.ignore-parse-errors"), "{e}");
}

#[test]
fn raw_reads_and_writes_one_column() {
    let t = table(&[]);
    let c = cols(&[("v", FlinkType::Int)]);
    let b = batch(&c, vec![vec![Datum::Int(258)], vec![Datum::Null]]);
    let idx = [0usize];
    let mut enc = formats::create_encoder("raw", &c, &idx, &t, "").unwrap();
    let mut buf = Vec::new();
    assert!(enc.encode(&b, 0, RowKind::Insert, &mut buf).unwrap());
    assert_eq!(buf, vec![0, 0, 1, 2]);
    buf.clear();
    assert!(!enc.encode(&b, 1, RowKind::Insert, &mut buf).unwrap(), "NULL has no payload");
    let le = table(&[("raw.endianness", "little-endian")]);
    assert_eq!(decode("raw", &c, &le, &[&[2, 1, 0, 0]]), vec![(RowKind::Insert, vec![Datum::Int(258)])]);
    let mut dec = formats::create_decoder("raw", &c, &t, "").unwrap();
    let mut rows = DecodedRows::new(&c, 1).unwrap();
    assert!(dec.decode(&[1, 2, 3], &mut rows).unwrap_err().to_string().contains("exactly 4 bytes"));
    let two = cols(&[("a", FlinkType::Int), ("b", FlinkType::Int)]);
    assert!(formats::create_decoder("raw", &two, &t, "").is_err());
}

fn people() -> Vec<(String, LogicalType)> {
    cols(&[("id", FlinkType::Int), ("name", FlinkType::Varchar(MAX_LENGTH)), ("weight", FlinkType::Double)])
}

#[test]
fn debezium_reads_every_op_with_or_without_schema() {
    let c = people();
    let t = table(&[]);
    let msgs: Vec<&[u8]> = vec![
        br#"{"before":null,"after":{"id":1,"name":"a","weight":1.5},"source":{"db":"x"},"op":"c","ts_ms":1}"#,
        br#"{"before":null,"after":{"id":2,"name":"b","weight":2},"op":"r"}"#,
        br#"{"before":{"id":1,"name":"a","weight":1.5},"after":{"id":1,"name":"a2","weight":3.0},"op":"u"}"#,
        br#"{"schema":{"type":"struct"},"payload":{"before":{"id":2,"name":"b","weight":2},"after":null,"op":"d"}}"#,
        b"",
    ];
    assert_eq!(
        decode("debezium-json", &c, &t, &msgs),
        vec![
            (RowKind::Insert, vec![Datum::Int(1), s("a"), Datum::Float(1.5)]),
            (RowKind::Insert, vec![Datum::Int(2), s("b"), Datum::Float(2.0)]),
            (RowKind::UpdateBefore, vec![Datum::Int(1), s("a"), Datum::Float(1.5)]),
            (RowKind::UpdateAfter, vec![Datum::Int(1), s("a2"), Datum::Float(3.0)]),
            (RowKind::Delete, vec![Datum::Int(2), s("b"), Datum::Float(2.0)]),
        ]
    );
    let mut dec = formats::create_decoder("debezium-json", &c, &t, "").unwrap();
    let mut rows = DecodedRows::new(&c, 1).unwrap();
    let e = dec.decode(br#"{"before":null,"after":{"id":1},"op":"u"}"#, &mut rows).unwrap_err().to_string();
    assert!(e.contains("\"before\""), "{e}");
    let e = dec.decode(br#"{"after":{"id":1},"op":"x"}"#, &mut rows).unwrap_err().to_string();
    assert!(e.contains("unknown \"op\" value \"x\""), "{e}");
}

#[test]
fn changelog_formats_write_like_flink() {
    let c = people();
    let b = batch(&c, vec![vec![Datum::Int(1), s("a"), Datum::Float(1.0)]; 4]);
    let kinds = [RowKind::Insert, RowKind::UpdateBefore, RowKind::UpdateAfter, RowKind::Delete];
    let t = table(&[]);
    let row = r#"{"id":1,"name":"a","weight":1.0}"#;
    assert_eq!(
        encode("debezium-json", &c, &t, &b, &kinds),
        vec![
            format!(r#"{{"before":null,"after":{row},"op":"c"}}"#),
            format!(r#"{{"before":{row},"after":null,"op":"d"}}"#),
            format!(r#"{{"before":null,"after":{row},"op":"c"}}"#),
            format!(r#"{{"before":{row},"after":null,"op":"d"}}"#),
        ]
    );
    assert_eq!(
        encode("canal-json", &c, &t, &b, &kinds[..2]),
        vec![format!(r#"{{"data":[{row}],"type":"INSERT"}}"#), format!(r#"{{"data":[{row}],"type":"DELETE"}}"#)]
    );
    assert_eq!(
        encode("maxwell-json", &c, &t, &b, &kinds[2..]),
        vec![format!(r#"{{"data":{row},"type":"insert"}}"#), format!(r#"{{"data":{row},"type":"delete"}}"#)]
    );
}

#[test]
fn canal_and_maxwell_updates_take_old_values() {
    let c = people();
    let t = table(&[]);
    let canal: &[u8] = br#"{"data":[{"id":"1","name":"new","weight":"2.5"},{"id":"2","name":"x","weight":"1"}],"old":[{"name":"old"},{"weight":"0.5"}],"database":"shop","table":"people","type":"UPDATE","isDdl":false}"#;
    assert_eq!(
        decode("canal-json", &c, &t, &[canal, br#"{"data":null,"type":"CREATE","isDdl":true,"sql":"create table x"}"#]),
        vec![
            (RowKind::UpdateBefore, vec![Datum::Int(1), s("old"), Datum::Float(2.5)]),
            (RowKind::UpdateAfter, vec![Datum::Int(1), s("new"), Datum::Float(2.5)]),
            (RowKind::UpdateBefore, vec![Datum::Int(2), s("x"), Datum::Float(0.5)]),
            (RowKind::UpdateAfter, vec![Datum::Int(2), s("x"), Datum::Float(1.0)]),
        ]
    );
    let filtered = table(&[("canal-json.table.include", "orders|items")]);
    assert!(decode("canal-json", &c, &filtered, &[canal]).is_empty());

    let maxwell: &[u8] = br#"{"database":"shop","table":"people","type":"update","ts":1,"data":{"id":1,"name":"new","weight":2.0},"old":{"name":"old"}}"#;
    assert_eq!(
        decode("maxwell-json", &c, &t, &[maxwell, br#"{"type":"delete","data":{"id":1,"name":"new","weight":2.0}}"#]),
        vec![
            (RowKind::UpdateBefore, vec![Datum::Int(1), s("old"), Datum::Float(2.0)]),
            (RowKind::UpdateAfter, vec![Datum::Int(1), s("new"), Datum::Float(2.0)]),
            (RowKind::Delete, vec![Datum::Int(1), s("new"), Datum::Float(2.0)]),
        ]
    );
}

#[test]
fn format_options_are_prefixed_and_checked() {
    let specs = formats::format_options("csv", "key.").unwrap();
    assert!(specs.iter().any(|s| s.key == "key.csv.field-delimiter"));
    assert!(formats::format_options("avro", "").unwrap_err().to_string().contains("supported formats"));
    let bad = table(&[("value.json.timestamp-format.standard", "RFC")]);
    let c = cols(&[("a", FlinkType::Int)]);
    let e = formats::create_encoder("json", &c, &[0], &bad, "value.").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("value.json.timestamp-format.standard"), "{e}");
    assert!(formats::is_changelog_format("debezium-json") && !formats::is_changelog_format("json"));
}

#[test]
fn nested_types_read_and_write_as_flink_does() {
    let s_ty = LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH));
    let columns = cols(&[
        ("tags", FlinkType::Array(Box::new(s_ty.clone()))),
        ("attrs", FlinkType::Map(Box::new(s_ty.clone()), Box::new(LogicalType::nullable(FlinkType::Int)))),
        (
            "addr",
            FlinkType::Row(vec![
                ("city".into(), s_ty.clone()),
                ("zips".into(), LogicalType::nullable(FlinkType::Array(Box::new(LogicalType::nullable(FlinkType::Int))))),
            ]),
        ),
    ]);
    let row = vec![
        Datum::list(vec![s("a"), Datum::Null]),
        Datum::map(vec![(s("k"), Datum::Int(1)), (s("n"), Datum::Null)]),
        Datum::row(vec![s("x"), Datum::list(vec![Datum::Int(1), Datum::Int(2)])]),
    ];
    let t = table(&[]);
    let b = batch(&columns, vec![row.clone(), vec![Datum::Null, Datum::Null, Datum::Null]]);
    let json = encode("json", &columns, &t, &b, &[RowKind::Insert, RowKind::Insert]);
    assert_eq!(json[0], r#"{"tags":["a",null],"attrs":{"k":1,"n":null},"addr":{"city":"x","zips":[1,2]}}"#);
    assert_eq!(json[1], r#"{"tags":null,"attrs":null,"addr":null}"#);
    let back = decode("json", &columns, &t, &[json[0].as_bytes(), json[1].as_bytes()]);
    assert_eq!(back[0].1, row);
    assert_eq!(back[1].1, vec![Datum::Null, Datum::Null, Datum::Null]);
    for format in ["debezium-json", "canal-json", "maxwell-json"] {
        let kinds = [RowKind::Insert, RowKind::Delete];
        let b = batch(&columns, vec![row.clone(), row.clone()]);
        let msgs = encode(format, &columns, &t, &b, &kinds);
        let back = decode(format, &columns, &t, &[msgs[0].as_bytes(), msgs[1].as_bytes()]);
        assert_eq!(back, vec![(RowKind::Insert, row.clone()), (RowKind::Delete, row.clone())], "{format}");
    }
    // A type mismatch inside a nested value names the column path.
    let mut dec = formats::create_decoder("json", &columns, &t, "").unwrap();
    let mut out = DecodedRows::new(&columns, 1).unwrap();
    let e = dec.decode(br#"{"addr":{"zips":[1,"x"]}}"#, &mut out).unwrap_err().to_string();
    assert!(e.contains("addr.zips[1]"), "{e}");
    // csv: ARRAY and ROW of simple types joined by the element delimiter; no MAP, no deeper nesting.
    let csv_cols = cols(&[
        ("tags", FlinkType::Array(Box::new(s_ty.clone()))),
        ("p", FlinkType::Row(vec![("a".into(), LogicalType::nullable(FlinkType::Int)), ("b".into(), s_ty.clone())])),
    ]);
    let b = batch(&csv_cols, vec![vec![Datum::list(vec![s("a"), s("b c")]), Datum::row(vec![Datum::Int(1), s("z")])]]);
    let text = encode("csv", &csv_cols, &t, &b, &[RowKind::Insert]);
    assert_eq!(text[0], "\"a;b c\",1;z");
    let back = decode("csv", &csv_cols, &t, &[text[0].as_bytes()]);
    assert_eq!(back[0].1, vec![Datum::list(vec![s("a"), s("b c")]), Datum::row(vec![Datum::Int(1), s("z")])]);
    for bad in [&columns[1], &columns[2]] {
        let one = vec![bad.clone()];
        let e = formats::create_decoder("csv", &one, &t, "").err().expect("refused").to_string();
        assert!(e.contains(&format!("column '{}'", bad.0)), "{e}");
        assert!(formats::create_encoder("csv", &one, &[0], &t, "").is_err());
    }
}

fn rows_of(out: &mut DecodedRows) -> Vec<(RowKind, Vec<Datum>)> {
    let b = out.finish().unwrap();
    (0..b.num_rows()).map(|r| (b.kinds[r], b.data.columns().iter().map(|c| datum_at(c.as_ref(), r).unwrap()).collect())).collect()
}

#[test]
fn json_fills_columns_field_by_field_as_a_row_of_values_would() {
    let c = all_types();
    let messages: Vec<&[u8]> = vec![
        br#"{"b":true,"ti":-8,"si":300,"i":-2000000000,"bi":9000000000000,"f":0.5,"d":123456.789,"dec":-12.34,"s":"x\"y","bytes":"AAEC","date":"2024-02-29","time":"23:59:58","ts":"2024-01-02 03:04:05.123","ltz":"2024-01-02T03:04:05Z"}"#,
        br#"{"b":"TRUE","ti":"7","si":1.5,"i":12.7,"bi":"-3","f":"1e3","d":"nan?","s":12.50,"ts":"2024-01-02T03:04:05.5"}"#,
        br#"{"i":3000000000}"#,
        br#"{"ti":300}"#,
        br#"{"b":null,"i":null,"s":null,"dec":123456789.5,"date":"2024-13-01"}"#,
        br#"{"s":{"nested":[1,true]},"i":"12"}"#,
        br#"[1,2]"#,
        br#"{"i":1"#,
        br#"{}"#,
    ];
    let lenient = table(&[("json.ignore-parse-errors", "true")]);
    let mut direct = formats::create_decoder("json", &c, &lenient, "").unwrap();
    let mut by_row = formats::create_decoder("json", &c, &lenient, "").unwrap();
    let (mut a, mut b) = (DecodedRows::new(&c, 4).unwrap(), DecodedRows::new(&c, 4).unwrap());
    for m in &messages {
        direct.decode(m, &mut a).unwrap();
        by_row.decode_with(m, &mut |kind, values| b.push(kind, values)).unwrap();
    }
    assert_eq!(direct.skipped(), by_row.skipped());
    assert!(direct.skipped() >= 4, "{}", direct.skipped());
    assert_eq!(rows_of(&mut a), rows_of(&mut b));

    // Without ignore-parse-errors the errors are the same, and a failed message leaves no value.
    let strict = table(&[]);
    let mut direct = formats::create_decoder("json", &c, &strict, "").unwrap();
    let mut by_row = formats::create_decoder("json", &c, &strict, "").unwrap();
    for m in &messages {
        let x = direct.decode(m, &mut a).map_err(|e| e.to_string());
        let y = by_row.decode_with(m, &mut |kind, values| b.push(kind, values)).map_err(|e| e.to_string());
        assert_eq!(x, y, "{}", String::from_utf8_lossy(m));
    }
    assert_eq!(rows_of(&mut a), rows_of(&mut b));
}

#[test]
fn json_rolls_back_a_message_that_fails_halfway() {
    let c = cols(&[("a", FlinkType::Int), ("b", FlinkType::Varchar(MAX_LENGTH)), ("c", FlinkType::Int)]);
    for ignore in [true, false] {
        let t = table(&[("json.ignore-parse-errors", if ignore { "true" } else { "false" })]);
        let mut dec = formats::create_decoder("json", &c, &t, "").unwrap();
        let mut out = DecodedRows::new(&c, 4).unwrap();
        dec.decode(br#"{"a":1,"b":"x","c":2}"#, &mut out).unwrap();
        // a and b go into their columns before c fails.
        let r = dec.decode(br#"{"a":3,"b":"y","c":"not a number"}"#, &mut out);
        assert_eq!(r.is_ok(), ignore);
        dec.decode(br#"{"a":4,"b":"z","c":5}"#, &mut out).unwrap();
        assert_eq!(
            rows_of(&mut out),
            vec![(RowKind::Insert, vec![Datum::Int(1), s("x"), Datum::Int(2)]), (RowKind::Insert, vec![Datum::Int(4), s("z"), Datum::Int(5)])]
        );
    }

    // Into chosen columns, the caller completing each row (as the kafka source adds metadata);
    // a row the caller fails to complete is rolled back too.
    let produced = cols(&[("c", FlinkType::Int), ("meta", FlinkType::BigInt), ("a", FlinkType::Int)]);
    let mut dec = formats::create_decoder("json", &c, &table(&[]), "").unwrap();
    let mut out = DecodedRows::new(&produced, 4).unwrap();
    let targets = [Some(2), None, Some(0)];
    let mut n = 0i64;
    for m in [&br#"{"a":1,"b":"x","c":2}"#[..], br#"{"a":3,"c":4}"#, br#"{"a":5,"c":6}"#] {
        n += 1;
        let r = dec.decode_columns(m, &targets, &mut out, &mut |out, kind| {
            if n == 2 {
                return Err(rsql_common::RsqlError::execution("refused"));
            }
            out.column(1).append(Datum::Int(n * 100))?;
            out.commit(kind)
        });
        assert_eq!(r.is_ok(), n != 2);
    }
    assert_eq!(
        rows_of(&mut out),
        vec![
            (RowKind::Insert, vec![Datum::Int(2), Datum::Int(100), Datum::Int(1)]),
            (RowKind::Insert, vec![Datum::Int(6), Datum::Int(300), Datum::Int(5)])
        ]
    );
}

#[test]
fn changelog_formats_fill_columns_as_rows_of_values_would() {
    let c = people();
    let cases: [(&str, Vec<&[u8]>); 3] = [
        (
            "debezium-json",
            vec![
                br#"{"op":"u","before":{"id":1,"name":"a","weight":1.5},"after":{"id":1,"name":"b","weight":2}}"#,
                br#"{"op":"u","before":{"id":1,"name":"a","weight":1.5},"after":{"id":1,"name":"b","weight":"heavy"}}"#,
                br#"{"op":"u","before":null,"after":{"id":1,"name":"b","weight":2}}"#,
                br#"{"op":"d","before":{"id":2,"name":"c","weight":3}}"#,
                br#"{"op":"x"}"#,
                br#"{"payload":{"op":"c","after":{"id":3,"name":"d","weight":4}}}"#,
            ],
        ),
        (
            "canal-json",
            vec![
                br#"{"data":[{"id":"1","name":"new","weight":"2.5"},{"id":"2","name":"x","weight":"1"}],"old":[{"name":"old"},{"weight":"0.5"}],"type":"UPDATE"}"#,
                // The second row fails after the first pair was appended: nothing of the message stays.
                br#"{"data":[{"id":"3","name":"y","weight":"1"},{"id":"4","name":"z","weight":"w"}],"type":"INSERT"}"#,
                br#"{"data":[{"id":"5","name":"q","weight":"1"}],"old":[],"type":"UPDATE"}"#,
                br#"{"data":[{"id":"6","name":"r","weight":"2"}],"type":"DELETE"}"#,
            ],
        ),
        (
            "maxwell-json",
            vec![
                br#"{"type":"update","data":{"id":1,"name":"new","weight":2.0},"old":{"name":"old"}}"#,
                br#"{"type":"update","data":{"id":1,"name":"new","weight":2.0}}"#,
                br#"{"type":"update","data":{"id":1,"name":"new","weight":2.0},"old":{"weight":"w"}}"#,
                br#"{"type":"insert","data":{"id":7,"name":"s","weight":3}}"#,
            ],
        ),
    ];
    for (format, messages) in cases {
        for ignore in [true, false] {
            let t = table(&[(&format!("{format}.ignore-parse-errors") as &str, if ignore { "true" } else { "false" })]);
            let mut direct = formats::create_decoder(format, &c, &t, "").unwrap();
            let mut by_row = formats::create_decoder(format, &c, &t, "").unwrap();
            let (mut a, mut b) = (DecodedRows::new(&c, 4).unwrap(), DecodedRows::new(&c, 4).unwrap());
            for m in &messages {
                let x = direct.decode(m, &mut a).map_err(|e| e.to_string());
                let y = by_row.decode_with(m, &mut |kind, values| b.push(kind, values)).map_err(|e| e.to_string());
                assert_eq!(x, y, "{format}: {}", String::from_utf8_lossy(m));
            }
            assert_eq!(direct.skipped(), by_row.skipped(), "{format}");
            assert!(!ignore || direct.skipped() >= 1, "{format}");
            let (ra, rb) = (rows_of(&mut a), rows_of(&mut b));
            assert_eq!(ra, rb, "{format}");
            if format == "canal-json" {
                assert!(ra.iter().all(|(_, r)| !matches!(r[0], Datum::Int(3 | 4))), "a failed message left rows: {ra:?}");
            }
        }
    }
}

#[test]
fn csv_and_raw_fill_columns_as_rows_of_values_would() {
    let c = people();
    let messages: Vec<&[u8]> = vec![b"1,ann,2.5\n", b"2,\"b,o\"\"b\",3", b"", b"# note", b"x,bad,1", b"3,cy", b"4,d,1,extra", b"5,e,w"];
    for ignore in [true, false] {
        let mut opts = vec![("csv.allow-comments", "true")];
        if ignore {
            opts.push(("csv.ignore-parse-errors", "true"));
        }
        let t = table(&opts);
        let mut direct = formats::create_decoder("csv", &c, &t, "").unwrap();
        let mut by_row = formats::create_decoder("csv", &c, &t, "").unwrap();
        let (mut a, mut b) = (DecodedRows::new(&c, 4).unwrap(), DecodedRows::new(&c, 4).unwrap());
        for m in &messages {
            let x = direct.decode(m, &mut a).map_err(|e| e.to_string());
            let y = by_row.decode_with(m, &mut |kind, values| b.push(kind, values)).map_err(|e| e.to_string());
            assert_eq!(x, y, "{}", String::from_utf8_lossy(m));
        }
        assert_eq!(direct.skipped(), by_row.skipped());
        assert_eq!(direct.skipped(), if ignore { 3 } else { 0 });
        let rows = rows_of(&mut a);
        assert_eq!(rows, rows_of(&mut b));
        assert_eq!(rows.len(), 3, "{rows:?}");
    }

    let one = cols(&[("v", FlinkType::Varchar(MAX_LENGTH))]);
    let mut raw = formats::create_decoder("raw", &one, &table(&[]), "").unwrap();
    let mut out = DecodedRows::new(&one, 2).unwrap();
    raw.decode(b"hello", &mut out).unwrap();
    assert!(raw.decode(&[0xff, 0xfe], &mut out).is_err());
    raw.decode(b"world", &mut out).unwrap();
    assert_eq!(rows_of(&mut out), vec![(RowKind::Insert, vec![s("hello")]), (RowKind::Insert, vec![s("world")])]);
}
