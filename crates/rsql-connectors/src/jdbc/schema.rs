//! What the jdbc sink checks about its MySQL table before it writes: the table exists, every
//! declared column exists there with a type that can take the declared values, and a declared
//! primary key matches a primary key or unique index of the table (otherwise `INSERT ... ON
//! DUPLICATE KEY UPDATE` would add rows instead of updating them).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use rsql_common::types::{FlinkType, LogicalType, MAX_LENGTH};
use rsql_common::{Result, RsqlError};

use crate::mysql_cdc::schema::{quote_str, read_columns, row_str, Family, MySqlColumn};

use super::JdbcConfig;

/// The MySQL table a jdbc sink writes, as checked at start.
#[derive(Clone, Debug)]
pub struct TargetTable {
    /// For each declared column, the MySQL column it writes (same order as `JdbcConfig::columns`).
    pub columns: Vec<MySqlColumn>,
}

/// Whether a value of the declared type can be written into the MySQL column; the reason when not.
pub fn check_writable(declared: &LogicalType, col: &MySqlColumn) -> std::result::Result<(), String> {
    use FlinkType as F;
    let fam = col.family();
    let numeric_target = matches!(fam, Family::Int | Family::Decimal | Family::Float | Family::Double | Family::Year | Family::Bit);
    let ok = match &declared.ty {
        F::Boolean => numeric_target || fam == Family::Text,
        t if t.is_numeric() => numeric_target || fam == Family::Text,
        F::Char(_) | F::Varchar(_) => matches!(
            fam,
            Family::Text | Family::Enum | Family::Set | Family::Binary | Family::Date | Family::DateTime | Family::Timestamp | Family::Time
        ),
        F::Binary(_) | F::Varbinary(_) => matches!(fam, Family::Binary | Family::Text),
        F::Date => matches!(fam, Family::Date | Family::DateTime | Family::Timestamp | Family::Text),
        F::Time(_) => matches!(fam, Family::Time | Family::Text),
        F::Timestamp(_) | F::TimestampLtz(_) => matches!(fam, Family::DateTime | Family::Timestamp | Family::Text),
        F::Null => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let hint = match (&declared.ty, fam) {
        (F::Char(_) | F::Varchar(_), Family::Int | Family::Decimal | Family::Float | Family::Double | Family::Bit | Family::Year) => {
            "; declare the column with a numeric type (or CAST in the query)"
        }
        _ => "",
    };
    Err(format!("a {} value cannot be written into a {} column{hint}", declared.ty, col.column_type))
}

/// Narrowing that may fail for some values (logged at start; the row is named if it happens).
fn narrowing(declared: &LogicalType, col: &MySqlColumn) -> Option<String> {
    match &declared.ty {
        // STRING into VARCHAR(n) is the usual way to declare text columns: no warning for it.
        FlinkType::Varchar(n) | FlinkType::Char(n)
            if *n != MAX_LENGTH && matches!(col.family(), Family::Text) && col.length > 0 && (*n as u64) > col.length =>
        {
            Some(format!("{} into {} (longer values fail)", declared.ty, col.column_type))
        }
        FlinkType::BigInt if col.family() == Family::Int && !col.column_type.starts_with("bigint") => {
            Some(format!("BIGINT into {} (values out of its range fail)", col.column_type))
        }
        _ => None,
    }
}

/// Reads the target table from information_schema and checks the declared columns and key.
pub async fn check_target(conn: &mut Conn, cfg: &JdbcConfig) -> Result<TargetTable> {
    let ctx = cfg.context();
    let cols = read_columns(conn, &cfg.database, &cfg.table, &ctx).await?;
    if cols.is_empty() {
        return Err(RsqlError::connector(
            ctx,
            format!(
                "the table {}.{} does not exist or user '{}' cannot see it; create it first (the jdbc sink does not create tables) \
                 or check 'url' and 'table-name'",
                cfg.database,
                cfg.table,
                cfg.username.as_deref().unwrap_or("")
            ),
        ));
    }
    let mut matched = Vec::with_capacity(cfg.columns.len());
    for (name, ty) in &cfg.columns {
        let Some(c) = cols.iter().find(|c| c.name == *name).or_else(|| cols.iter().find(|c| c.name.eq_ignore_ascii_case(name))) else {
            let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            return Err(RsqlError::connector(
                ctx,
                format!(
                    "column '{name}' is declared in the Flink table but {}.{} has no such column (it has: {})",
                    cfg.database,
                    cfg.table,
                    names.join(", ")
                ),
            ));
        };
        if let Err(why) = check_writable(ty, c) {
            return Err(RsqlError::connector(ctx, format!("column '{name}': {why}")));
        }
        if let Some(w) = narrowing(ty, c) {
            tracing::info!(table = %cfg.flink_table, "jdbc sink column '{name}': {w}");
        }
        matched.push(c.clone());
    }
    if cfg.is_upsert() {
        let unique = unique_keys(conn, cfg, &ctx).await?;
        let declared: Vec<String> = cfg.key.iter().map(|&i| matched[i].name.to_ascii_lowercase()).collect();
        let found = unique.iter().any(|(_, cols)| {
            let mut a: Vec<String> = cols.iter().map(|c| c.to_ascii_lowercase()).collect();
            let mut b = declared.clone();
            a.sort();
            b.sort();
            a == b
        });
        if !found {
            let pk_names: Vec<&str> = cfg.key.iter().map(|&i| cfg.columns[i].0.as_str()).collect();
            let existing = if unique.is_empty() {
                "it has no primary key or unique index".to_string()
            } else {
                let list: Vec<String> = unique.iter().map(|(n, c)| format!("{n} ({})", c.join(", "))).collect();
                format!("its unique keys are {}", list.join(", "))
            };
            return Err(RsqlError::connector(
                ctx,
                format!(
                    "the Flink table declares PRIMARY KEY ({}) but {existing}, so upserts would add rows instead of updating them; \
                     add one with ALTER TABLE {}.{} ADD PRIMARY KEY ({}) or declare the table's key",
                    pk_names.join(", "),
                    cfg.database,
                    cfg.table,
                    pk_names.join(", ")
                ),
            ));
        }
    }
    Ok(TargetTable { columns: matched })
}

/// Primary key and unique indexes of the target: (index name, columns in index order).
async fn unique_keys(conn: &mut Conn, cfg: &JdbcConfig, ctx: &str) -> Result<Vec<(String, Vec<String>)>> {
    let sql = format!(
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
         AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        quote_str(&cfg.database),
        quote_str(&cfg.table)
    );
    let rows: Vec<Row> =
        conn.query(sql).await.map_err(|e| RsqlError::connector(ctx.to_string(), format!("reading the table's unique keys: {e}")))?;
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in rows {
        let (Some(index), Some(col)) = (row_str(&r, 0), row_str(&r, 1)) else { continue };
        match out.last_mut() {
            Some((n, cols)) if *n == index => cols.push(col),
            _ => out.push((index, vec![col])),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql_cdc::schema::tests::col;

    #[test]
    fn writable_types() {
        let t = |ty| LogicalType::nullable(ty);
        assert!(check_writable(&t(FlinkType::Float), &col("int", "int(11)")).is_ok());
        assert!(check_writable(&t(FlinkType::BigInt), &col("float", "float")).is_ok());
        assert!(check_writable(&t(FlinkType::Varchar(MAX_LENGTH)), &col("varchar", "varchar(40)")).is_ok());
        assert!(check_writable(&t(FlinkType::Int), &col("varchar", "varchar(40)")).is_ok());
        let e = check_writable(&t(FlinkType::Varchar(MAX_LENGTH)), &col("int", "int(11)")).unwrap_err();
        assert!(e.contains("STRING value cannot be written into a int(11) column"), "{e}");
        assert!(check_writable(&t(FlinkType::Timestamp(3)), &col("datetime", "datetime(3)")).is_ok());
        assert!(check_writable(&t(FlinkType::Timestamp(3)), &col("int", "int(11)")).is_err());
        assert!(check_writable(&t(FlinkType::Date), &col("date", "date")).is_ok());
        assert!(check_writable(&t(FlinkType::Boolean), &col("tinyint", "tinyint(1)")).is_ok());
        assert!(check_writable(&t(FlinkType::Varbinary(10)), &col("blob", "blob")).is_ok());
        assert!(check_writable(&t(FlinkType::Varbinary(10)), &col("int", "int(11)")).is_err());
        let mut short = col("varchar", "varchar(5)");
        short.length = 5;
        assert!(narrowing(&t(FlinkType::Varchar(40)), &short).is_some());
        assert!(narrowing(&t(FlinkType::Varchar(MAX_LENGTH)), &short).is_none());
        assert!(narrowing(&t(FlinkType::Varchar(5)), &short).is_none());
    }
}
