//! Script splitting and statement parsing. The script is tokenized once with sqlparser's
//! tokenizer (strings, quoted identifiers and comments handled there), split at top-level `;`,
//! and each statement is parsed from its own tokens, which keep their positions in the script.

use datafusion_sql::sqlparser::ast as sp;
use datafusion_sql::sqlparser::keywords::Keyword;
use datafusion_sql::sqlparser::parser::{Parser, ParserError};
use datafusion_sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};
use rsql_common::catalog::{ColumnDef, ColumnKind, WatermarkDef};
use rsql_common::{Location, Result, RsqlError};

use crate::ast::*;
use crate::dialect::FlinkDialect;
use crate::types::parse_type;

/// Parses a whole script into statements, in order.
pub fn parse_script(sql: &str) -> Result<Vec<Located>> {
    let tokens = tokenize(sql)?;
    let lines = LineIndex::new(sql);
    let mut out = Vec::new();
    for group in split_statements(tokens) {
        let first = group
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| loc_of(t))
            .unwrap_or_default();
        let text = lines.text_of(sql, &group);
        for (statement, location) in parse_group(group, first)? {
            out.push(Located { statement, location, text: text.clone() });
        }
    }
    fold_explained_statement_sets(out)
}

/// `EXPLAIN STATEMENT SET BEGIN INSERT ...; INSERT ...; END;` spans several `;`-separated
/// statements: the INSERTs after the first one and the closing END join the EXPLAIN.
fn fold_explained_statement_sets(statements: Vec<Located>) -> Result<Vec<Located>> {
    let mut out: Vec<Located> = Vec::new();
    let mut open: Option<Located> = None;
    for st in statements {
        if let Some(ex) = &mut open {
            match st.statement {
                Statement::End => {
                    if let Some(done) = open.take() {
                        out.push(done);
                    }
                }
                Statement::Insert { .. } => {
                    if let Statement::Explain { statement, .. } = &mut ex.statement {
                        if let Statement::StatementSet(items) = statement.as_mut() {
                            items.push(st);
                        }
                    }
                }
                _ => {
                    return Err(RsqlError::parse(
                        "only INSERT statements can follow EXPLAIN STATEMENT SET BEGIN, up to END",
                        Some(st.location),
                    ))
                }
            }
            continue;
        }
        let unclosed = matches!(&st.statement, Statement::Explain { statement, .. } if matches!(statement.as_ref(), Statement::StatementSet(_)))
            && !st.text.trim_end().to_ascii_uppercase().ends_with("END");
        if unclosed {
            open = Some(st);
        } else {
            out.push(st);
        }
    }
    if let Some(ex) = open {
        return Err(RsqlError::parse("EXPLAIN STATEMENT SET BEGIN is never closed with END", Some(ex.location)));
    }
    Ok(out)
}

/// Parses a single statement (the REPL's unit of input).
pub fn parse_statement_text(sql: &str) -> Result<Vec<Located>> {
    parse_script(sql)
}

fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>> {
    Tokenizer::new(&FlinkDialect, sql).tokenize_with_location().map_err(|e| {
        let location = Location::new(e.location.line, e.location.column);
        RsqlError::parse(e.message.clone(), Some(location))
    })
}

fn loc_of(t: &TokenWithSpan) -> Location {
    Location::new(t.span.start.line, t.span.start.column)
}

/// Splits tokens at `;`, dropping groups that hold only whitespace and comments.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut groups = Vec::new();
    let mut cur = Vec::new();
    for t in tokens {
        match t.token {
            Token::SemiColon => {
                groups.push(std::mem::take(&mut cur));
            }
            Token::EOF => {}
            _ => cur.push(t),
        }
    }
    groups.push(cur);
    groups.retain(|g| g.iter().any(|t| !matches!(t.token, Token::Whitespace(_))));
    groups
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(s: &str) -> Self {
        let mut starts = vec![0];
        for (i, b) in s.bytes().enumerate() {
            if b == b'\n' {
                starts.push(i + 1);
            }
        }
        LineIndex { starts }
    }

    fn offset(&self, s: &str, line: u64, col: u64) -> usize {
        let Some(&start) = self.starts.get((line as usize).saturating_sub(1)) else {
            return s.len();
        };
        // Columns count characters.
        let rest = &s[start..];
        let skip = (col as usize).saturating_sub(1);
        start + rest.char_indices().nth(skip).map(|(i, _)| i).unwrap_or(rest.len())
    }

    /// The text covered by the non-whitespace tokens of a group.
    fn text_of(&self, s: &str, group: &[TokenWithSpan]) -> String {
        let toks: Vec<&TokenWithSpan> = group
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(Whitespace::Space | Whitespace::Newline | Whitespace::Tab)))
            .collect();
        let (Some(first), Some(last)) = (toks.first(), toks.last()) else {
            return String::new();
        };
        let a = self.offset(s, first.span.start.line, first.span.start.column);
        let b = self.offset(s, last.span.end.line, last.span.end.column);
        if a <= b && b <= s.len() {
            s[a..b].trim().to_string()
        } else {
            String::new()
        }
    }
}

