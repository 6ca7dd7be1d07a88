//! The streaming engine: changelog operators over Arrow batches, keyed state, the connector
//! contract, the dataflow graph, and the executor that runs it on tokio.

pub mod checkpoint;
pub mod clock;
pub mod connector;
pub mod executor;
pub mod graph;
pub mod operators;
pub mod source_status;
pub mod testing;

pub use connector::{
    ChangelogMode, ConnectorFactory, ConnectorRegistry, LookupFunction, Message, ProducedColumn, Sink, Source, SourceContext,
    SourceInfo,
};
pub use executor::{start_job, CheckpointHandle, CheckpointOptions, CheckpointStats, Completed, JobOptions, RunningJob};
pub use source_status::{Lag, Phase, PhaseView, SourceStatus, StatusView};
pub use graph::{AggCall, AggFunc, DedupOrder, JobGraph, JoinKind, Node, NodeId, NodeKind, RankOrder, SortColumn};
