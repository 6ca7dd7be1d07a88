//! Golden tests of `rsql-client validate`: every script under tests/golden/positive validates
//! clean, and every script under tests/golden/negative fails with exactly the messages in its
//! `.expected` file (`file:line:col: error: message`). Set RSQL_BLESS=1 to rewrite the files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn validate(file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rsql-client"))
        .current_dir(root())
        .arg("validate")
        .arg(file.strip_prefix(root()).unwrap_or(file))
        .output()
        .expect("run rsql-client");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn scripts(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|e| e == "sql").unwrap_or(false))
        .collect();
    v.sort();
    v
}

#[test]
fn positive_scripts_validate_clean() {
    let mut files = scripts("tests/golden/positive");
    files.extend(scripts("sql"));
    assert!(files.len() >= 3);
    for f in files {
        let (code, out) = validate(&f);
        assert_eq!(code, 0, "{} should validate clean, got:\n{out}", f.display());
        assert!(out.is_empty(), "{out}");
    }
}

#[test]
fn negative_scripts_fail_with_their_messages() {
    let files = scripts("tests/golden/negative");
    assert!(files.len() >= 30, "at least 30 negative cases");
    let bless = std::env::var("RSQL_BLESS").is_ok();
    let mut failures = Vec::new();
    for f in &files {
        let (code, out) = validate(f);
        let expected_path = f.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &out).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if code != 1 || out != expected {
            failures.push(format!("{}: exit {code}\n  got:      {out}  expected: {expected}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_format_for_ci_annotations() {
    let f = root().join("tests/golden/negative/13_unknown_column.sql");
    let out = Command::new(env!("CARGO_BIN_EXE_rsql-client"))
        .current_dir(root())
        .args(["validate", "--format", "json"])
        .arg(&f)
        .output()
        .expect("run rsql-client");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["line"], 2);
    assert_eq!(v[0]["column"], 12);
    assert_eq!(v[0]["severity"], "error");
}

#[test]
fn seed_typo_names_the_column_and_suggests_the_right_one() {
    let demo = std::fs::read_to_string(root().join("sql/demo.sql")).expect("demo.sql");
    let broken = demo.replacen("o.order_region,", "o.order_regin,", 1);
    let line = broken.lines().position(|l| l.contains("o.order_regin")).expect("typo line") + 1;
    let file = std::env::temp_dir().join(format!("rsql-golden-typo-{}.sql", std::process::id()));
    std::fs::write(&file, broken).expect("write");
    let (code, out) = validate(&file);
    assert_eq!(code, 1);
    assert!(
        out.ends_with(&format!(":{line}:3: error: column 'o.order_regin' not found; did you mean 'o.order_region'?\n")),
        "{out}"
    );
}
