//! Property tests: every decoder, fed random bytes or mutations of valid messages, returns rows or
//! an error and never panics; and JSON / CSV encodings of random rows decode to the same rows,
//! nested ARRAY / MAP / ROW values included.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rsql_common::builder::{datum_at, Datum, RowsBuilder};
use rsql_common::catalog::{ObjectPath, OptionValue, TableDef};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::RowKind;
use rsql_connectors::formats::{self, DecodedRows, RowDecoder};

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

fn columns() -> Vec<(String, LogicalType)> {
    [
        ("id", FlinkType::Int, false),
        ("b", FlinkType::Boolean, true),
        ("t", FlinkType::TinyInt, true),
        ("big", FlinkType::BigInt, true),
        ("f", FlinkType::Float, true),
        ("d", FlinkType::Double, true),
        ("dec", FlinkType::Decimal(12, 3), true),
        ("s", FlinkType::Varchar(MAX_LENGTH), true),
        ("bin", FlinkType::Varbinary(MAX_LENGTH), true),
        ("day", FlinkType::Date, true),
        ("tm", FlinkType::Time(0), true),
        ("ts", FlinkType::Timestamp(3), true),
        ("ltz", FlinkType::TimestampLtz(3), true),
    ]
    .into_iter()
    .map(|(n, t, nullable)| (n.to_string(), LogicalType::new(t, nullable)))
    .collect()
}

const SEEDS: &[&str] = &[
    r#"{"id":1,"b":true,"t":-3,"big":12345678901,"f":1.5,"d":-2.25e10,"dec":"12.345","s":"x\"y\\u00e9","bin":"AAEC","day":"2024-02-29","tm":"10:11:12","ts":"2024-01-02 03:04:05.123","ltz":"2024-01-02 03:04:05Z"}"#,
    r#"{"before":null,"after":{"id":1,"s":"a"},"op":"c"}"#,
    r#"{"before":{"id":1,"s":"a"},"after":{"id":1,"s":"b"},"op":"u"}"#,
    r#"{"payload":{"before":{"id":2},"after":null,"op":"d"}}"#,
    r#"{"data":[{"id":"1","s":"n"}],"old":[{"s":"o"}],"type":"UPDATE","database":"d","table":"t"}"#,
    r#"{"data":{"id":1,"s":"n"},"old":{"s":"o"},"type":"update"}"#,
    "1,true,-3,12345678901,1.5,-2.25e10,12.345,\"a,\"\"b\"\"\",AAEC,2024-02-29,10:11:12,\"2024-01-02 03:04:05.123\",\"2024-01-02 03:04:05Z\"",
];

fn decoders() -> Vec<(String, Box<dyn RowDecoder>)> {
    let cols = columns();
    let t = table(&[]);
    let lenient = table(&[
        ("json.ignore-parse-errors", "true"),
        ("csv.ignore-parse-errors", "true"),
        ("debezium-json.ignore-parse-errors", "true"),
    ]);
    let mut out = Vec::new();
    for f in ["json", "csv", "debezium-json", "canal-json", "maxwell-json"] {
        out.push((f.to_string(), formats::create_decoder(f, &cols, &t, "").unwrap()));
        out.push((format!("{f} (lenient)"), formats::create_decoder(f, &cols, &lenient, "").unwrap()));
    }
    for ty in [FlinkType::Varchar(MAX_LENGTH), FlinkType::Varbinary(MAX_LENGTH), FlinkType::BigInt, FlinkType::Double, FlinkType::Boolean] {
        let one = vec![("v".to_string(), LogicalType::nullable(ty.clone()))];
        out.push((format!("raw {ty}"), formats::create_decoder("raw", &one, &t, "").unwrap()));
    }
    out
}

/// Decodes `bytes` with every decoder; the result may be rows or an error, never a panic, and
/// the rows always have the declared width.
fn feed(bytes: &[u8]) {
    for (name, mut dec) in decoders() {
        let width = if name.starts_with("raw") { 1 } else { columns().len() };
        let _ = dec.decode_with(bytes, &mut |_, values| {
            assert_eq!(values.len(), width, "{name}: row width");
            Ok(())
        });
        // The builder path must agree: a failed append never leaves ragged columns.
        if !name.starts_with("raw") {
            let mut out = DecodedRows::new(&columns(), 4).unwrap();
            let _ = dec.decode(bytes, &mut out);
            let b = out.finish().unwrap();
            for c in b.data.columns() {
                assert_eq!(c.len(), b.num_rows(), "{name}: ragged batch");
            }
        }
    }
}

