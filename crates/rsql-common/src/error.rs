//! The error type of every layer. Errors are values with context; the client alone turns them into
//! `file:line:col: error: message` lines.

use std::fmt;

/// A position in a script, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

impl Location {
    pub fn new(line: u64, column: u64) -> Self {
        Location { line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RsqlError {
    /// The script does not parse.
    #[error("{message}")]
    Parse { message: String, location: Option<Location> },
    /// The script parses but names something that does not exist, or does not type check.
    #[error("{message}")]
    Validation { message: String, location: Option<Location> },
    /// A connector option is missing, unknown or has a bad value.
    #[error("table '{table}': {message}")]
    Options { table: String, message: String, location: Option<Location> },
    /// The plan uses something the engine cannot run.
    #[error("{message}")]
    Unsupported { message: String, location: Option<Location> },
    /// A connector failed talking to the outside world.
    #[error("{context}: {message}")]
    Connector { context: String, message: String },
    /// Input data could not be read (bad message, bad row).
    #[error("{context}: {message}")]
    Data { context: String, message: String },
    #[error("{0}")]
    Execution(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{0}")]
    Arrow(#[from] datafusion_common::arrow::error::ArrowError),
    #[error("{0}")]
    DataFusion(Box<datafusion_common::DataFusionError>),
}

impl From<datafusion_common::DataFusionError> for RsqlError {
    fn from(e: datafusion_common::DataFusionError) -> Self {
        RsqlError::DataFusion(Box::new(e))
    }
}

pub type Result<T, E = RsqlError> = std::result::Result<T, E>;

impl RsqlError {
    pub fn parse(message: impl Into<String>, location: Option<Location>) -> Self {
        RsqlError::Parse { message: message.into(), location }
    }
    pub fn validation(message: impl Into<String>, location: Option<Location>) -> Self {
        RsqlError::Validation { message: message.into(), location }
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        RsqlError::Unsupported { message: message.into(), location: None }
    }
    pub fn execution(message: impl Into<String>) -> Self {
        RsqlError::Execution(message.into())
    }
    pub fn connector(context: impl Into<String>, message: impl fmt::Display) -> Self {
        RsqlError::Connector { context: context.into(), message: message.to_string() }
    }
    pub fn data(context: impl Into<String>, message: impl fmt::Display) -> Self {
        RsqlError::Data { context: context.into(), message: message.to_string() }
    }
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RsqlError::Io { context: context.into(), source }
    }

    /// Where in the script the error was found, if known.
    pub fn location(&self) -> Option<Location> {
        match self {
            RsqlError::Parse { location, .. }
            | RsqlError::Validation { location, .. }
            | RsqlError::Options { location, .. }
            | RsqlError::Unsupported { location, .. } => *location,
            _ => None,
        }
    }

    /// Attaches a location when the error has none yet.
    pub fn at(mut self, loc: Location) -> Self {
        match &mut self {
            RsqlError::Parse { location, .. }
            | RsqlError::Validation { location, .. }
            | RsqlError::Options { location, .. }
            | RsqlError::Unsupported { location, .. } => {
                if location.is_none() {
                    *location = Some(loc)
                }
            }
            _ => {}
        }
        self
    }
}
