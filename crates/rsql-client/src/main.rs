//! `rsql-client`: runs Flink SQL-client scripts natively (`-f script.sql`), validates scripts in
//! CI (`validate`), or opens an interactive shell.

mod exec;
mod metrics;
mod output;
mod placeholders;
mod repl;
mod supervisor;

use std::collections::BTreeMap;
use std::process::ExitCode;

use rsql_common::{Location, RsqlError};
use rsql_planner::Session;
use rsql_runtime::ConnectorRegistry;

use crate::exec::{Client, Flow};

const USAGE: &str = "\
rsql-client: run Apache Flink SQL-client scripts natively

Usage:
  rsql-client [-f FILE] [-i INIT_FILE] [-D NAME=VALUE]...   run a script, or open the shell
  rsql-client validate [--format text|json] [-D NAME=VALUE]... FILE...
  rsql-client --help | --version

Options:
  -f, --file FILE        Run the statements of FILE, then wait for the jobs it started
                         (until their sources end, or until Ctrl-C / SIGTERM).
  -i, --init FILE        Run FILE first (DDL, SET), then the script or the shell.
  -D NAME=VALUE          Fill ${NAME} placeholders in scripts (environment variables also do;
                         ${NAME:-default} gives a default).
      --fresh            Start jobs without their saved state: checkpoints of earlier runs
                         are moved into a discarded-<time> folder instead of resumed.
  -h, --help             This help.
  -V, --version          The version.

Logs go to stderr; RUST_LOG=info (or debug, rsql=debug, ...) sets how much.
";

const VALIDATE_USAGE: &str = "\
rsql-client validate: parse, resolve and plan scripts without connecting to anything

Usage:
  rsql-client validate [--format text|json] [-D NAME=VALUE]... FILE...

Prints one line per problem, `file:line:col: error: message` (or a JSON array with
--format json), and exits 1 when any file has an error, 0 when all are clean.
";

fn registry() -> ConnectorRegistry {
    let mut r = ConnectorRegistry::new();
    rsql_connectors::register_builtin(&mut r);
    rsql_kafka::register(&mut r);
    r
}

/// `file:line:col: error: message`.
pub fn format_error(file: &str, e: &RsqlError) -> String {
    match e.location() {
        Some(Location { line, column }) => format!("{file}:{line}:{column}: error: {e}"),
        None => format!("{file}: error: {e}"),
    }
}

struct Args {
    file: Option<String>,
    init: Option<String>,
    defines: BTreeMap<String, String>,
    fresh: bool,
}

fn parse_define(v: &str) -> Result<(String, String), String> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
        _ => Err(format!("-D expects NAME=VALUE, got '{v}'")),
    }
}

fn read_script(path: &str, defines: &BTreeMap<String, String>) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: error: cannot read the file: {e}"))?;
    placeholders::substitute(&text, defines).map_err(|e| format_error(path, &e))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(false).try_init();
}

