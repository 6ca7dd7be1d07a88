//! What the catalog knows about a table: its columns (physical, computed, metadata), primary key,
//! watermark and connector options, plus where each piece was written in the script.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion_common::arrow::datatypes::{Schema, SchemaRef};

use crate::error::Location;
use crate::options::mask_if_sensitive;
use crate::types::LogicalType;

/// A fully qualified name: catalog.database.object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectPath {
    pub catalog: String,
    pub database: String,
    pub name: String,
}

impl ObjectPath {
    pub fn new(catalog: impl Into<String>, database: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectPath { catalog: catalog.into(), database: database.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`.`{}`.`{}`", self.catalog, self.database, self.name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ColumnKind {
    /// Stored in the external system and read by the connector.
    Physical,
    /// `name AS expr`: computed from other columns; the SQL text of the expression.
    Computed(String),
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`.
    Metadata { key: Option<String>, is_virtual: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: LogicalType,
    pub kind: ColumnKind,
    pub comment: Option<String>,
    pub location: Location,
}

impl ColumnDef {
    pub fn physical(name: impl Into<String>, ty: LogicalType) -> Self {
        ColumnDef { name: name.into(), ty, kind: ColumnKind::Physical, comment: None, location: Location::default() }
    }
    pub fn is_physical(&self) -> bool {
        matches!(self.kind, ColumnKind::Physical)
    }
    /// The metadata key the connector provides for this column, if it is a metadata column.
    pub fn metadata_key(&self) -> Option<&str> {
        match &self.kind {
            ColumnKind::Metadata { key, .. } => Some(key.as_deref().unwrap_or(&self.name)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WatermarkDef {
    pub column: String,
    /// SQL text of the watermark expression.
    pub expr: String,
}

/// An option as written, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct OptionValue {
    pub value: String,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableDef {
    pub path: ObjectPath,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Option<Vec<String>>,
    pub watermark: Option<WatermarkDef>,
    pub options: BTreeMap<String, OptionValue>,
    pub comment: Option<String>,
    pub temporary: bool,
    pub location: Location,
}

impl TableDef {
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(|v| v.value.as_str())
    }

    pub fn connector(&self) -> Option<&str> {
        self.option("connector")
    }

    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The columns the connector reads or writes itself (physical ones).
    pub fn physical_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.columns.iter().filter(|c| c.is_physical())
    }

    /// Arrow schema of the physical columns, in declaration order.
    pub fn physical_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.physical_columns().map(|c| c.ty.to_field(&c.name)).collect::<Vec<_>>()))
    }

    /// The columns an INSERT writes, in the order a sink receives them: the physical columns,
    /// then the metadata columns not declared VIRTUAL (Flink's persisted columns), each group in
    /// declaration order.
    pub fn sink_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        let persisted_meta = |c: &&ColumnDef| matches!(c.kind, ColumnKind::Metadata { is_virtual: false, .. });
        self.physical_columns().chain(self.columns.iter().filter(persisted_meta))
    }

    /// Arrow schema of [`TableDef::sink_columns`].
    pub fn sink_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.sink_columns().map(|c| c.ty.to_field(&c.name)).collect::<Vec<_>>()))
    }

    /// Arrow schema of every column a query sees (physical, metadata and computed).
    pub fn full_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.columns.iter().map(|c| c.ty.to_field(&c.name)).collect::<Vec<_>>()))
    }

    /// Indices of the primary key columns among the physical columns.
    pub fn primary_key_indices(&self) -> Option<Vec<usize>> {
        let pk = self.primary_key.as_ref()?;
        let physical: Vec<&ColumnDef> = self.physical_columns().collect();
        pk.iter().map(|k| physical.iter().position(|c| &c.name == k)).collect()
    }

    /// `SHOW CREATE TABLE` text, sensitive options masked.
    pub fn to_ddl(&self) -> String {
        let mut s = format!("CREATE TABLE {} (\n", self.path);
        let mut lines = Vec::new();
        for c in &self.columns {
            let mut l = format!("  `{}` ", c.name);
            match &c.kind {
                ColumnKind::Physical => l.push_str(&c.ty.to_string()),
                ColumnKind::Computed(e) => l = format!("  `{}` AS {}", c.name, e),
                ColumnKind::Metadata { key, is_virtual } => {
                    l.push_str(&c.ty.to_string());
                    l.push_str(" METADATA");
                    if let Some(k) = key {
                        l.push_str(&format!(" FROM '{k}'"));
                    }
                    if *is_virtual {
                        l.push_str(" VIRTUAL");
                    }
                }
            }
            if let Some(cm) = &c.comment {
                l.push_str(&format!(" COMMENT '{}'", cm.replace('\'', "''")));
            }
            lines.push(l);
        }
        if let Some(w) = &self.watermark {
            lines.push(format!("  WATERMARK FOR `{}` AS {}", w.column, w.expr));
        }
        if let Some(pk) = &self.primary_key {
            let cols: Vec<String> = pk.iter().map(|c| format!("`{c}`")).collect();
            lines.push(format!("  PRIMARY KEY ({}) NOT ENFORCED", cols.join(", ")));
        }
        s.push_str(&lines.join(",\n"));
        s.push_str("\n)");
        if let Some(cm) = &self.comment {
            s.push_str(&format!("\nCOMMENT '{}'", cm.replace('\'', "''")));
        }
        s.push_str(" WITH (\n");
        let opts: Vec<String> = self
            .options
            .iter()
            .map(|(k, v)| format!("  '{}' = '{}'", k, mask_if_sensitive(k, &v.value)))
            .collect();
        s.push_str(&opts.join(",\n"));
        s.push_str("\n)\n");
        s
    }
}