/// ARRAY, MAP and ROW columns nested in each other.
fn nested_columns() -> Vec<(String, LogicalType)> {
    let s = || LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH));
    let inner = FlinkType::Row(vec![("x".into(), LogicalType::nullable(FlinkType::BigInt)), ("s".into(), s())]);
    vec![
        ("id".into(), LogicalType::not_null(FlinkType::Int)),
        ("xs".into(), LogicalType::nullable(FlinkType::Array(Box::new(LogicalType::nullable(FlinkType::Int))))),
        (
            "m".into(),
            LogicalType::nullable(FlinkType::Map(Box::new(s()), Box::new(LogicalType::nullable(FlinkType::Array(Box::new(s())))))),
        ),
        (
            "r".into(),
            LogicalType::nullable(FlinkType::Row(vec![
                ("a".into(), LogicalType::not_null(FlinkType::Int)),
                ("b".into(), LogicalType::nullable(FlinkType::Array(Box::new(LogicalType::nullable(inner))))),
            ])),
        ),
    ]
}

const NESTED_SEEDS: &[&str] = &[
    r#"{"id":1,"xs":[1,null,3],"m":{"k":["a",null],"e":[]},"r":{"a":1,"b":[{"x":5,"s":"t"},null]}}"#,
    r#"{"before":null,"after":{"id":2,"xs":[],"m":{},"r":{"a":2,"b":null}},"op":"c"}"#,
    r#"{"data":[{"id":3,"xs":null,"m":null,"r":null}],"type":"INSERT"}"#,
    r#"{"data":{"id":4,"m":{"a":["b"]},"r":{"a":9,"b":[{"x":1}]}},"type":"insert"}"#,
];

/// Like [`feed`] for decoders of the nested columns.
fn feed_nested(bytes: &[u8]) {
    let cols = nested_columns();
    for f in ["json", "debezium-json", "canal-json", "maxwell-json"] {
        let mut dec = formats::create_decoder(f, &cols, &table(&[]), "").unwrap();
        let mut out = DecodedRows::new(&cols, 4).unwrap();
        let _ = dec.decode(bytes, &mut out);
        let b = out.finish().unwrap();
        for c in b.data.columns() {
            assert_eq!(c.len(), b.num_rows(), "{f}: ragged batch");
        }
    }
}

fn nested_strategy() -> impl Strategy<Value = Vec<Datum>> {
    let text = || proptest::option::of("[ -~é\\t\"]{0,8}").prop_map(|o| o.map(Datum::Str).unwrap_or(Datum::Null));
    let xs = proptest::option::of(proptest::collection::vec(proptest::option::of(any::<i32>()), 0..4)).prop_map(|o| match o {
        None => Datum::Null,
        Some(v) => Datum::list(v.into_iter().map(|x| x.map(|x| Datum::Int(x as i64)).unwrap_or(Datum::Null)).collect()),
    });
    let m = proptest::option::of(proptest::collection::btree_map(
        "[a-z\"é]{0,4}",
        proptest::option::of(proptest::collection::vec(text(), 0..3)),
        0..3,
    ))
    .prop_map(|o| match o {
        None => Datum::Null,
        Some(m) => Datum::map(m.into_iter().map(|(k, v)| (Datum::Str(k), v.map(Datum::list).unwrap_or(Datum::Null))).collect()),
    });
    let inner = proptest::option::of((proptest::option::of(any::<i64>()), text()))
        .prop_map(|o| o.map(|(x, s)| Datum::row(vec![x.map(Datum::Int).unwrap_or(Datum::Null), s])).unwrap_or(Datum::Null));
    let r = proptest::option::of((any::<i32>(), proptest::option::of(proptest::collection::vec(inner, 0..3)))).prop_map(|o| match o {
        None => Datum::Null,
        Some((a, b)) => Datum::row(vec![Datum::Int(a as i64), b.map(Datum::list).unwrap_or(Datum::Null)]),
    });
    (any::<i32>(), xs, m, r).prop_map(|(id, xs, m, r)| vec![Datum::Int(id as i64), xs, m, r])
}

/// Builds a batch of `rows`, writes every row with `format` and reads the messages back.
fn write_and_read(format: &str, cols: &[(String, LogicalType)], opts: &TableDef, rows: &[Vec<Datum>]) -> Vec<Vec<Datum>> {
    let mut b = RowsBuilder::new(cols, rows.len()).unwrap();
    for r in rows {
        b.append_row(r.clone()).unwrap();
    }
    let batch = b.finish().unwrap();
    let idx: Vec<usize> = (0..cols.len()).collect();
    let mut enc = formats::create_encoder(format, cols, &idx, opts, "").unwrap();
    let mut dec = formats::create_decoder(format, cols, opts, "").unwrap();
    let mut out = DecodedRows::new(cols, rows.len()).unwrap();
    for r in 0..batch.num_rows() {
        let mut buf = Vec::new();
        enc.encode(&batch, r, RowKind::Insert, &mut buf).unwrap();
        dec.decode(&buf, &mut out).unwrap();
    }
    let got = out.finish().unwrap();
    (0..got.num_rows()).map(|r| got.data.columns().iter().map(|c| datum_at(c.as_ref(), r).unwrap()).collect()).collect()
}