/// Turns sqlparser's error (whose message ends with "at Line: l, Column: c") into ours.
fn convert_err(e: ParserError, fallback: Location) -> RsqlError {
    let msg = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_string(),
    };
    if let Some(idx) = msg.rfind(" at Line: ") {
        let tail = &msg[idx + " at Line: ".len()..];
        if let Some((l, c)) = tail.split_once(", Column: ") {
            if let (Ok(l), Ok(c)) = (l.trim().parse::<u64>(), c.trim().parse::<u64>()) {
                if l > 0 {
                    return RsqlError::parse(tidy(&msg[..idx]), Some(Location::new(l, c)));
                }
            }
        }
    }
    RsqlError::parse(tidy(&msg), Some(fallback))
}

fn tidy(msg: &str) -> String {
    msg.replace("Expected: ", "expected ").replace(", found: ", ", found ").replace("found: EOF", "found the end of the statement")
}

fn word(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

struct P<'a> {
    p: Parser<'a>,
}

impl<'a> P<'a> {
    fn peek_word(&self) -> Option<String> {
        word(&self.p.peek_token().token)
    }
    fn peek_nth_word(&self, n: usize) -> Option<String> {
        word(&self.p.peek_nth_token(n).token)
    }
    fn is(&self, ws: &[&str]) -> bool {
        ws.iter().enumerate().all(|(i, w)| self.peek_nth_word(i).as_deref() == Some(*w))
    }
    fn eat(&mut self, ws: &[&str]) -> bool {
        if self.is(ws) {
            for _ in ws {
                self.p.next_token();
            }
            true
        } else {
            false
        }
    }
    fn expect(&mut self, ws: &[&str]) -> Result<(), ParserError> {
        for w in ws {
            if !self.eat(&[w]) {
                return self.p.expected(&format!("'{w}'"), self.p.peek_token());
            }
        }
        Ok(())
    }
    fn at_end(&self) -> bool {
        matches!(self.p.peek_token().token, Token::EOF)
    }
    fn expect_end(&mut self) -> Result<(), ParserError> {
        if self.at_end() {
            Ok(())
        } else {
            self.p.expected("the end of the statement", self.p.peek_token())
        }
    }
    fn name(&mut self) -> Result<Name, ParserError> {
        let location = loc_of(&self.p.peek_token());
        let mut parts = vec![self.p.parse_identifier()?.value];
        while self.p.consume_token(&Token::Period) {
            parts.push(self.p.parse_identifier()?.value);
        }
        if parts.len() > 3 {
            return Err(ParserError::ParserError(format!(
                "a name has at most three parts (catalog.database.object) at Line: {}, Column: {}",
                location.line, location.column
            )));
        }
        Ok(Name { parts, location })
    }
    fn string(&mut self) -> Result<String, ParserError> {
        let tok = self.p.next_token();
        match tok.token {
            Token::SingleQuotedString(s) => Ok(s),
            _ => self.p.expected("a string in single quotes", tok),
        }
    }
    fn properties(&mut self) -> Result<Properties, ParserError> {
        self.p.expect_token(&Token::LParen)?;
        let mut out: Properties = Vec::new();
        if self.p.consume_token(&Token::RParen) {
            return Ok(out);
        }
        loop {
            let kt = self.p.peek_token();
            let location = loc_of(&kt);
            let key = self.string()?;
            self.p.expect_token(&Token::Eq)?;
            let value = self.string()?;
            if out.iter().any(|(k, _, _)| *k == key) {
                return Err(ParserError::ParserError(format!(
                    "option '{key}' is given twice at Line: {}, Column: {}",
                    location.line, location.column
                )));
            }
            out.push((key, value, location));
            if !self.p.consume_token(&Token::Comma) {
                break;
            }
        }
        self.p.expect_token(&Token::RParen)?;
        Ok(out)
    }
    fn ident_list(&mut self) -> Result<Vec<String>, ParserError> {
        self.p.expect_token(&Token::LParen)?;
        let mut v = vec![self.p.parse_identifier()?.value];
        while self.p.consume_token(&Token::Comma) {
            v.push(self.p.parse_identifier()?.value);
        }
        self.p.expect_token(&Token::RParen)?;
        Ok(v)
    }
    fn query(&mut self) -> Result<Box<sp::Query>, ParserError> {
        self.p.parse_query()
    }
}

