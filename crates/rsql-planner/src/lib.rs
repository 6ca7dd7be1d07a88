//! From statements to jobs: the catalog, DataFusion-based query planning, changelog-mode
//! inference and lowering to the runtime's dataflow graph.

pub mod catalog;
pub mod datetime;
pub mod lower;
pub mod nested;
pub mod planner;
pub mod provider;
pub mod window;

pub use catalog::{Catalog, CatalogEntry};
pub use planner::{InsertPlan, Session};
