//! ARRAY, MAP and ROW values in queries, planned and run through the engine's Calc over a
//! changelog feed: element, value and field access, the collection functions, the value
//! constructors with Flink's result types, and the planning errors for what is not supported.

mod common;

use std::sync::Arc;

use rsql_common::builder::{Datum, RowsBuilder};
use rsql_common::types::{FlinkType, LogicalType};
use rsql_common::{ChangeBatch, Location, RowKind};
use rsql_planner::Session;
use rsql_runtime::ConnectorRegistry;

use common::{feeds, format_rows, run_query, FeedFactory};

const DDL: &str = "CREATE TABLE t (
    id INT,
    tags ARRAY<STRING>,
    attrs MAP<STRING, INT>,
    addr ROW<city STRING, geo ROW<lat DOUBLE, lon DOUBLE>>,
    one ARRAY<INT>
) WITH ('connector' = 'feed-test', 'feed' = 'FEED');";

fn s(v: &str) -> Datum {
    Datum::Str(v.to_string())
}

fn columns() -> Vec<(String, LogicalType)> {
    let string = || LogicalType::nullable(FlinkType::Varchar(rsql_common::types::MAX_LENGTH));
    let double = || LogicalType::nullable(FlinkType::Double);
    vec![
        ("id".into(), LogicalType::nullable(FlinkType::Int)),
        ("tags".into(), LogicalType::nullable(FlinkType::Array(Box::new(string())))),
        ("attrs".into(), LogicalType::nullable(FlinkType::Map(Box::new(string().with_nullable(false)), Box::new(LogicalType::nullable(FlinkType::Int))))),
        (
            "addr".into(),
            LogicalType::nullable(FlinkType::Row(vec![
                ("city".into(), string()),
                ("geo".into(), LogicalType::nullable(FlinkType::Row(vec![("lat".into(), double()), ("lon".into(), double())]))),
            ])),
        ),
        ("one".into(), LogicalType::nullable(FlinkType::Array(Box::new(LogicalType::nullable(FlinkType::Int))))),
    ]
}

/// Row `id` of the feed: tags, attrs, addr and one vary with it; id 4 has NULLs everywhere.
fn row(id: i64) -> Vec<Datum> {
    if id == 4 {
        return vec![Datum::Int(4), Datum::Null, Datum::Null, Datum::Null, Datum::Null];
    }
    let tags = match id {
        1 => Datum::list(vec![s("a"), s("b")]),
        2 => Datum::list(vec![s("b"), Datum::Null, s("c")]),
        _ => Datum::list(vec![]),
    };
    let attrs = match id {
        1 => Datum::map(vec![(s("k1"), Datum::Int(1)), (s("k2"), Datum::Int(2))]),
        2 => Datum::map(vec![(s("k1"), Datum::Int(10)), (s("k3"), Datum::Null)]),
        _ => Datum::map(vec![]),
    };
    let city = if id == 3 { Datum::Null } else { s(if id == 1 { "Berlin" } else { "Paris" }) };
    let addr = Datum::row(vec![city, Datum::row(vec![Datum::Float(id as f64 + 0.5), Datum::Float(-(id as f64))])]);
    let one = match id {
        1 => Datum::list(vec![Datum::Int(7)]),
        2 => Datum::list(vec![]),
        _ => Datum::list(vec![Datum::Null]),
    };
    vec![Datum::Int(id), tags, attrs, addr, one]
}

fn batch(changes: &[(RowKind, Vec<Datum>)]) -> ChangeBatch {
    let mut b = RowsBuilder::new(&columns(), changes.len()).unwrap();
    for (_, r) in changes {
        b.append_row(r.clone()).unwrap();
    }
    ChangeBatch::new(b.finish().unwrap(), changes.iter().map(|c| c.0).collect())
}

fn session(feed: &str, changes: Vec<(RowKind, Vec<Datum>)>) -> Session {
    let mut reg = ConnectorRegistry::new();
    reg.register(Arc::new(FeedFactory("feed-test")));
    let mut s = Session::new(reg);
    for st in rsql_sql::parse_script(&DDL.replace("FEED", feed)).unwrap() {
        if let rsql_sql::Statement::CreateTable(ct) = &st.statement {
            s.create_table(ct, st.location).unwrap();
        }
    }
    // Two changes per batch, so an update pair shares a batch and the Calc sees several.
    let batches = changes.chunks(2).map(batch).collect();
    feeds().lock().unwrap().insert(feed.to_string(), batches);
    s
}

fn inserts() -> Vec<(RowKind, Vec<Datum>)> {
    (1..=4).map(|i| (RowKind::Insert, row(i))).collect()
}

