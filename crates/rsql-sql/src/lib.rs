//! The Flink SQL dialect: splits a script into statements, parses what sqlparser knows (queries,
//! INSERT) with a Flink-flavoured sqlparser dialect, and parses Flink's own statements (CREATE
//! TABLE with WITH options, statement sets, SET/RESET, SHOW, ...) into our AST. Every statement
//! and error carries its line and column in the script.

pub mod ast;
pub mod dialect;
pub mod parser;
pub mod types;

pub use ast::*;
pub use dialect::FlinkDialect;
pub use parser::{parse_script, parse_statement_text};

/// sqlparser, as re-exported by DataFusion (one version in the workspace).
pub use datafusion_sql::sqlparser;
