//! Our AST for the statements of a Flink SQL-client script. Queries and INSERT sources stay
//! sqlparser ASTs; everything Flink adds on top lives here.

use datafusion_sql::sqlparser::ast as sp;
use rsql_common::catalog::{ColumnDef, WatermarkDef};
use rsql_common::Location;

/// A name of 1 to 3 parts: [catalog.][database.]object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    pub parts: Vec<String>,
    pub location: Location,
}

impl Name {
    pub fn last(&self) -> &str {
        self.parts.last().map(|s| s.as_str()).unwrap_or("")
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.parts.iter().map(|p| format!("`{p}`")).collect();
        f.write_str(&parts.join("."))
    }
}

/// `'key' = 'value'` pairs of a WITH clause, in order, with locations.
pub type Properties = Vec<(String, String, Location)>;

#[derive(Clone, Debug, PartialEq)]
pub enum LikeOption {
    Including(String),
    Excluding(String),
    Overwriting(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CreateTable {
    pub name: Name,
    pub temporary: bool,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Option<(Vec<String>, Location)>,
    pub watermark: Option<WatermarkDef>,
    pub comment: Option<String>,
    pub partitioned_by: Vec<String>,
    pub options: Properties,
    /// `LIKE source [(INCLUDING ALL ...)]`
    pub like: Option<(Name, Vec<LikeOption>)>,
    /// `AS SELECT ...`
    pub as_query: Option<Box<sp::Query>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShowKind {
    Catalogs,
    Databases,
    Tables,
    Views,
    Functions,
    Jobs,
    CurrentCatalog,
    CurrentDatabase,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExplainDetail {
    ChangelogMode,
    PlanAdvice,
    EstimatedCost,
    JsonExecutionPlan,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    CreateCatalog { name: String, if_not_exists: bool, options: Properties },
    CreateDatabase { name: Name, if_not_exists: bool, comment: Option<String>, options: Properties },
    CreateTable(Box<CreateTable>),
    CreateView { name: Name, temporary: bool, if_not_exists: bool, columns: Vec<String>, query: Box<sp::Query>, comment: Option<String> },
    DropTable { name: Name, if_exists: bool, temporary: bool },
    DropView { name: Name, if_exists: bool, temporary: bool },
    DropDatabase { name: Name, if_exists: bool, cascade: bool },
    DropCatalog { name: String, if_exists: bool },
    UseCatalog(String),
    Use(Name),
    /// `INSERT INTO|OVERWRITE table [(cols)] query`
    Insert { table: Name, columns: Vec<String>, overwrite: bool, query: Box<sp::Query> },
    Query(Box<sp::Query>),
    /// `SET` alone lists; `SET 'k' = 'v'` sets.
    Set(Option<(String, String)>),
    Reset(Option<String>),
    Show(ShowKind),
    ShowCreateTable(Name),
    ShowCreateView(Name),
    Describe(Name),
    Explain { details: Vec<ExplainDetail>, statement: Box<Statement> },
    BeginStatementSet,
    End,
    /// `EXECUTE STATEMENT SET BEGIN ... END` as one statement.
    StatementSet(Vec<Located>),
    Execute(Box<Statement>),
    Help,
    Quit,
}

/// A statement and where it starts in the script.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    pub statement: Statement,
    pub location: Location,
    /// The statement's text, as written.
    pub text: String,
}
