//! Shared vocabulary of rsql: row kinds, changelog batches, Flink logical types and their Arrow
//! mapping, catalog definitions of tables, connector options, and the error type every layer uses.

pub mod batch;
pub mod builder;
pub mod catalog;
pub mod error;
pub mod options;
pub mod row_kind;
pub mod types;

pub use batch::ChangeBatch;
pub use error::{Location, Result, RsqlError};
pub use row_kind::RowKind;
pub use types::{FlinkType, LogicalType};

/// Arrow, as re-exported by DataFusion, so the whole workspace sees one arrow version.
pub use datafusion_common::arrow;