/// Window table functions take their input as `TABLE name` (`TUMBLE(TABLE t, ...)` or
/// `DATA => TABLE t`), which sqlparser cannot read as a function argument. Inside the arguments
/// of `TABLE(TUMBLE|HOP|CUMULATE(...))` the keyword is dropped, leaving the table name as the
/// argument; the planner reads that argument as a table. SESSION windows are refused here.
fn strip_window_table_keywords(mut tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let is_word = |t: &Token, w: &str| word(t).as_deref() == Some(w);
    let significant: Vec<usize> = (0..tokens.len()).filter(|i| !matches!(tokens[*i].token, Token::Whitespace(_))).collect();
    let mut drop = vec![false; tokens.len()];
    for (n, &i) in significant.iter().enumerate() {
        let at = |k: usize| significant.get(n + k).map(|j| &tokens[*j].token);
        let starts = is_word(&tokens[i].token, "TABLE")
            && matches!(at(1), Some(Token::LParen))
            && at(2).is_some_and(|t| ["TUMBLE", "HOP", "CUMULATE", "SESSION"].iter().any(|w| is_word(t, w)))
            && matches!(at(3), Some(Token::LParen));
        if !starts {
            continue;
        }
        if let Some(j) = significant.get(n + 2).filter(|j| is_word(&tokens[**j].token, "SESSION")) {
            return Err(RsqlError::unsupported("the SESSION window table function is not supported yet; use TUMBLE, HOP or CUMULATE").at(loc_of(&tokens[*j])));
        }
        let mut depth = 0usize;
        for k in 3.. {
            let Some(&j) = significant.get(n + k) else { break };
            match &tokens[j].token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                t if depth == 1 && is_word(t, "TABLE") => {
                    if matches!(significant.get(n + k + 1).map(|x| &tokens[*x].token), Some(Token::Word(_))) {
                        drop[j] = true;
                    }
                }
                _ => {}
            }
        }
    }
    if drop.iter().any(|d| *d) {
        let mut i = 0;
        tokens.retain(|_| {
            i += 1;
            !drop[i - 1]
        });
    }
    Ok(tokens)
}

fn parse_group(tokens: Vec<TokenWithSpan>, first: Location) -> Result<Vec<(Statement, Location)>> {
    let tokens = strip_window_table_keywords(tokens)?;
    let dialect = FlinkDialect;
    let mut p = P { p: Parser::new(&dialect).with_tokens_with_locations(tokens) };
    // `EXECUTE STATEMENT SET BEGIN <first insert>` opens a statement set.
    if p.eat(&["EXECUTE", "STATEMENT", "SET", "BEGIN"]) {
        let inner = parse_one(&mut p).map_err(|e| convert_err(e, first))?;
        let loc = first;
        return Ok(vec![(Statement::BeginStatementSet, loc), (inner, loc)]);
    }
    let st = parse_one(&mut p).map_err(|e| convert_err(e, first))?;
    Ok(vec![(st, first)])
}

fn parse_one(p: &mut P) -> Result<Statement, ParserError> {
    let st = parse_statement(p)?;
    p.expect_end()?;
    Ok(st)
}

