//! A sqlparser dialect close to Flink's parser: backticks quote identifiers, single quotes are
//! strings, `--` and `/* */` are comments, `FOR SYSTEM_TIME AS OF` follows a table name,
//! `MAP[k1, v1, k2, v2]` constructs a map.

use datafusion_sql::sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident, ObjectName};
use datafusion_sql::sqlparser::dialect::Dialect;
use datafusion_sql::sqlparser::keywords::Keyword;
use datafusion_sql::sqlparser::parser::{Parser, ParserError};
use datafusion_sql::sqlparser::tokenizer::Token;

#[derive(Debug, Default, Clone, Copy)]
pub struct FlinkDialect;

impl Dialect for FlinkDialect {
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }

    fn identifier_quote_style(&self, _identifier: &str) -> Option<char> {
        Some('`')
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_' || ch == '$'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }

    fn supports_group_by_expr(&self) -> bool {
        true
    }

    fn supports_left_associative_joins_without_parens(&self) -> bool {
        true
    }

    fn supports_window_function_null_treatment_arg(&self) -> bool {
        true
    }

    fn supports_named_fn_args_with_rarrow_operator(&self) -> bool {
        true
    }

    /// `JOIN dim FOR SYSTEM_TIME AS OF o.proc_time AS d` (lookup joins).
    fn supports_table_versioning(&self) -> bool {
        true
    }

    /// Flink's map constructor `MAP[k1, v1, ...]` (sqlparser knows only `MAP {k: v}`), parsed as
    /// a call of `make_map`, which the planner turns into a map of those pairs.
    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        let map = parser.peek_token_ref();
        let is_map = matches!(&map.token, Token::Word(w) if w.keyword == Keyword::MAP && w.quote_style.is_none());
        if !is_map || parser.peek_nth_token_ref(1).token != Token::LBracket {
            return None;
        }
        let span = parser.next_token().span;
        Some(parse_map_constructor(parser, span))
    }
}

fn parse_map_constructor(parser: &mut Parser, span: datafusion_sql::sqlparser::tokenizer::Span) -> Result<Expr, ParserError> {
    parser.expect_token(&Token::LBracket)?;
    let values = parser.parse_comma_separated(Parser::parse_expr)?;
    parser.expect_token(&Token::RBracket)?;
    if !values.len().is_multiple_of(2) {
        return Err(ParserError::ParserError(format!(
            "MAP[...] needs pairs of key and value, and has {} values at Line: {}, Column: {}",
            values.len(),
            span.start.line,
            span.start.column
        )));
    }
    Ok(Expr::Function(Function {
        name: ObjectName::from(vec![Ident { value: "make_map".into(), quote_style: None, span }]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: values.into_iter().map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e))).collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    }))
}