fn mutate(seed: &[u8], ops: &[(u8, usize, u8)]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(op, pos, byte) in ops {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let i = pos % v.len();
        match op % 4 {
            0 => v[i] = byte,
            1 => v.insert(i, byte),
            2 => {
                v.remove(i);
            }
            _ => v.truncate(i),
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        feed(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        seed in 0..SEEDS.len(),
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), prop_oneof![
            Just(b'"'), Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b','), Just(b':'), Just(b'\\'),
            Just(b'0'), Just(b'9'), Just(b'-'), Just(b'.'), Just(b'e'), Just(0xff), Just(0x00), any::<u8>()
        ]), 1..6),
    ) {
        feed(&mutate(SEEDS[seed].as_bytes(), &ops));
    }

    #[test]
    fn mutated_nested_messages_never_panic(
        seed in 0..NESTED_SEEDS.len(),
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), prop_oneof![
            Just(b'"'), Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b','), Just(b':'), Just(b'n'), any::<u8>()
        ]), 1..6),
    ) {
        feed_nested(&mutate(NESTED_SEEDS[seed].as_bytes(), &ops));
    }

    #[test]
    fn nested_values_read_back_from_every_json_format(rows in proptest::collection::vec(nested_strategy(), 1..10)) {
        let cols = nested_columns();
        for format in ["json", "debezium-json", "canal-json", "maxwell-json"] {
            prop_assert_eq!(&write_and_read(format, &cols, &table(&[]), &rows), &rows, "format {}", format);
        }
    }

    #[test]
    fn csv_arrays_and_rows_read_back(
        rows in proptest::collection::vec((
            // The first element is not NULL: an array of one NULL would be written as the NULL literal.
            proptest::option::of((any::<i32>(), proptest::collection::vec(proptest::option::of(any::<i32>()), 0..3))),
            proptest::option::of((any::<i16>(), proptest::option::of("[a-z ]{1,6}"))),
        ), 1..10),
    ) {
        let rows: Vec<_> = rows
            .into_iter()
            .map(|(xs, r)| (xs.map(|(first, rest)| std::iter::once(Some(first)).chain(rest).collect::<Vec<_>>()), r))
            .collect();
        let cols: Vec<(String, LogicalType)> = vec![
            ("xs".into(), LogicalType::nullable(FlinkType::Array(Box::new(LogicalType::nullable(FlinkType::Int))))),
            ("r".into(), LogicalType::nullable(FlinkType::Row(vec![
                ("a".into(), LogicalType::not_null(FlinkType::SmallInt)),
                ("s".into(), LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))),
            ]))),
        ];
        let opts = table(&[("csv.null-literal", "¤")]);
        let expected: Vec<Vec<Datum>> = rows
            .iter()
            .map(|(xs, r)| {
                vec![
                    xs.as_ref()
                        .map(|v| Datum::list(v.iter().map(|x| x.map(|x| Datum::Int(x as i64)).unwrap_or(Datum::Null)).collect()))
                        .unwrap_or(Datum::Null),
                    r.as_ref()
                        .map(|(a, s)| Datum::row(vec![Datum::Int(*a as i64), s.clone().map(Datum::Str).unwrap_or(Datum::Null)]))
                        .unwrap_or(Datum::Null),
                ]
            })
            .collect();
        prop_assert_eq!(write_and_read("csv", &cols, &opts, &expected), expected);
    }

    #[test]
    fn json_and_csv_encodings_read_back(
        rows in proptest::collection::vec((
            any::<i32>(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(-1.0e12f64..1.0e12),
            proptest::option::of("[ -~é\\t\"]{0,30}"),
            proptest::option::of(-86_400_000_000i64 * 20_000..86_400_000_000i64 * 20_000),
        ), 1..20),
    ) {
        let cols: Vec<(String, LogicalType)> = vec![
            ("id".into(), LogicalType::not_null(FlinkType::Int)),
            ("b".into(), LogicalType::nullable(FlinkType::Boolean)),
            ("big".into(), LogicalType::nullable(FlinkType::BigInt)),
            ("d".into(), LogicalType::nullable(FlinkType::Double)),
            ("s".into(), LogicalType::nullable(FlinkType::Varchar(MAX_LENGTH))),
            ("ts".into(), LogicalType::nullable(FlinkType::Timestamp(6))),
        ];
        let mut expected = Vec::new();
        for (id, bo, big, d, s, ts) in &rows {
            let row = vec![
                Datum::Int(*id as i64),
                bo.map(Datum::Bool).unwrap_or(Datum::Null),
                big.map(Datum::Int).unwrap_or(Datum::Null),
                d.map(Datum::Float).unwrap_or(Datum::Null),
                s.clone().map(Datum::Str).unwrap_or(Datum::Null),
                ts.map(Datum::Timestamp).unwrap_or(Datum::Null),
            ];
            expected.push(row);
        }
        for (format, opts) in [("json", table(&[])), ("csv", table(&[("csv.null-literal", "¤")]))] {
            prop_assert_eq!(&write_and_read(format, &cols, &opts, &expected), &expected, "format {}", format);
        }
    }
}