fn parse_statement(p: &mut P) -> Result<Statement, ParserError> {
    let Some(first) = p.peek_word() else {
        if p.p.peek_token().token == Token::LParen {
            return Ok(Statement::Query(p.query()?));
        }
        return p.p.expected("a statement", p.p.peek_token());
    };
    match first.as_str() {
        "SELECT" | "WITH" | "VALUES" | "TABLE" => Ok(Statement::Query(p.query()?)),
        "CREATE" => parse_create(p),
        "DROP" => parse_drop(p),
        "USE" => {
            p.p.next_token();
            if p.eat(&["CATALOG"]) {
                Ok(Statement::UseCatalog(p.p.parse_identifier()?.value))
            } else {
                Ok(Statement::Use(p.name()?))
            }
        }
        "INSERT" => parse_insert(p),
        "SET" => {
            p.p.next_token();
            if p.at_end() {
                return Ok(Statement::Set(None));
            }
            let key = set_key(p)?;
            p.p.expect_token(&Token::Eq)?;
            let value = set_value(p)?;
            Ok(Statement::Set(Some((key, value))))
        }
        "RESET" => {
            p.p.next_token();
            if p.at_end() {
                Ok(Statement::Reset(None))
            } else {
                Ok(Statement::Reset(Some(set_key(p)?)))
            }
        }
        "SHOW" => parse_show(p),
        "DESCRIBE" | "DESC" => {
            p.p.next_token();
            Ok(Statement::Describe(p.name()?))
        }
        "EXPLAIN" => {
            p.p.next_token();
            let mut details = Vec::new();
            loop {
                let d = match p.peek_word().as_deref() {
                    Some("CHANGELOG_MODE") => ExplainDetail::ChangelogMode,
                    Some("PLAN_ADVICE") => ExplainDetail::PlanAdvice,
                    Some("ESTIMATED_COST") => ExplainDetail::EstimatedCost,
                    Some("JSON_EXECUTION_PLAN") => ExplainDetail::JsonExecutionPlan,
                    _ => break,
                };
                p.p.next_token();
                details.push(d);
                if !p.p.consume_token(&Token::Comma) {
                    break;
                }
            }
            p.eat(&["PLAN", "FOR"]);
            let inner = if p.eat(&["STATEMENT", "SET", "BEGIN"]) {
                let mut items = Vec::new();
                loop {
                    let location = loc_of(&p.p.peek_token());
                    let st = parse_statement(p)?;
                    items.push(Located { statement: st, location, text: String::new() });
                    // The splitter ends this group at the first ';': the statement set's other
                    // INSERTs follow as statements of their own (see fold_explained_statement_sets).
                    if p.eat(&["END"]) || p.at_end() {
                        break;
                    }
                }
                Statement::StatementSet(items)
            } else {
                parse_statement(p)?
            };
            Ok(Statement::Explain { details, statement: Box::new(inner) })
        }
        "BEGIN" => {
            p.p.next_token();
            p.expect(&["STATEMENT", "SET"])?;
            Ok(Statement::BeginStatementSet)
        }
        "END" => {
            p.p.next_token();
            Ok(Statement::End)
        }
        "EXECUTE" => {
            p.p.next_token();
            let inner = parse_statement(p)?;
            Ok(Statement::Execute(Box::new(inner)))
        }
        "HELP" => {
            p.p.next_token();
            Ok(Statement::Help)
        }
        "QUIT" | "EXIT" => {
            p.p.next_token();
            Ok(Statement::Quit)
        }
        _ => p.p.expected(
            "a statement (CREATE, DROP, USE, INSERT, SELECT, SET, RESET, SHOW, DESCRIBE, EXPLAIN, BEGIN STATEMENT SET, END, HELP, QUIT)",
            p.p.peek_token(),
        ),
    }
}

/// A SET key: `'a.b'` or a bare dotted word sequence.
fn set_key(p: &mut P) -> Result<String, ParserError> {
    if let Token::SingleQuotedString(_) = p.p.peek_token().token {
        return p.string();
    }
    let mut key = String::new();
    loop {
        let tok = p.p.next_token();
        match &tok.token {
            Token::Word(w) => key.push_str(&w.value),
            Token::Minus => key.push('-'),
            Token::Number(n, _) => key.push_str(n),
            _ => return p.p.expected("a configuration key", tok),
        }
        match p.p.peek_token().token {
            Token::Period => {
                p.p.next_token();
                key.push('.');
            }
            Token::Minus => {}
            Token::Word(_) | Token::Number(..) if key.ends_with('-') => {}
            _ => break,
        }
    }
    Ok(key)
}

fn set_value(p: &mut P) -> Result<String, ParserError> {
    let tok = p.p.next_token();
    Ok(match tok.token {
        Token::SingleQuotedString(s) => s,
        Token::Number(n, _) => n,
        Token::Word(w) => w.value,
        _ => return p.p.expected("a value in single quotes", tok),
    })
}

