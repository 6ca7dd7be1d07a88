//! What the connector knows about a captured MySQL table: its columns as information_schema
//! describes them, its primary key, and whether each declared Flink column can hold the MySQL
//! column it reads.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use rsql_common::types::{FlinkType, LogicalType};
use rsql_common::{Result, RsqlError};

/// One column of a MySQL table.
#[derive(Clone, Debug, PartialEq)]
pub struct MySqlColumn {
    pub name: String,
    /// information_schema DATA_TYPE, lower case (`int`, `varchar`, `datetime`, ...).
    pub data_type: String,
    /// information_schema COLUMN_TYPE, lower case (`tinyint(1)`, `int(10) unsigned`, `enum('a','b')`).
    pub column_type: String,
    pub unsigned: bool,
    pub nullable: bool,
    pub scale: u32,
    /// Fractional seconds digits of DATETIME / TIMESTAMP / TIME.
    pub fsp: u32,
    /// Declared length of CHAR / BINARY / BIT columns.
    pub length: u64,
    /// Character set of textual columns; None for binary ones.
    pub charset: Option<String>,
    /// Collation of textual columns (orders text keys of snapshot chunks).
    pub collation: Option<String>,
    /// Values of ENUM and SET columns, in declaration order.
    pub labels: Vec<String>,
}

/// How a MySQL column reads, grouped the way the type mapping needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Int,
    Decimal,
    Float,
    Double,
    Bit,
    Text,
    Enum,
    Set,
    Binary,
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
}

impl MySqlColumn {
    pub fn family(&self) -> Family {
        match self.data_type.as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => Family::Int,
            "decimal" | "numeric" => Family::Decimal,
            "float" => Family::Float,
            "double" | "real" | "double precision" => Family::Double,
            "bit" => Family::Bit,
            "enum" => Family::Enum,
            "set" => Family::Set,
            "date" => Family::Date,
            "datetime" => Family::DateTime,
            "timestamp" => Family::Timestamp,
            "time" => Family::Time,
            "year" => Family::Year,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "geometry" | "point"
            | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon" | "geometrycollection"
            | "geomcollection" | "vector" => Family::Binary,
            // char, varchar, *text, json, uuid, inet4, inet6 and anything new read as text when
            // they have a character set.
            _ => {
                if self.charset.is_some() || self.data_type == "json" {
                    Family::Text
                } else {
                    Family::Binary
                }
            }
        }
    }

    /// Bits of a signed integer that hold every value of this column (64 for BIGINT UNSIGNED,
    /// which Flink CDC maps to DECIMAL(20, 0)).
    fn int_bits(&self) -> u32 {
        let base = match self.data_type.as_str() {
            "tinyint" => 8,
            "smallint" => 16,
            "mediumint" => 24,
            "int" | "integer" => 32,
            _ => 64,
        };
        if self.unsigned && base < 64 {
            match base {
                8 => 16,
                16 => 32,
                24 => 32,
                _ => 64,
            }
        } else {
            base
        }
    }

    /// Checks that a column declared `declared` in Flink can hold this column's values, following
    /// Flink CDC's type mapping. Returns the reason when it cannot.
    pub fn check_declared(&self, declared: &LogicalType) -> std::result::Result<(), String> {
        use FlinkType as F;
        let t = &declared.ty;
        let ok = match (self.family(), t) {
            (_, F::Char(_) | F::Varchar(_)) => true,
            (Family::Int, F::Boolean) => self.column_type.starts_with("tinyint(1)"),
            (Family::Int, F::TinyInt | F::SmallInt | F::Int | F::BigInt) => {
                let bits = match t {
                    F::TinyInt => 8,
                    F::SmallInt => 16,
                    F::Int => 32,
                    _ => 64,
                };
                if bits < self.int_bits() {
                    return Err(format!(
                        "{} needs at least {} (Flink CDC maps it to {})",
                        self.column_type,
                        int_type_name(self.int_bits()),
                        int_type_name(self.int_bits())
                    ));
                }
                true
            }
            (Family::Int | Family::Decimal | Family::Float | Family::Double, t) => t.is_numeric(),
            (Family::Year, F::SmallInt | F::Int | F::BigInt) => true,
            (Family::Bit, F::Boolean) => self.length <= 1,
            (Family::Bit, F::Binary(_) | F::Varbinary(_) | F::TinyInt | F::SmallInt | F::Int | F::BigInt) => true,
            (Family::Binary, F::Binary(_) | F::Varbinary(_)) => true,
            (Family::Text | Family::Enum | Family::Set, F::Binary(_) | F::Varbinary(_)) => true,
            (Family::Date, F::Date | F::Timestamp(_) | F::TimestampLtz(_)) => true,
            (Family::DateTime | Family::Timestamp, F::Timestamp(_) | F::TimestampLtz(_)) => true,
            (Family::Time, F::Time(_)) => true,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("a {} column cannot be read as {}", self.column_type, t))
        }
    }
}

