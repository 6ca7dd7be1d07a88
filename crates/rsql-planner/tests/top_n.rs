//! Planning of Top-N and deduplication: which node a `ROW_NUMBER()` query becomes, its EXPLAIN
//! text, changelog mode and unique key, and the errors for OVER windows that cannot run.

use std::sync::Arc;

use rsql_common::Location;
use rsql_planner::Session;
use rsql_runtime::graph::SinkFactoryFn;
use rsql_runtime::ConnectorRegistry;

fn session() -> Session {
    let mut reg = ConnectorRegistry::new();
    rsql_connectors::register_builtin(&mut reg);
    let mut s = Session::new(reg);
    let ddl = "CREATE TABLE t (a INT, b INT, c STRING, p AS PROCTIME(), ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH ('connector' = 'datagen');
               CREATE TABLE v (a INT, b INT) WITH ('connector' = 'datagen');";
    for st in rsql_sql::parse_script(ddl).unwrap() {
        if let rsql_sql::Statement::CreateTable(ct) = &st.statement {
            s.create_table(ct, st.location).unwrap();
        }
    }
    s
}

/// EXPLAIN CHANGELOG_MODE of a query, or its planning error.
fn explain(sql: &str) -> Result<String, String> {
    let s = session();
    let q = rsql_sql::parse_script(sql).map_err(|e| e.to_string())?;
    let rsql_sql::Statement::Query(query) = &q[0].statement else { return Err("not a query".into()) };
    let plan = s.plan_query(query, Location::default()).map_err(|e| e.to_string())?;
    let create: SinkFactoryFn = Arc::new(|| Err(rsql_common::RsqlError::execution("not run")));
    let g = s.build_job(&[], Some((&plan, create))).map_err(|e| e.to_string())?;
    Ok(g.explain(true))
}

fn line<'a>(plan: &'a str, node: &str) -> &'a str {
    plan.lines().find(|l| l.contains(node)).unwrap_or_else(|| panic!("no {node} in\n{plan}"))
}

#[test]
fn top_n_with_row_number_is_keyed_by_partition_and_rank() {
    let p = explain("SELECT * FROM (SELECT a, b, c, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b DESC) AS rn FROM t) WHERE rn <= 3").unwrap();
    assert!(line(&p, "Rank(").ends_with(
        "Rank(strategy=[AppendFastStrategy], rankType=[ROW_NUMBER], rankRange=[rankStart=1, rankEnd=3], partitionBy=[a], orderBy=[b DESC], select=[a, b, c, w0$o0]), changelogMode=[I,UB,UA,D], uniqueKeys=[a, w0$o0]"
    ), "{p}");
    assert!(line(&p, "Sink(").ends_with("uniqueKeys=[a, rn]"), "{p}");
    assert!(line(&p, "Calc(select=[t.a").contains("w0$o0 AS rn"), "{p}");
}

#[test]
fn top_n_forms_of_the_bound() {
    for (cond, range) in [
        ("rn < 3", "rankStart=1, rankEnd=2"),
        ("rn = 2", "rankStart=2, rankEnd=2"),
        ("rn BETWEEN 2 AND 4", "rankStart=2, rankEnd=4"),
        ("rn >= 2 AND rn <= 4", "rankStart=2, rankEnd=4"),
        ("3 >= rn", "rankStart=1, rankEnd=3"),
        ("rn <= 5 AND rn < 3", "rankStart=1, rankEnd=2"),
    ] {
        let p = explain(&format!("SELECT a, b FROM (SELECT a, b, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) AS rn FROM t) WHERE {cond}")).unwrap();
        assert!(line(&p, "Rank(").contains(&format!("rankRange=[{range}]")), "{cond}: {p}");
        // The outer SELECT does not read rn: the Rank does not output it.
        assert!(line(&p, "Rank(").contains("select=[a, b])"), "{cond}: {p}");
    }
}

#[test]
fn global_top_n_with_extra_condition_runs_it_after_the_rank() {
    let p = explain("SELECT * FROM (SELECT a, b, ROW_NUMBER() OVER (ORDER BY b DESC NULLS FIRST, a) AS rn FROM v) WHERE rn <= 2 AND a > 0").unwrap();
    assert!(line(&p, "Rank(").contains("partitionBy=[], orderBy=[b DESC NULLS FIRST, a ASC]"), "{p}");
    let calc = p.lines().position(|l| l.contains("where=[v.a > Int32(0)]") || l.contains("where=[a > Int32(0)]"));
    let rank = p.lines().position(|l| l.contains("Rank("));
    assert!(calc.is_some() && calc < rank, "the filter runs above the Rank:\n{p}");
}