fn parse_show(p: &mut P) -> Result<Statement, ParserError> {
    p.p.next_token();
    let kind = if p.eat(&["CATALOGS"]) {
        ShowKind::Catalogs
    } else if p.eat(&["DATABASES"]) {
        ShowKind::Databases
    } else if p.eat(&["TABLES"]) {
        ShowKind::Tables
    } else if p.eat(&["VIEWS"]) {
        ShowKind::Views
    } else if p.eat(&["FUNCTIONS"]) || p.eat(&["USER", "FUNCTIONS"]) {
        ShowKind::Functions
    } else if p.eat(&["JOBS"]) {
        ShowKind::Jobs
    } else if p.eat(&["CURRENT", "CATALOG"]) {
        ShowKind::CurrentCatalog
    } else if p.eat(&["CURRENT", "DATABASE"]) {
        ShowKind::CurrentDatabase
    } else if p.eat(&["CREATE", "TABLE"]) {
        return Ok(Statement::ShowCreateTable(p.name()?));
    } else if p.eat(&["CREATE", "VIEW"]) {
        return Ok(Statement::ShowCreateView(p.name()?));
    } else {
        return p.p.expected(
            "CATALOGS, DATABASES, TABLES, VIEWS, FUNCTIONS, JOBS, CURRENT CATALOG, CURRENT DATABASE or CREATE TABLE",
            p.p.peek_token(),
        );
    };
    Ok(Statement::Show(kind))
}

fn parse_drop(p: &mut P) -> Result<Statement, ParserError> {
    p.p.next_token();
    let temporary = p.eat(&["TEMPORARY"]);
    if p.eat(&["TABLE"]) {
        let if_exists = p.eat(&["IF", "EXISTS"]);
        return Ok(Statement::DropTable { name: p.name()?, if_exists, temporary });
    }
    if p.eat(&["VIEW"]) {
        let if_exists = p.eat(&["IF", "EXISTS"]);
        return Ok(Statement::DropView { name: p.name()?, if_exists, temporary });
    }
    if p.eat(&["DATABASE"]) {
        let if_exists = p.eat(&["IF", "EXISTS"]);
        let name = p.name()?;
        let cascade = p.eat(&["CASCADE"]);
        p.eat(&["RESTRICT"]);
        return Ok(Statement::DropDatabase { name, if_exists, cascade });
    }
    if p.eat(&["CATALOG"]) {
        let if_exists = p.eat(&["IF", "EXISTS"]);
        return Ok(Statement::DropCatalog { name: p.p.parse_identifier()?.value, if_exists });
    }
    p.p.expected("TABLE, VIEW, DATABASE or CATALOG", p.p.peek_token())
}

fn parse_insert(p: &mut P) -> Result<Statement, ParserError> {
    p.p.next_token();
    let overwrite = if p.eat(&["OVERWRITE"]) {
        true
    } else {
        p.expect(&["INTO"])?;
        false
    };
    let table = p.name()?;
    if p.eat(&["PARTITION"]) {
        // Static partitions are accepted and ignored by connectors without partitions.
        p.p.expect_token(&Token::LParen)?;
        let mut depth = 1;
        while depth > 0 {
            match p.p.next_token().token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                Token::EOF => return p.p.expected("')'", p.p.peek_token()),
                _ => {}
            }
        }
    }
    let mut columns = Vec::new();
    // `(a, b) SELECT` is a column list; `(SELECT ...)` is the query.
    if p.p.peek_token().token == Token::LParen && !matches!(p.peek_nth_word(1).as_deref(), Some("SELECT" | "WITH" | "VALUES")) {
        columns = p.ident_list()?;
    }
    let query = p.query()?;
    Ok(Statement::Insert { table, columns, overwrite, query })
}

fn parse_create(p: &mut P) -> Result<Statement, ParserError> {
    p.p.next_token();
    let temporary = p.eat(&["TEMPORARY"]);
    p.eat(&["SYSTEM"]);
    if p.eat(&["TABLE"]) {
        return parse_create_table(p, temporary);
    }
    if p.eat(&["VIEW"]) {
        let if_not_exists = p.eat(&["IF", "NOT", "EXISTS"]);
        let name = p.name()?;
        let columns = if p.p.peek_token().token == Token::LParen { p.ident_list()? } else { Vec::new() };
        let comment = if p.eat(&["COMMENT"]) { Some(p.string()?) } else { None };
        p.expect(&["AS"])?;
        let query = p.query()?;
        return Ok(Statement::CreateView { name, temporary, if_not_exists, columns, query, comment });
    }
    if p.eat(&["DATABASE"]) {
        let if_not_exists = p.eat(&["IF", "NOT", "EXISTS"]);
        let name = p.name()?;
        let comment = if p.eat(&["COMMENT"]) { Some(p.string()?) } else { None };
        let options = if p.eat(&["WITH"]) { p.properties()? } else { Vec::new() };
        return Ok(Statement::CreateDatabase { name, if_not_exists, comment, options });
    }
    if p.eat(&["CATALOG"]) {
        let if_not_exists = p.eat(&["IF", "NOT", "EXISTS"]);
        let name = p.p.parse_identifier()?.value;
        let options = if p.eat(&["WITH"]) { p.properties()? } else { Vec::new() };
        return Ok(Statement::CreateCatalog { name, if_not_exists, options });
    }
    if p.is(&["FUNCTION"]) {
        return p.p.expected("TABLE, VIEW, DATABASE or CATALOG (user-defined functions are not supported yet)", p.p.peek_token());
    }
    p.p.expected("TABLE, VIEW, DATABASE or CATALOG", p.p.peek_token())
}

