//! Parses Flink data types (`STRING`, `VARCHAR(40)`, `DECIMAL(10, 2)`, `TIMESTAMP(3) WITH LOCAL
//! TIME ZONE`, `ARRAY<INT>`, `MAP<STRING, BIGINT>`, `ROW<a INT, b STRING>`, `... NOT NULL`) from
//! sqlparser's token stream.

use datafusion_sql::sqlparser::parser::{Parser, ParserError};
use datafusion_sql::sqlparser::tokenizer::Token;
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};

/// Reads a type and an optional trailing `NOT NULL` / `NULL`.
pub fn parse_type(p: &mut Parser) -> Result<LogicalType, ParserError> {
    let mut pending_gt = 0usize;
    let t = parse_inner(p, &mut pending_gt)?;
    if pending_gt > 0 {
        return p.expected("a type", p.peek_token());
    }
    Ok(t)
}

fn word_upper(tok: &Token) -> Option<String> {
    match tok {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn peek_word(p: &Parser) -> Option<String> {
    word_upper(&p.peek_token().token)
}

fn eat_word(p: &mut Parser, w: &str) -> bool {
    if peek_word(p).as_deref() == Some(w) {
        p.next_token();
        true
    } else {
        false
    }
}

fn eat_words(p: &mut Parser, ws: &[&str]) -> bool {
    for (i, w) in ws.iter().enumerate() {
        if word_upper(&p.peek_nth_token(i).token).as_deref() != Some(*w) {
            return false;
        }
    }
    for _ in ws {
        p.next_token();
    }
    true
}

fn parse_u32(p: &mut Parser) -> Result<u32, ParserError> {
    let tok = p.next_token();
    match &tok.token {
        Token::Number(n, _) => n
            .parse::<u32>()
            .map_err(|_| ParserError::ParserError(format!("'{n}' is not a valid length or precision at {}", loc(&tok)))),
        _ => p.expected("a number", tok),
    }
}

fn loc(t: &datafusion_sql::sqlparser::tokenizer::TokenWithSpan) -> String {
    format!("Line: {}, Column: {}", t.span.start.line, t.span.start.column)
}

/// `(n)` if present.
fn opt_len(p: &mut Parser) -> Result<Option<u32>, ParserError> {
    if p.consume_token(&Token::LParen) {
        let n = parse_u32(p)?;
        p.expect_token(&Token::RParen)?;
        Ok(Some(n))
    } else {
        Ok(None)
    }
}

fn expect_gt(p: &mut Parser, pending_gt: &mut usize) -> Result<(), ParserError> {
    if *pending_gt > 0 {
        *pending_gt -= 1;
        return Ok(());
    }
    let tok = p.next_token();
    match tok.token {
        Token::Gt => Ok(()),
        Token::ShiftRight => {
            *pending_gt += 1;
            Ok(())
        }
        _ => p.expected("'>'", tok),
    }
}

fn parse_inner(p: &mut Parser, pending_gt: &mut usize) -> Result<LogicalType, ParserError> {
    let tok = p.next_token();
    let Some(word) = word_upper(&tok.token) else {
        return p.expected("a data type", tok);
    };
    let precision_err = |what: &str, v: u32, max: u32| {
        ParserError::ParserError(format!("{what} must be between 0 and {max}, got {v} at {}", loc(&tok)))
    };
    let ty = match word.as_str() {
        "BOOLEAN" | "BOOL" => FlinkType::Boolean,
        "TINYINT" => FlinkType::TinyInt,
        "SMALLINT" => FlinkType::SmallInt,
        "INT" | "INTEGER" => FlinkType::Int,
        "BIGINT" => FlinkType::BigInt,
        "FLOAT" | "REAL" => FlinkType::Float,
        "DOUBLE" => {
            eat_word(p, "PRECISION");
            FlinkType::Double
        }
        "DECIMAL" | "DEC" | "NUMERIC" => {
            let (mut prec, mut scale) = (10u32, 0u32);
            if p.consume_token(&Token::LParen) {
                prec = parse_u32(p)?;
                if p.consume_token(&Token::Comma) {
                    scale = parse_u32(p)?;
                }
                p.expect_token(&Token::RParen)?;
            }
            if !(1..=38).contains(&prec) {
                return Err(precision_err("DECIMAL precision", prec, 38));
            }
            if scale > prec {
                return Err(ParserError::ParserError(format!(
                    "DECIMAL scale {scale} is larger than its precision {prec} at {}",
                    loc(&tok)
                )));
            }
            FlinkType::Decimal(prec as u8, scale as i8)
        }
        "CHAR" | "CHARACTER" => {
            if eat_word(p, "VARYING") {
                FlinkType::Varchar(opt_len(p)?.unwrap_or(1))
            } else {
                FlinkType::Char(opt_len(p)?.unwrap_or(1))
            }
        }
        "VARCHAR" => FlinkType::Varchar(opt_len(p)?.unwrap_or(1)),
        "STRING" => FlinkType::Varchar(MAX_LENGTH),
        "BINARY" => FlinkType::Binary(opt_len(p)?.unwrap_or(1)),
        "VARBINARY" => FlinkType::Varbinary(opt_len(p)?.unwrap_or(1)),
        "BYTES" => FlinkType::Varbinary(MAX_LENGTH),
        "DATE" => FlinkType::Date,
        "TIME" => {
            let prec = opt_len(p)?.unwrap_or(0);
            if prec > 9 {
                return Err(precision_err("TIME precision", prec, 9));
            }
            eat_words(p, &["WITHOUT", "TIME", "ZONE"]);
            FlinkType::Time(prec as u8)
        }
        "TIMESTAMP" => {
            let prec = opt_len(p)?.unwrap_or(6);
            if prec > 9 {
                return Err(precision_err("TIMESTAMP precision", prec, 9));
            }
            if eat_words(p, &["WITH", "LOCAL", "TIME", "ZONE"]) {
                FlinkType::TimestampLtz(prec as u8)
            } else if eat_words(p, &["WITH", "TIME", "ZONE"]) {
                return Err(ParserError::ParserError(format!(
                    "TIMESTAMP WITH TIME ZONE is not supported (as in Flink); use TIMESTAMP_LTZ or TIMESTAMP WITH LOCAL TIME ZONE at {}",
                    loc(&tok)
                )));
            } else {
                eat_words(p, &["WITHOUT", "TIME", "ZONE"]);
                FlinkType::Timestamp(prec as u8)
            }
        }
        "TIMESTAMP_LTZ" => {
            let prec = opt_len(p)?.unwrap_or(6);
            if prec > 9 {
                return Err(precision_err("TIMESTAMP_LTZ precision", prec, 9));
            }
            FlinkType::TimestampLtz(prec as u8)
        }
        "ARRAY" => {
            p.expect_token(&Token::Lt)?;
            let e = parse_inner(p, pending_gt)?;
            expect_gt(p, pending_gt)?;
            FlinkType::Array(Box::new(e))
        }
        "MAP" => {
            p.expect_token(&Token::Lt)?;
            let k = parse_inner(p, pending_gt)?;
            if *pending_gt > 0 {
                // `MAP<ARRAY<INT>>`: the `>>` closed the map before its value type.
                return p.expected("',' and the value type of the MAP", p.peek_token());
            }
            p.expect_token(&Token::Comma)?;
            let v = parse_inner(p, pending_gt)?;
            expect_gt(p, pending_gt)?;
            FlinkType::Map(Box::new(k), Box::new(v))
        }
        "ROW" => {
            let angle = if p.consume_token(&Token::Lt) {
                true
            } else {
                p.expect_token(&Token::LParen)?;
                false
            };
            let mut fields = Vec::new();
            loop {
                let name = p.parse_identifier()?.value;
                let t = parse_inner(p, pending_gt)?;
                if eat_word(p, "COMMENT") {
                    p.parse_literal_string()?;
                }
                fields.push((name, t));
                // A `>>` that closed a field's type closed this ROW too: the comma after it
                // separates what follows the ROW (the next column), not another field.
                if *pending_gt > 0 || !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            if angle {
                expect_gt(p, pending_gt)?;
            } else {
                p.expect_token(&Token::RParen)?;
            }
            FlinkType::Row(fields)
        }
        "NULL" => FlinkType::Null,
        "MULTISET" | "RAW" | "INTERVAL" | "STRUCTURED" | "VARIANT" => {
            return Err(ParserError::ParserError(format!("the type {word} is not supported yet at {}", loc(&tok))))
        }
        _ => return p.expected("a data type", tok),
    };
    let nullable = if *pending_gt == 0 && eat_words(p, &["NOT", "NULL"]) {
        false
    } else {
        if *pending_gt == 0 && peek_word(p).as_deref() == Some("NULL") {
            p.next_token();
        }
        true
    };
    Ok(LogicalType::new(ty, nullable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::FlinkDialect;

    fn ty(s: &str) -> Result<LogicalType, ParserError> {
        let d = FlinkDialect;
        let mut p = Parser::new(&d).try_with_sql(s)?;
        parse_type(&mut p)
    }

    #[test]
    fn scalar_types() {
        assert_eq!(ty("STRING").unwrap().to_string(), "STRING");
        assert_eq!(ty("varchar(40) NOT NULL").unwrap().to_string(), "VARCHAR(40) NOT NULL");
        assert_eq!(ty("DECIMAL(10, 2)").unwrap().ty, FlinkType::Decimal(10, 2));
        assert_eq!(ty("TIMESTAMP(3) WITH LOCAL TIME ZONE").unwrap().ty, FlinkType::TimestampLtz(3));
        assert_eq!(ty("TIMESTAMP_LTZ(3)").unwrap().ty, FlinkType::TimestampLtz(3));
        assert_eq!(ty("TIMESTAMP").unwrap().ty, FlinkType::Timestamp(6));
        assert!(ty("DECIMAL(50, 2)").is_err());
        assert!(ty("FOO").is_err());
    }

    #[test]
    fn nested_types() {
        assert_eq!(ty("ARRAY<ARRAY<INT>>").unwrap().to_string(), "ARRAY<ARRAY<INT>>");
        assert_eq!(ty("MAP<STRING, ARRAY<BIGINT NOT NULL>>").unwrap().to_string(), "MAP<STRING, ARRAY<BIGINT NOT NULL>>");
        assert_eq!(ty("ROW<a INT, b ROW<c STRING>>").unwrap().to_string(), "ROW<`a` INT, `b` ROW<`c` STRING>>");
        assert!(ty("ARRAY<INT").is_err());
        assert!(ty("MAP<ARRAY<INT>>").is_err());
    }

    #[test]
    fn a_double_angle_closing_a_row_ends_its_fields() {
        let d = FlinkDialect;
        let mut p = Parser::new(&d).try_with_sql("ROW<a STRING, b ROW<c INT, d INT>>, next INT").unwrap();
        assert_eq!(parse_type(&mut p).unwrap().to_string(), "ROW<`a` STRING, `b` ROW<`c` INT, `d` INT>>");
        assert_eq!(p.next_token().token, Token::Comma);
        let mut p = Parser::new(&d).try_with_sql("MAP<STRING, ROW<x ARRAY<INT>>>, next INT").unwrap();
        assert_eq!(parse_type(&mut p).unwrap().to_string(), "MAP<STRING, ROW<`x` ARRAY<INT>>>");
        assert_eq!(p.next_token().token, Token::Comma);
    }
}