#[test]
fn one_row_range_makes_the_row_number_a_constant() {
    let p = explain("SELECT * FROM (SELECT a, b, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b DESC) AS rn FROM v) WHERE rn = 1").unwrap();
    assert!(line(&p, "Rank(").contains("select=[a, b, 1 AS w0$o0]), changelogMode=[I,UB,UA,D], uniqueKeys=[a]"), "{p}");
}

#[test]
fn top_n_over_an_aggregate_uses_the_retract_strategy() {
    let p = explain("SELECT * FROM (SELECT a, n, ROW_NUMBER() OVER (ORDER BY n DESC) AS rn FROM (SELECT a, count(*) AS n FROM v GROUP BY a)) WHERE rn <= 2").unwrap();
    assert!(line(&p, "Rank(").contains("strategy=[RetractStrategy]"), "{p}");
}

#[test]
fn deduplication_by_processing_and_event_time() {
    let first = explain("SELECT a, c FROM (SELECT a, b, c, ROW_NUMBER() OVER (PARTITION BY a ORDER BY p) AS rn FROM t) WHERE rn = 1").unwrap();
    assert!(line(&first, "Deduplicate(").ends_with("Deduplicate(keep=[FirstRow], key=[a], order=[PROCTIME]), changelogMode=[I], uniqueKeys=[a]"), "{first}");
    assert!(line(&first, "Sink(").contains("changelogMode=[I]"), "{first}");
    let last = explain("SELECT * FROM (SELECT a, b, ROW_NUMBER() OVER (PARTITION BY a ORDER BY p DESC) AS rn FROM t) WHERE rn = 1").unwrap();
    assert!(line(&last, "Deduplicate(").contains("Deduplicate(keep=[LastRow], key=[a], order=[PROCTIME], select=[a, b, p, 1 AS w0$o0]), changelogMode=[I,UB,UA,D]"), "{last}");
    let rowtime = explain("SELECT a, b FROM (SELECT a, b, ts, ROW_NUMBER() OVER (PARTITION BY a ORDER BY ts) AS rn FROM t) WHERE rn <= 1").unwrap();
    assert!(line(&rowtime, "Deduplicate(").contains("Deduplicate(keep=[FirstRow], key=[a], order=[ROWTIME]), changelogMode=[I,UB,UA,D]"), "{rowtime}");
    // With the row number output over two rows it stays a Top-N, in arrival order.
    let top2 = explain("SELECT * FROM (SELECT a, b, ROW_NUMBER() OVER (PARTITION BY a ORDER BY p DESC) AS rn FROM t) WHERE rn <= 2").unwrap();
    assert!(line(&top2, "Rank(").contains("orderBy=[p DESC]"), "{top2}");
}

#[test]
fn unsupported_over_windows_say_what_to_change() {
    let cases = [
        ("SELECT * FROM (SELECT a, RANK() OVER (PARTITION BY a ORDER BY b) AS rk FROM v) WHERE rk <= 2", "RANK() is not supported on streaming queries"),
        ("SELECT * FROM (SELECT a, DENSE_RANK() OVER (ORDER BY b) AS rk FROM v) WHERE rk <= 2", "DENSE_RANK() is not supported on streaming queries"),
        ("SELECT a, SUM(b) OVER (PARTITION BY a ORDER BY b) AS s FROM v", "OVER windows (SUM(...) OVER (...)) are not supported yet"),
        ("SELECT a, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) AS rn FROM v", "filter its result with a constant bound"),
        ("SELECT * FROM (SELECT a, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) AS rn FROM v) WHERE rn > 2", "needs an upper bound"),
        ("SELECT * FROM (SELECT a, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) AS rn FROM v) WHERE rn <= a", "must compare the row number with a constant"),
        ("SELECT * FROM (SELECT a, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) AS rn FROM v) WHERE rn < 1", "selects no rows"),
        ("SELECT * FROM (SELECT a, ROW_NUMBER() OVER (PARTITION BY a ORDER BY b + 1) AS rn FROM v) WHERE rn <= 2", "ORDER BY must name columns"),
        ("SELECT * FROM (SELECT a, ROW_NUMBER() OVER (PARTITION BY a) AS rn FROM v) WHERE rn <= 2", "needs an ORDER BY"),
    ];
    for (sql, want) in cases {
        match explain(sql) {
            Ok(p) => panic!("{sql} planned:\n{p}"),
            Err(e) => assert!(e.contains(want), "{sql}: {e}"),
        }
    }
}