fn parse_create_table(p: &mut P, temporary: bool) -> Result<Statement, ParserError> {
    let if_not_exists = p.eat(&["IF", "NOT", "EXISTS"]);
    let name = p.name()?;
    let mut ct = CreateTable {
        name,
        temporary,
        if_not_exists,
        columns: Vec::new(),
        primary_key: None,
        watermark: None,
        comment: None,
        partitioned_by: Vec::new(),
        options: Vec::new(),
        like: None,
        as_query: None,
    };
    if p.p.consume_token(&Token::LParen) {
        loop {
            parse_table_element(p, &mut ct)?;
            if !p.p.consume_token(&Token::Comma) {
                break;
            }
            // Trailing comma before ')'.
            if p.p.peek_token().token == Token::RParen {
                break;
            }
        }
        p.p.expect_token(&Token::RParen)?;
    }
    if p.eat(&["COMMENT"]) {
        ct.comment = Some(p.string()?);
    }
    if p.eat(&["PARTITIONED", "BY"]) {
        ct.partitioned_by = p.ident_list()?;
    }
    if p.eat(&["WITH"]) {
        ct.options = p.properties()?;
    }
    if p.eat(&["LIKE"]) {
        let src = p.name()?;
        let mut opts = Vec::new();
        if p.p.consume_token(&Token::LParen) {
            loop {
                let kind = p.peek_word().unwrap_or_default();
                p.p.next_token();
                let what = p.peek_word().unwrap_or_default();
                p.p.next_token();
                opts.push(match kind.as_str() {
                    "INCLUDING" => LikeOption::Including(what),
                    "EXCLUDING" => LikeOption::Excluding(what),
                    "OVERWRITING" => LikeOption::Overwriting(what),
                    _ => return p.p.expected("INCLUDING, EXCLUDING or OVERWRITING", p.p.peek_token()),
                });
                if p.p.consume_token(&Token::RParen) {
                    break;
                }
            }
        }
        ct.like = Some((src, opts));
    }
    if p.eat(&["AS"]) {
        ct.as_query = Some(p.query()?);
    }
    if ct.columns.is_empty() && ct.like.is_none() && ct.as_query.is_none() {
        return p.p.expected("a column list '(...)', LIKE or AS SELECT", p.p.peek_token());
    }
    Ok(Statement::CreateTable(Box::new(ct)))
}

fn expect_not_enforced(p: &mut P) -> Result<(), ParserError> {
    if p.eat(&["NOT", "ENFORCED"]) {
        return Ok(());
    }
    let tok = p.p.peek_token();
    Err(ParserError::ParserError(format!(
        "a PRIMARY KEY must be declared NOT ENFORCED: rsql, like Flink, does not own the data and cannot enforce it; write PRIMARY KEY (...) NOT ENFORCED at Line: {}, Column: {}",
        tok.span.start.line, tok.span.start.column
    )))
}