fn main() -> ExitCode {
    init_logging();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(|s| s.as_str()) == Some("validate") {
        return validate_main(&argv[1..]);
    }
    let mut args = Args { file: None, init: None, defines: BTreeMap::new(), fresh: false };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("rsql-client {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-f" | "--file" => match it.next() {
                Some(f) => args.file = Some(f.clone()),
                None => return usage_error("-f needs a file name"),
            },
            "-i" | "--init" => match it.next() {
                Some(f) => args.init = Some(f.clone()),
                None => return usage_error("-i needs a file name"),
            },
            "--fresh" => args.fresh = true,
            "-D" => match it.next().map(|v| parse_define(v)) {
                Some(Ok((k, v))) => {
                    args.defines.insert(k, v);
                }
                Some(Err(e)) => return usage_error(&e),
                None => return usage_error("-D needs NAME=VALUE"),
            },
            s if s.starts_with("-D") && s.len() > 2 => match parse_define(&s[2..]) {
                Ok((k, v)) => {
                    args.defines.insert(k, v);
                }
                Err(e) => return usage_error(&e),
            },
            other => return usage_error(&format!("unknown argument '{other}'")),
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut client = Client::new(Session::new(registry()), false, args.file.is_none());
    client.fresh = args.fresh;
    client.script = args.file.as_ref().map(|f| {
        std::path::Path::new(f).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| f.clone())
    });
    if let Some(init) = &args.init {
        let text = match read_script(init, &args.defines) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = rt.block_on(run_text(&mut client, init, &text)) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    match &args.file {
        Some(file) => {
            let text = match read_script(file, &args.defines) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let res = rt.block_on(async {
                let r = run_text(&mut client, file, &text).await;
                // Jobs already started keep running (and are stopped cleanly) even when a later
                // statement failed.
                let w = client.wait_all().await.map_err(|e| format_error(file, &e));
                r.and(w)
            });
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => repl::run(&rt, &mut client, &args.defines),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("error: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}

/// Runs every statement of a script; stops at the first error.
async fn run_text(client: &mut Client, file: &str, text: &str) -> Result<(), String> {
    let statements = rsql_sql::parse_script(text).map_err(|e| format_error(file, &e))?;
    for st in &statements {
        match client.execute(st).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => return Ok(()),
            Err(e) => return Err(format_error(file, &e)),
        }
    }
    client.check_closed().map_err(|e| format_error(file, &e))
}

fn validate_main(argv: &[String]) -> ExitCode {
    let mut json = false;
    let mut files = Vec::new();
    let mut defines = BTreeMap::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{VALIDATE_USAGE}");
                return ExitCode::SUCCESS;
            }
            "--format" => match it.next().map(|s| s.as_str()) {
                Some("json") => json = true,
                Some("text") => json = false,
                _ => return usage_error("--format takes 'text' or 'json'"),
            },
            "-D" => match it.next().map(|v| parse_define(v)) {
                Some(Ok((k, v))) => {
                    defines.insert(k, v);
                }
                _ => return usage_error("-D needs NAME=VALUE"),
            },
            s if s.starts_with('-') => return usage_error(&format!("unknown option '{s}' for validate")),
            f => files.push(f.to_string()),
        }
    }
    if files.is_empty() {
        return usage_error("validate needs at least one FILE");
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut problems: Vec<(String, Option<Location>, String)> = Vec::new();
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                problems.push((f.clone(), None, format!("cannot read the file: {e}")));
                continue;
            }
        };
        // Placeholders without a value are fine in validation: they only name deployment facts.
        let text = match placeholders::substitute(&text, &defines) {
            Ok(t) => t,
            Err(_) => fill_unknown_placeholders(&text, &defines),
        };
        let statements = match rsql_sql::parse_script(&text) {
            Ok(s) => s,
            Err(e) => {
                problems.push((f.clone(), e.location(), e.to_string()));
                continue;
            }
        };
        let mut client = Client::new(Session::new(registry()), true, false);
        for st in &statements {
            if let Err(e) = rt.block_on(client.execute(st)) {
                problems.push((f.clone(), e.location(), e.to_string()));
            }
        }
        if let Err(e) = client.check_closed() {
            problems.push((f.clone(), e.location(), e.to_string()));
        }
    }
    if json {
        let arr: Vec<serde_json::Value> = problems
            .iter()
            .map(|(f, l, m)| {
                serde_json::json!({
                    "file": f,
                    "line": l.map(|l| l.line),
                    "column": l.map(|l| l.column),
                    "severity": "error",
                    "message": m,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else {
        for (f, l, m) in &problems {
            match l {
                Some(l) => println!("{f}:{}:{}: error: {m}", l.line, l.column),
                None => println!("{f}: error: {m}"),
            }
        }
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Replaces placeholders that have no value with a neutral value of the same length class so the
/// script's shape (and every position) can still be checked.
fn fill_unknown_placeholders(text: &str, defines: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(p) = rest.find("${") {
        out.push_str(&rest[..p]);
        match rest[p..].find('}') {
            Some(e) => {
                let inner = &rest[p + 2..p + e];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n.trim(), Some(d)),
                    None => (inner.trim(), None),
                };
                let v = defines.get(name).cloned().or_else(|| std::env::var(name).ok()).or(default.map(|d| d.to_string()));
                out.push_str(&v.unwrap_or_else(|| if name.to_ascii_lowercase().contains("port") { "0".into() } else { "placeholder".into() }));
                rest = &rest[p + e + 1..];
            }
            None => {
                out.push_str(&rest[p..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}