/// Runs `sql` over the four rows and returns `kind|col|col...` lines.
fn run(feed: &str, sql: &str) -> Vec<String> {
    run_changes(feed, sql, inserts())
}

fn run_changes(feed: &str, sql: &str, changes: Vec<(RowKind, Vec<Datum>)>) -> Vec<String> {
    let s = session(feed, changes);
    let out = run_query(&s, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    out.iter()
        .flat_map(|b| format_rows(&b.data).into_iter().zip(b.kinds.clone()).map(|(r, k)| format!("{}|{r}", k.short_string())))
        .collect()
}

/// The planning error of `sql` (a query) as `line:col: message`.
fn plan_error(sql: &str) -> String {
    let s = session("unused", vec![]);
    let q = match rsql_sql::parse_script(sql) {
        Ok(q) => q,
        Err(e) => return format!("{}: {e}", e.location().unwrap_or_default()),
    };
    let rsql_sql::Statement::Query(query) = &q[0].statement else { panic!("not a query") };
    match s.plan_query(query, q[0].location) {
        Ok(p) => panic!("{sql} planned:\n{}", p.display_indent()),
        Err(e) => format!("{}: {e}", e.location().unwrap_or_default()),
    }
}

/// The Flink types of a query's result columns.
fn result_types(sql: &str) -> Vec<String> {
    let s = session("types", vec![]);
    let q = rsql_sql::parse_script(sql).unwrap();
    let rsql_sql::Statement::Query(query) = &q[0].statement else { panic!("not a query") };
    let plan = s.plan_query(query, Location::default()).unwrap_or_else(|e| panic!("{sql}: {e}"));
    plan.schema()
        .fields()
        .iter()
        .map(|f| LogicalType::new(FlinkType::from_arrow(f.data_type()).expect("a Flink type"), f.is_nullable()).to_string())
        .collect()
}

#[test]
fn array_elements_are_one_based_and_null_out_of_range() {
    let rows = run("arr_index", "SELECT id, tags[1], tags[2], tags[3], tags[0], tags[-1], tags[id] FROM t");
    assert_eq!(
        rows,
        vec![
            "+I|1|a|b|NULL|NULL|NULL|a",
            "+I|2|b|NULL|c|NULL|NULL|NULL",
            "+I|3|NULL|NULL|NULL|NULL|NULL|NULL",
            "+I|4|NULL|NULL|NULL|NULL|NULL|NULL",
        ]
    );
}

#[test]
fn map_values_by_key_and_row_fields_by_name() {
    let rows = run(
        "map_row",
        "SELECT id, attrs['k1'], attrs['k3'], attrs['nope'], attrs[CONCAT('k', '2')], addr.city, t.addr.geo.lat, addr.geo.lon FROM t",
    );
    assert_eq!(
        rows,
        vec![
            "+I|1|1|NULL|NULL|2|Berlin|1.5|-1.0",
            "+I|2|10|NULL|NULL|NULL|Paris|2.5|-2.0",
            "+I|3|NULL|NULL|NULL|NULL|NULL|3.5|-3.0",
            "+I|4|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
        ]
    );
}

#[test]
fn collection_functions() {
    let rows = run(
        "functions",
        "SELECT id, CARDINALITY(tags), CARDINALITY(attrs), ELEMENT(one), ARRAY_CONTAINS(tags, 'b'), \
         ARRAY_CONTAINS(tags, CAST(NULL AS STRING)), MAP_KEYS(attrs), MAP_VALUES(attrs) FROM t",
    );
    assert_eq!(
        rows,
        vec![
            "+I|1|2|2|7|true|false|[k1, k2]|[1, 2]",
            "+I|2|3|2|NULL|true|true|[k1, k3]|[10, NULL]",
            "+I|3|0|0|NULL|false|false|[]|[]",
            "+I|4|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
        ]
    );
    assert_eq!(result_types("SELECT CARDINALITY(tags), ELEMENT(one), ARRAY_CONTAINS(one, 1) FROM t"), vec!["INT", "INT", "BOOLEAN"]);
}

#[test]
fn element_of_a_longer_array_fails_the_job() {
    let s = session("element_fails", inserts());
    let err = run_query(&s, "SELECT ELEMENT(tags) FROM t").unwrap_err();
    assert!(err.contains("ELEMENT needs an array of at most one element"), "{err}");
}

#[test]
fn filters_on_nested_values_keep_row_kinds() {
    let mut changes = inserts();
    // id 1 moves away from Berlin, id 2 gets a 'k1' of 1, id 3 goes away.
    let mut moved = row(1);
    moved[3] = Datum::row(vec![s("Rome"), Datum::Null]);
    changes.push((RowKind::UpdateBefore, row(1)));
    changes.push((RowKind::UpdateAfter, moved));
    changes.push((RowKind::Delete, row(2)));
    let rows = run_changes(
        "filter",
        "SELECT id, addr.city FROM t WHERE ARRAY_CONTAINS(tags, 'b') AND attrs['k1'] >= 1 AND CARDINALITY(tags) > 1",
        changes,
    );
    assert_eq!(rows, vec!["+I|1|Berlin", "+I|2|Paris", "-U|1|Berlin", "+U|1|Rome", "-D|2|Paris"]);
}

#[test]
fn constructors_in_select() {
    let rows = run(
        "constructors",
        "SELECT id, ARRAY[id, id * 2], MAP['n', id, 'm', 0], ROW(id, 'x'), (id, addr.city), ARRAY[addr.city][1], MAP[id, tags][id] FROM t WHERE id < 3",
    );
    assert_eq!(
        rows,
        vec![
            "+I|1|[1, 2]|{n: 1, m: 0}|{EXPR$0: 1, EXPR$1: x}|{EXPR$0: 1, EXPR$1: Berlin}|Berlin|[a, b]",
            "+I|2|[2, 4]|{n: 2, m: 0}|{EXPR$0: 2, EXPR$1: x}|{EXPR$0: 2, EXPR$1: Paris}|Paris|[b, NULL, c]",
        ]
    );
    assert_eq!(
        result_types("SELECT ARRAY[id, 2], MAP['n', id], ROW(id, 'x'), addr.geo.lat FROM t"),
        vec!["ARRAY<INT>", "MAP<STRING NOT NULL, INT>", "ROW<`EXPR$0` INT, `EXPR$1` STRING> NOT NULL", "DOUBLE"]
    );
}

#[test]
fn constructors_in_values() {
    let rows = run("values", "SELECT * FROM (VALUES (ARRAY['a', 'b'], MAP['k', 1.5], ROW(1, 'x')))");
    assert_eq!(rows, vec!["+I|[a, b]|{k: 1.5}|{EXPR$0: 1, EXPR$1: x}"]);
    // A key given twice keeps its last value, as in Flink.
    let rows = run("map_twice", "SELECT MAP['a', 1, 'b', 2, 'a', 3] FROM t WHERE id = 1");
    assert_eq!(rows, vec!["+I|{a: 3, b: 2}"]);
}

#[test]
fn what_is_not_supported_is_a_planning_error_at_its_position() {
    let e = plan_error("SELECT id,\n  ARRAY_DISTINCT(tags) FROM t");
    assert!(e.starts_with("2:3: the collection function ARRAY_DISTINCT is not supported yet"), "{e}");
    let e = plan_error("SELECT MAP_ENTRIES(attrs) FROM t");
    assert!(e.starts_with("1:8: the collection function MAP_ENTRIES is not supported yet"), "{e}");
    let e = plan_error("SELECT addr.town FROM t");
    assert!(e.contains("Field town not found in struct"), "{e}");
    let e = plan_error("SELECT addr['town'] FROM t");
    assert!(e.contains("the ROW has no field 'town'; its fields are city, geo"), "{e}");
    let e = plan_error("SELECT id[1] FROM t");
    assert!(e.contains("[...] reads an element of an ARRAY or a value of a MAP, and this value is INT"), "{e}");
    let e = plan_error("SELECT tags['x'] FROM t");
    assert!(e.contains("'x' is read from a ROW or MAP, and this value is ARRAY<STRING>"), "{e}");
    let e = plan_error("SELECT attrs[1] FROM t");
    assert!(e.contains("a MAP with STRING keys is read with a key of type"), "{e}");
    let e = plan_error("SELECT ARRAY_CONTAINS(one, 'x') FROM t");
    assert!(e.contains("ARRAY_CONTAINS looks for a STRING in an array of INT"), "{e}");
    let e = plan_error("SELECT CARDINALITY(id) FROM t");
    assert!(e.contains("CARDINALITY needs an ARRAY or MAP, not INT"), "{e}");
    let e = plan_error("SELECT\n MAP['a', 1, 'b'] FROM t");
    assert!(e.starts_with("2:2: MAP[...] needs pairs of key and value, and has 3 values"), "{e}");
    let e = plan_error("SELECT addr.* FROM t");
    assert!(e.contains("Invalid qualifier addr"), "{e}");
    let e = plan_error("SELECT ARRAY[] FROM t");
    assert!(e.contains("ARRAY[] needs at least one element"), "{e}");
    let e = plan_error("SELECT tags[1:2] FROM t");
    assert!(e.contains("array slices"), "{e}");
}