fn parse_table_element(p: &mut P, ct: &mut CreateTable) -> Result<(), ParserError> {
    let start = p.p.peek_token();
    let location = loc_of(&start);
    if p.is(&["WATERMARK", "FOR"]) {
        p.eat(&["WATERMARK", "FOR"]);
        let column = p.p.parse_identifier()?.value;
        p.expect(&["AS"])?;
        let expr = p.p.parse_expr()?.to_string();
        if ct.watermark.is_some() {
            return Err(ParserError::ParserError(format!(
                "a table has at most one WATERMARK at Line: {}, Column: {}",
                location.line, location.column
            )));
        }
        ct.watermark = Some(WatermarkDef { column, expr });
        return Ok(());
    }
    if p.eat(&["CONSTRAINT"]) {
        p.p.parse_identifier()?;
    }
    if p.is(&["PRIMARY", "KEY"]) {
        p.eat(&["PRIMARY", "KEY"]);
        let cols = p.ident_list()?;
        expect_not_enforced(p)?;
        set_pk(ct, cols, location)?;
        return Ok(());
    }
    let name = p.p.parse_identifier()?.value;
    if ct.columns.iter().any(|c| c.name == name) {
        return Err(ParserError::ParserError(format!(
            "column '{name}' is declared twice at Line: {}, Column: {}",
            location.line, location.column
        )));
    }
    if p.eat(&["AS"]) {
        let expr = p.p.parse_expr()?.to_string();
        let comment = if p.eat(&["COMMENT"]) { Some(p.string()?) } else { None };
        // The type of a computed column is known once the expression is planned.
        ct.columns.push(ColumnDef {
            name,
            ty: rsql_common::LogicalType::nullable(rsql_common::FlinkType::Null),
            kind: ColumnKind::Computed(expr),
            comment,
            location,
        });
        return Ok(());
    }
    let ty = parse_type(&mut p.p)?;
    let mut kind = ColumnKind::Physical;
    if p.eat(&["METADATA"]) {
        let key = if p.eat(&["FROM"]) { Some(p.string()?) } else { None };
        let is_virtual = p.eat(&["VIRTUAL"]);
        kind = ColumnKind::Metadata { key, is_virtual };
    }
    let mut ty = ty;
    if p.is(&["PRIMARY", "KEY"]) {
        p.eat(&["PRIMARY", "KEY"]);
        expect_not_enforced(p)?;
        set_pk(ct, vec![name.clone()], location)?;
        // Primary key columns are NOT NULL, as in Flink.
        ty.nullable = false;
    }
    let comment = if p.eat(&["COMMENT"]) { Some(p.string()?) } else { None };
    ct.columns.push(ColumnDef { name, ty, kind, comment, location });
    Ok(())
}

fn set_pk(ct: &mut CreateTable, cols: Vec<String>, location: Location) -> Result<(), ParserError> {
    if ct.primary_key.is_some() {
        return Err(ParserError::ParserError(format!(
            "a table has at most one PRIMARY KEY at Line: {}, Column: {}",
            location.line, location.column
        )));
    }
    ct.primary_key = Some((cols, location));
    Ok(())
}

