//! Built-in connectors and the formats they share. Each connector module exposes
//! `register(&mut ConnectorRegistry)`; `register_builtin` registers them all.

mod background;
pub mod blackhole;
pub mod datagen;
pub mod filesystem;
pub mod formats;
pub mod jdbc;
pub mod mysql_cdc;
pub mod print;
pub mod starrocks;

use rsql_runtime::ConnectorRegistry;

/// Registers every connector of this crate.
pub fn register_builtin(reg: &mut ConnectorRegistry) {
    blackhole::register(reg);
    datagen::register(reg);
    filesystem::register(reg);
    jdbc::register(reg);
    mysql_cdc::register(reg);
    print::register(reg);
    starrocks::register(reg);
}
