//! The interactive shell: line editing and persistent history, statements across lines until
//! `;`, Ctrl-C cancels the current input (or stops a running SELECT), Ctrl-D or QUIT leaves.
//! When standard input is not a terminal, statements are read from it the same way.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use rustyline::error::ReadlineError;

use crate::exec::{Client, Flow};
use crate::format_error;
use crate::placeholders::substitute;

const BANNER: &str = "rsql-client: Flink SQL, natively. Type HELP; for help, QUIT; to leave.";

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".rsql_history"))
}

/// True when the buffered text ends a statement (a `;` outside quotes and comments).
fn complete(buf: &str) -> bool {
    match rsql_sql::sqlparser::tokenizer::Tokenizer::new(&rsql_sql::FlinkDialect, buf).tokenize() {
        Ok(tokens) => {
            let last = tokens
                .iter()
                .rev()
                .find(|t| !matches!(t, rsql_sql::sqlparser::tokenizer::Token::Whitespace(_)));
            matches!(last, Some(rsql_sql::sqlparser::tokenizer::Token::SemiColon))
        }
        // An unterminated string or comment: keep reading.
        Err(_) => false,
    }
}

fn run_buffer(rt: &tokio::runtime::Runtime, client: &mut Client, defines: &BTreeMap<String, String>, buf: &str) -> Flow {
    let text = match substitute(buf, defines) {
        Ok(t) => t,
        Err(e) => {
            println!("[ERROR] {}", format_error("<input>", &e));
            return Flow::Continue;
        }
    };
    let statements = match rsql_sql::parse_script(&text) {
        Ok(s) => s,
        Err(e) => {
            println!("[ERROR] Could not parse the statement: {}", format_error("<input>", &e));
            return Flow::Continue;
        }
    };
    for st in &statements {
        match rt.block_on(client.execute(st)) {
            Ok(Flow::Quit) => return Flow::Quit,
            Ok(Flow::Continue) => {}
            Err(e) => {
                println!("[ERROR] {}", format_error("<input>", &e));
                break;
            }
        }
    }
    Flow::Continue
}

pub fn run(rt: &tokio::runtime::Runtime, client: &mut Client, defines: &BTreeMap<String, String>) -> ExitCode {
    if !std::io::stdin().is_terminal() {
        let mut buf = String::new();
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            buf.push_str(&line);
            buf.push('\n');
            if complete(&buf) {
                let flow = run_buffer(rt, client, defines, &buf);
                buf.clear();
                if flow == Flow::Quit {
                    break;
                }
            }
        }
        if !buf.trim().is_empty() {
            run_buffer(rt, client, defines, &buf);
        }
        return finish(rt, client);
    }
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot open the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("{BANNER}");
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() { "Flink SQL> " } else { "> " };
        match editor.readline(prompt) {
            Ok(line) => {
                buf.push_str(&line);
                buf.push('\n');
                if complete(&buf) {
                    let _ = editor.add_history_entry(buf.trim());
                    let flow = run_buffer(rt, client, defines, &buf);
                    buf.clear();
                    if flow == Flow::Quit {
                        break;
                    }
                }
            }
            Err(ReadlineError::Interrupted) => {
                buf.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    println!("Shutting down the session...\ndone.");
    finish(rt, client)
}

fn finish(rt: &tokio::runtime::Runtime, client: &mut Client) -> ExitCode {
    match rt.block_on(client.wait_all()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", format_error("<input>", &e));
            ExitCode::FAILURE
        }
    }
}
