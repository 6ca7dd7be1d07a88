//! ARRAY, MAP and ROW values through the client: a filesystem json source with nested values,
//! value access, collection functions and constructors in a SELECT printed in tableau mode and
//! in INSERTs (from a query and from VALUES) into a filesystem json sink read back afterwards.

mod common;

use std::path::{Path, PathBuf};

use common::run_client_file;

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("rsql-nested-test-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn run_script(dir: &Path, text: &str) -> (i32, String, String) {
    let file = dir.join("script.sql");
    std::fs::write(&file, text).expect("write script");
    run_client_file(&file)
}

/// Every JSON line of the part files under `dir`.
fn json_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("sink dir").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for f in files {
        if !f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-")) {
            continue;
        }
        for line in std::fs::read_to_string(&f).expect("part file").lines().filter(|l| !l.trim().is_empty()) {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")));
        }
    }
    out
}

#[test]
fn nested_values_from_json_to_tableau_and_json() {
    let dir = temp_dir();
    std::fs::write(
        dir.join("in.json"),
        concat!(
            r#"{"id":1,"tags":["x","y"],"attrs":{"k1":10,"k2":20},"addr":{"city":"Berlin","zip":10115}}"#,
            "\n",
            r#"{"id":2,"tags":["y",null],"attrs":{"k2":2},"addr":{"city":"Paris","zip":null}}"#,
            "\n",
            r#"{"id":3,"tags":["x"],"attrs":{},"addr":null}"#,
            "\n",
        ),
    )
    .expect("input");
    let script = r#"
CREATE TABLE src (id INT, tags ARRAY<STRING>, attrs MAP<STRING, INT>, addr ROW<city STRING, zip INT>)
  WITH ('connector' = 'filesystem', 'path' = 'DIR/in.json', 'format' = 'json');
CREATE TABLE snk (id INT, first_tag STRING, n INT, k1 INT, city STRING, arr ARRAY<INT>, m MAP<STRING, INT>, r ROW<a INT, b STRING>)
  WITH ('connector' = 'filesystem', 'path' = 'DIR/out', 'format' = 'json');
SET 'table.dml-sync' = 'true';
INSERT INTO snk
SELECT id, tags[1], CARDINALITY(tags), attrs['k1'], addr.city, ARRAY[id, id * 10], MAP['id', id], ROW(id, src.addr.city)
FROM src WHERE ARRAY_CONTAINS(tags, 'x');
INSERT INTO snk VALUES (9, 'v', 0, CAST(NULL AS INT), 'c', ARRAY[1, 2], MAP['a', 1, 'b', 2], ROW(5, 'z'));
SELECT id, tags, attrs, addr, tags[2] AS second, MAP_KEYS(attrs) AS ks FROM src;
"#
    .replace("DIR", &dir.display().to_string());
    let (code, out, err) = run_script(&dir, &script);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");

    // The SELECT in tableau mode: nested values as Flink's client shows them, every line as wide
    // as the border (ARRAY / MAP / ROW columns are 30 wide).
    let table: Vec<&str> = out.lines().filter(|l| l.starts_with('+') || l.starts_with('|')).collect();
    assert!(table.len() >= 7, "{out}");
    let width = table[0].chars().count();
    assert!(table.iter().all(|l| l.chars().count() == width), "{out}");
    let row = |id: &str| table.iter().find(|l| l.split('|').nth(1).map(str::trim) == Some(id)).copied().unwrap_or_else(|| panic!("no row {id} in\n{out}"));
    let cells = |l: &str| l.split('|').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect::<Vec<_>>();
    assert_eq!(cells(row("1")), vec!["1", "[x, y]", "{k1=10, k2=20}", "(Berlin, 10115)", "y", "[k1, k2]"], "{out}");
    assert_eq!(cells(row("2")), vec!["2", "[y, null]", "{k2=2}", "(Paris, null)", "<NULL>", "[k2]"], "{out}");
    assert_eq!(cells(row("3")), vec!["3", "[x]", "{}", "<NULL>", "<NULL>", "[]"], "{out}");
    assert!(out.contains("Received a total of 3 rows"), "{out}");

    // What the INSERTs wrote.
    let mut rows = json_lines(&dir.join("out"));
    rows.sort_by_key(|v| v["id"].as_i64());
    let expected = vec![
        serde_json::json!({"id":1,"first_tag":"x","n":2,"k1":10,"city":"Berlin","arr":[1,10],"m":{"id":1},"r":{"a":1,"b":"Berlin"}}),
        serde_json::json!({"id":3,"first_tag":"x","n":1,"k1":null,"city":null,"arr":[3,30],"m":{"id":3},"r":{"a":3,"b":null}}),
        serde_json::json!({"id":9,"first_tag":"v","n":0,"k1":null,"city":"c","arr":[1,2],"m":{"a":1,"b":2},"r":{"a":5,"b":"z"}}),
    ];
    assert_eq!(rows, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_collection_functions_are_errors_at_their_position() {
    let dir = temp_dir();
    std::fs::write(dir.join("in.json"), "{\"id\":1,\"tags\":[\"x\"]}\n").expect("input");
    let script = "CREATE TABLE src (id INT, tags ARRAY<STRING>) WITH ('connector' = 'filesystem', 'path' = 'DIR/in.json', 'format' = 'json');\nSELECT id,\n       ARRAY_SORT(tags) FROM src;\n"
        .replace("DIR", &dir.display().to_string());
    let (code, out, err) = run_script(&dir, &script);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("script.sql:3:8: error: the collection function ARRAY_SORT is not supported yet"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