fn int_type_name(bits: u32) -> &'static str {
    match bits {
        8 => "TINYINT",
        16 => "SMALLINT",
        32 => "INT",
        _ => "BIGINT",
    }
}

/// A captured table: name, columns in ordinal order (the binlog's order), primary key.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSchema {
    pub database: String,
    pub table: String,
    pub columns: Vec<MySqlColumn>,
    /// Indices into `columns` of the primary key, in key order.
    pub primary_key: Vec<usize>,
    /// information_schema's row estimate, for progress messages.
    pub estimated_rows: u64,
}

impl TableSchema {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .or_else(|| self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name)))
    }

    /// Whether the key is one integer column (the snapshot splits such tables into chunks).
    pub fn has_integer_key(&self) -> bool {
        self.primary_key.len() == 1 && self.columns[self.primary_key[0]].family() == Family::Int
    }
}

/// Quotes an identifier for MySQL.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Quotes a string literal for MySQL.
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Reads a text column of a result row.
pub fn row_str(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(v) => Some(v.to_string()),
        Value::UInt(v) => Some(v.to_string()),
        Value::Float(v) => Some(v.to_string()),
        Value::Double(v) => Some(v.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn row_u64(row: &Row, i: usize) -> u64 {
    row_str(row, i).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Parses the value list of `enum('a','b')` / `set('x','y')`.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else { return Vec::new() };
    let mut out = Vec::new();
    let mut chars = column_type[open + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                c => label.push(c),
            }
        }
        out.push(label);
    }
    out
}

fn db_err(context: &str, e: mysql_async::Error) -> RsqlError {
    RsqlError::connector(context.to_string(), e)
}

/// Lists the tables whose `db.table` name matches the connector's patterns, Flink CDC style:
/// `database-name` and `table-name` are regular expressions matched against the whole name.
pub async fn find_tables(conn: &mut Conn, database_re: &str, table_re: &str) -> Result<Vec<(String, String)>> {
    let full = regex::Regex::new(&format!("^(?:{database_re})\\.(?:{table_re})$")).map_err(|e| {
        RsqlError::connector(
            "mysql-cdc",
            format!("'database-name' / 'table-name' is not a valid regular expression: {e}"),
        )
    })?;
    let plain = regex::Regex::new(&format!("^(?:{database_re})\\.(?:{database_re})\\.(?:{table_re})$")).ok();
    let rows: Vec<Row> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .map_err(|e| db_err("mysql-cdc: listing tables", e))?;
    let mut out = Vec::new();
    for r in rows {
        let (Some(db), Some(t)) = (row_str(&r, 0), row_str(&r, 1)) else { continue };
        let name = format!("{db}.{t}");
        // Flink CDC also accepts a table-name that already carries the database name.
        let with_db = format!("{db}.{name}");
        if full.is_match(&name) || plain.as_ref().is_some_and(|p| p.is_match(&with_db)) {
            out.push((db, t));
        }
    }
    Ok(out)
}

/// Reads a table's columns from information_schema, in ordinal order; empty when the table does
/// not exist or the user cannot see it. `ctx` names the reader in errors.
pub async fn read_columns(conn: &mut Conn, database: &str, table: &str, ctx: &str) -> Result<Vec<MySqlColumn>> {
    let sql = format!(
        "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), IS_NULLABLE, NUMERIC_SCALE, DATETIME_PRECISION, \
         CHARACTER_MAXIMUM_LENGTH, CHARACTER_SET_NAME, NUMERIC_PRECISION, COLLATION_NAME, COLUMN_TYPE \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
        quote_str(database),
        quote_str(table)
    );
    let rows: Vec<Row> = conn.query(sql).await.map_err(|e| db_err(ctx, e))?;
    let mut columns = Vec::with_capacity(rows.len());
    for r in &rows {
        let name = row_str(r, 0).unwrap_or_default();
        let data_type = row_str(r, 1).unwrap_or_default();
        let column_type = row_str(r, 2).unwrap_or_default();
        // Labels keep their declared case (the stored values and the values sent by the binlog
        // use it), so they come from COLUMN_TYPE as written, not from the lower-cased copy.
        let labels = if data_type == "enum" || data_type == "set" {
            parse_labels(&row_str(r, 10).unwrap_or_default())
        } else {
            Vec::new()
        };
        let length = if data_type == "bit" { row_u64(r, 8) } else { row_u64(r, 6) };
        columns.push(MySqlColumn {
            unsigned: column_type.contains("unsigned"),
            nullable: row_str(r, 3).as_deref() == Some("YES"),
            scale: row_u64(r, 4) as u32,
            fsp: row_u64(r, 5) as u32,
            length,
            charset: row_str(r, 7),
            collation: row_str(r, 9),
            name,
            data_type,
            column_type,
            labels,
        });
    }
    Ok(columns)
}