/// Keywords sqlparser knows are not needed here, but keep the import used for future statements.
#[allow(dead_code)]
fn _keyword(_: Keyword) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut v = parse_script(sql).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0).statement
    }

    #[test]
    fn splits_statements_with_comments_and_strings() {
        let s = "-- a comment; with a semicolon\nSET 'a' = 'x;y';\n/* block; */ SHOW TABLES; USE db1;";
        let v = parse_script(s).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].statement, Statement::Set(Some(("a".into(), "x;y".into()))));
        assert_eq!(v[0].location, Location::new(2, 1));
        assert_eq!(v[1].statement, Statement::Show(ShowKind::Tables));
        assert_eq!(v[2].location, Location::new(3, 27));
    }

    #[test]
    fn create_table_flink_style() {
        let s = "CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`orders_src`(
  `order_id` INT NOT NULL,
  `order_revenue` FLOAT NOT NULL,
  ts TIMESTAMP(3),
  proc AS PROCTIME(),
  part BIGINT METADATA FROM 'partition' VIRTUAL,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND,
  PRIMARY KEY(`order_id`) NOT ENFORCED
) with (
  'connector' = 'mysql-cdc',
  'port' = '3306'
)";
        let Statement::CreateTable(ct) = one(s) else { panic!() };
        assert_eq!(ct.name.parts, vec!["default_catalog", "flink_cdc", "orders_src"]);
        assert!(ct.if_not_exists);
        assert_eq!(ct.columns.len(), 5);
        assert_eq!(ct.columns[3].kind, ColumnKind::Computed("PROCTIME()".into()));
        assert_eq!(ct.columns[4].kind, ColumnKind::Metadata { key: Some("partition".into()), is_virtual: true });
        assert_eq!(ct.primary_key.as_ref().unwrap().0, vec!["order_id"]);
        assert_eq!(ct.watermark.as_ref().unwrap().column, "ts");
        assert_eq!(ct.options[0].0, "connector");
        assert_eq!(ct.options[1].2, Location::new(11, 3));
    }

    #[test]
    fn primary_key_must_be_not_enforced() {
        let e = parse_script("CREATE TABLE t (a INT, PRIMARY KEY (a)) WITH ('connector'='x')").unwrap_err();
        assert!(e.to_string().contains("NOT ENFORCED"), "{e}");
        assert_eq!(e.location(), Some(Location::new(1, 39)));
    }

    #[test]
    fn statement_sets_both_syntaxes() {
        let v = parse_script("BEGIN STATEMENT SET; INSERT INTO a SELECT * FROM b; END;").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].statement, Statement::BeginStatementSet);
        assert_eq!(v[2].statement, Statement::End);
        let v = parse_script("EXECUTE STATEMENT SET BEGIN INSERT INTO a SELECT 1; INSERT INTO b SELECT 2; END;").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].statement, Statement::BeginStatementSet);
        assert!(matches!(v[1].statement, Statement::Insert { .. }));
        assert_eq!(v[3].statement, Statement::End);
    }

    #[test]
    fn explain_statement_set_spans_statements() {
        let v = parse_script("EXPLAIN CHANGELOG_MODE STATEMENT SET BEGIN INSERT INTO a SELECT 1; INSERT INTO b SELECT 2; END; SHOW TABLES;").unwrap();
        assert_eq!(v.len(), 2);
        let Statement::Explain { statement, .. } = &v[0].statement else { panic!() };
        let Statement::StatementSet(items) = statement.as_ref() else { panic!() };
        assert_eq!(items.len(), 2);
        assert!(parse_script("EXPLAIN STATEMENT SET BEGIN INSERT INTO a SELECT 1;").is_err());
    }

    #[test]
    fn misc_statements() {
        assert_eq!(one("SET"), Statement::Set(None));
        assert_eq!(one("SET table.exec.state.ttl = '1 h'"), Statement::Set(Some(("table.exec.state.ttl".into(), "1 h".into()))));
        assert_eq!(one("RESET 'a.b'"), Statement::Reset(Some("a.b".into())));
        assert_eq!(one("use catalog c1"), Statement::UseCatalog("c1".into()));
        assert!(matches!(one("DESC t"), Statement::Describe(_)));
        assert!(matches!(one("SHOW CREATE TABLE a.b"), Statement::ShowCreateTable(_)));
        assert!(matches!(one("EXPLAIN CHANGELOG_MODE SELECT 1"), Statement::Explain { .. }));
        assert!(matches!(one("DROP TABLE IF EXISTS x"), Statement::DropTable { if_exists: true, .. }));
        assert!(matches!(one("CREATE DATABASE IF NOT EXISTS `default_catalog`.`flink_cdc`"), Statement::CreateDatabase { .. }));
        assert!(matches!(one("CREATE TEMPORARY VIEW v AS SELECT 1"), Statement::CreateView { temporary: true, .. }));
        assert!(matches!(one("INSERT INTO t (a, b) SELECT 1, 2"), Statement::Insert { ref columns, .. } if columns.len() == 2));
        assert!(matches!(one("INSERT INTO t VALUES (1, 'a')"), Statement::Insert { .. }));
        assert!(matches!(one("CREATE TABLE t2 WITH ('connector' = 'print') LIKE t1 (EXCLUDING ALL)"), Statement::CreateTable(_)));
        assert!(matches!(one("CREATE TABLE t2 WITH ('connector' = 'print') AS SELECT * FROM t1"), Statement::CreateTable(_)));
        assert_eq!(one("quit"), Statement::Quit);
        assert_eq!(one("HELP"), Statement::Help);
    }

    #[test]
    fn window_table_functions_parse() {
        for sql in [
            "SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' MINUTES))",
            "SELECT * FROM TABLE(HOP(DATA => TABLE db.bids, TIMECOL => DESCRIPTOR(ts), SLIDE => INTERVAL '5' SECOND, SIZE => INTERVAL '10' SECOND)) AS w",
            "SELECT window_start, COUNT(*) FROM TABLE(\n  CUMULATE(\n TABLE `bids`, DESCRIPTOR(ts), INTERVAL '1' SECOND, INTERVAL '4' SECOND)) GROUP BY window_start, window_end",
        ] {
            let Statement::Query(q) = one(sql) else { panic!("{sql}") };
            let text = q.to_string();
            assert!(text.contains("TABLE(") && !text.contains("TABLE bids") && !text.contains("TABLE db"), "{text}");
        }
    }

    #[test]
    fn errors_have_locations() {
        let e = parse_script("SHOW TABLES;\nSELEC 1;").unwrap_err();
        assert_eq!(e.location(), Some(Location::new(2, 1)));
        let e = parse_script("CREATE TABLE t (\n  a INTT\n) WITH ()").unwrap_err();
        assert_eq!(e.location(), Some(Location::new(2, 5)), "{e}");
        let e = parse_script("SELECT 'abc").unwrap_err();
        assert!(e.location().is_some());
    }
}