/// Reads a table's columns and primary key from information_schema.
pub async fn load_table(conn: &mut Conn, database: &str, table: &str) -> Result<TableSchema> {
    let ctx = format!("mysql-cdc: reading the columns of {database}.{table}");
    let columns = read_columns(conn, database, table, &ctx).await?;
    if columns.is_empty() {
        return Err(RsqlError::connector(
            "mysql-cdc",
            format!("table {database}.{table} does not exist or the user cannot see it; check 'database-name' and 'table-name' and the user's SELECT grant"),
        ));
    }
    let key_sql = format!(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
         AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
        quote_str(database),
        quote_str(table)
    );
    let key_rows: Vec<Row> = conn.query(key_sql).await.map_err(|e| db_err(&ctx, e))?;
    let primary_key = key_rows
        .iter()
        .filter_map(|r| row_str(r, 0))
        .filter_map(|k| columns.iter().position(|c| c.name == k))
        .collect();
    let est_sql = format!(
        "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
        quote_str(database),
        quote_str(table)
    );
    let est: Option<Row> = conn.query_first(est_sql).await.map_err(|e| db_err(&ctx, e))?;
    let estimated_rows = est.map(|r| row_u64(&r, 0)).unwrap_or(0);
    Ok(TableSchema { database: database.to_string(), table: table.to_string(), columns, primary_key, estimated_rows })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A table `d.t` with one INT key column.
    pub fn int_key_table() -> TableSchema {
        TableSchema { database: "d".into(), table: "t".into(), columns: vec![col("int", "int(11)")], primary_key: vec![0], estimated_rows: 0 }
    }

    pub fn col(data_type: &str, column_type: &str) -> MySqlColumn {
        MySqlColumn {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            unsigned: column_type.contains("unsigned"),
            nullable: true,
            scale: 0,
            fsp: 0,
            length: 0,
            charset: if matches!(data_type, "char" | "varchar" | "text" | "enum" | "set" | "longtext") {
                Some("utf8mb4".into())
            } else {
                None
            },
            collation: None,
            labels: parse_labels(column_type),
        }
    }

    #[test]
    fn labels() {
        assert_eq!(parse_labels("enum('a','it''s','x,y')"), vec!["a", "it's", "x,y"]);
        assert_eq!(parse_labels("set('r','w')"), vec!["r", "w"]);
        assert!(parse_labels("int(11)").is_empty());
    }

    #[test]
    fn declared_types() {
        let t = |ty| LogicalType::nullable(ty);
        // The seed: an INT column declared FLOAT.
        assert!(col("int", "int(11)").check_declared(&t(FlinkType::Float)).is_ok());
        assert!(col("varchar", "varchar(40)").check_declared(&t(FlinkType::Int)).is_err());
        assert!(col("tinyint", "tinyint(1)").check_declared(&t(FlinkType::Boolean)).is_ok());
        assert!(col("tinyint", "tinyint(4)").check_declared(&t(FlinkType::Boolean)).is_err());
        assert!(col("int", "int(10) unsigned").check_declared(&t(FlinkType::Int)).is_err());
        assert!(col("int", "int(10) unsigned").check_declared(&t(FlinkType::BigInt)).is_ok());
        assert!(col("bigint", "bigint(20) unsigned").check_declared(&t(FlinkType::Decimal(20, 0))).is_ok());
        assert!(col("datetime", "datetime(3)").check_declared(&t(FlinkType::TimestampLtz(3))).is_ok());
        assert!(col("datetime", "datetime").check_declared(&t(FlinkType::Date)).is_err());
        assert!(col("blob", "blob").check_declared(&t(FlinkType::Varbinary(u32::MAX >> 1))).is_ok());
        assert!(col("enum", "enum('a')").check_declared(&t(FlinkType::Varchar(10))).is_ok());
        assert!(col("year", "year(4)").check_declared(&t(FlinkType::Int)).is_ok());
        assert!(col("time", "time(6)").check_declared(&t(FlinkType::Timestamp(3))).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_str("it's\\"), "'it''s\\\\'");
    }
}
