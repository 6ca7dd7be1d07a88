//! DataFusion's view of our catalog: a ContextProvider that resolves table names against the
//! session's catalog and offers the built-in scalar, aggregate and window functions.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion_common::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef, TimeUnit};
use datafusion_common::config::ConfigOptions;
use datafusion_common::{plan_err, DataFusionError, ScalarValue, TableReference};
use datafusion_expr::planner::{ContextProvider, ExprPlanner, TypePlanner};
use datafusion_expr::{
    AggregateUDF, ColumnarValue, HigherOrderUDF, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableSource, Volatility, WindowUDF,
};
use datafusion_sql::sqlparser::ast as sp;
use rsql_common::catalog::ObjectPath;
use rsql_common::options::did_you_mean;
use rsql_runtime::clock::{wall_clock, Clock};

use crate::catalog::{Catalog, CatalogEntry};
use crate::window::WindowTvf;

/// A table or view as DataFusion sees it.
#[derive(Debug)]
pub struct CatalogTable {
    pub path: ObjectPath,
    pub entry: CatalogEntry,
    pub schema: SchemaRef,
    /// Read with `FOR SYSTEM_TIME AS OF`: the dimension side of a lookup join.
    pub lookup: bool,
    /// The table is the input of a window table function: `schema` has the window columns.
    pub window: Option<Arc<WindowTvf>>,
}

impl TableSource for CatalogTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        if self.window.is_some() {
            // A window over a view is lowered from the view's plan with the window columns.
            return None;
        }
        match &self.entry {
            CatalogEntry::View(v) => Some(Cow::Borrowed(v.plan.as_ref())),
            CatalogEntry::Table(_) => None,
        }
    }
}

/// Which time a [`ProcessingTime`] function returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TimeKind {
    /// TIMESTAMP_LTZ(3): `PROCTIME()`, `NOW()`, `CURRENT_TIMESTAMP`.
    Instant,
    /// TIMESTAMP(3) in the session time zone (UTC): `LOCALTIMESTAMP`.
    LocalTimestamp,
    /// DATE in the session time zone: `CURRENT_DATE`.
    Date,
    /// TIME(0) in the session time zone: `CURRENT_TIME`, `LOCALTIME`.
    Time,
    /// BIGINT seconds since the epoch: `UNIX_TIMESTAMP()`.
    UnixSeconds,
}

/// The time functions that Flink's streaming mode evaluates at processing time: `PROCTIME()`,
/// `NOW()`, `CURRENT_TIMESTAMP`, `LOCALTIMESTAMP`, `CURRENT_DATE`, `CURRENT_TIME`, `LOCALTIME`
/// and `UNIX_TIMESTAMP()`. They are volatile, so the planner never folds them into constants;
/// each evaluation (one per batch) reads the clock. A computed column `c AS PROCTIME()` is a
/// processing-time attribute: ordering by it is ordering by arrival (deduplication, Top-N).
pub struct ProcessingTime {
    name: &'static str,
    kind: TimeKind,
    signature: Signature,
    clock: Clock,
}

impl std::fmt::Debug for ProcessingTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessingTime({})", self.name)
    }
}

// Two instances are the same function when they have the same name (the clock is not part of
// a plan's identity).
impl PartialEq for ProcessingTime {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ProcessingTime {}

impl std::hash::Hash for ProcessingTime {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

/// Names and kinds of the processing-time functions.
const TIME_FUNCTIONS: [(&str, TimeKind); 8] = [
    ("proctime", TimeKind::Instant),
    ("now", TimeKind::Instant),
    ("current_timestamp", TimeKind::Instant),
    ("localtimestamp", TimeKind::LocalTimestamp),
    ("current_date", TimeKind::Date),
    ("current_time", TimeKind::Time),
    ("localtime", TimeKind::Time),
    ("unix_timestamp", TimeKind::UnixSeconds),
];

const MS_PER_DAY: i64 = 86_400_000;

impl ProcessingTime {
    fn new(name: &'static str, kind: TimeKind, clock: Clock) -> Self {
        ProcessingTime { name, kind, signature: Signature::nullary(Volatility::Volatile), clock }
    }

    fn data_type(&self) -> DataType {
        match self.kind {
            TimeKind::Instant => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            TimeKind::LocalTimestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            TimeKind::Date => DataType::Date32,
            TimeKind::Time => DataType::Time64(TimeUnit::Microsecond),
            TimeKind::UnixSeconds => DataType::Int64,
        }
    }

    /// The function's value at `millis` since the epoch (the session time zone is UTC).
    fn value_at(&self, millis: i64) -> ScalarValue {
        match self.kind {
            // Millisecond precision, as TIMESTAMP_LTZ(3) and TIMESTAMP(3).
            TimeKind::Instant => ScalarValue::TimestampMicrosecond(Some(millis * 1000), Some(Arc::from("UTC"))),
            TimeKind::LocalTimestamp => ScalarValue::TimestampMicrosecond(Some(millis * 1000), None),
            TimeKind::Date => ScalarValue::Date32(Some(millis.div_euclid(MS_PER_DAY) as i32)),
            // TIME(0): whole seconds.
            TimeKind::Time => ScalarValue::Time64Microsecond(Some(millis.rem_euclid(MS_PER_DAY) / 1000 * 1_000_000)),
            TimeKind::UnixSeconds => ScalarValue::Int64(Some(millis.div_euclid(1000))),
        }
    }
}

impl ScalarUDFImpl for ProcessingTime {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> datafusion_common::Result<DataType> {
        Ok(self.data_type())
    }
    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> datafusion_common::Result<FieldRef> {
        Ok(Arc::new(Field::new(self.name(), self.data_type(), false)))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> datafusion_common::Result<ColumnarValue> {
        let millis = i64::try_from((self.clock)()).unwrap_or(i64::MAX / 1000);
        Ok(ColumnarValue::Scalar(self.value_at(millis)))
    }
}

impl Functions {
    /// Makes the processing-time functions (`NOW()`, `PROCTIME()`, ...) read `clock`.
    pub fn set_clock(&mut self, clock: Clock) {
        for (name, kind) in TIME_FUNCTIONS {
            self.scalar.insert(name.into(), Arc::new(ScalarUDF::from(ProcessingTime::new(name, kind, clock.clone()))));
        }
        // UNIX_TIMESTAMP(string [, pattern]) parses; without arguments it reads the clock.
        if let Some(now) = self.scalar.get("unix_timestamp").cloned() {
            self.scalar.insert("unix_timestamp".into(), crate::datetime::unix_timestamp(now));
        }
    }
}

/// The functions the planner knows, built once per session.
pub struct Functions {
    pub scalar: HashMap<String, Arc<ScalarUDF>>,
    pub aggregate: HashMap<String, Arc<AggregateUDF>>,
    pub window: HashMap<String, Arc<WindowUDF>>,
    pub planners: Vec<Arc<dyn ExprPlanner>>,
    pub options: ConfigOptions,
}

impl Default for Functions {
    fn default() -> Self {
        let mut scalar = HashMap::new();
        for f in datafusion_functions::all_default_functions() {
            for a in f.aliases() {
                scalar.insert(a.to_string(), f.clone());
            }
            scalar.insert(f.name().to_string(), f);
        }
        let mut aggregate = HashMap::new();
        for f in datafusion_functions_aggregate::all_default_aggregate_functions() {
            for a in f.aliases() {
                aggregate.insert(a.to_string(), f.clone());
            }
            aggregate.insert(f.name().to_string(), f);
        }
        crate::nested::register(&mut scalar);
        crate::datetime::register(&mut scalar);
        // Flink's LISTAGG is STRING_AGG with an optional separator.
        if let Some(f) = aggregate.get("string_agg").cloned() {
            aggregate.insert("listagg".into(), f);
        }
        let mut window = HashMap::new();
        for f in datafusion_functions_window::all_default_window_functions() {
            for a in f.aliases() {
                window.insert(a.to_string(), f.clone());
            }
            window.insert(f.name().to_string(), f);
        }
        let planners: Vec<Arc<dyn ExprPlanner>> = vec![
            // First, so ARRAY / MAP / ROW values follow Flink rather than DataFusion.
            Arc::new(crate::nested::NestedPlanner),
            Arc::new(datafusion_functions::core::planner::CoreFunctionPlanner::default()),
            Arc::new(datafusion_functions::unicode::planner::UnicodeFunctionPlanner),
            Arc::new(datafusion_functions::datetime::planner::DatetimeFunctionPlanner),
            Arc::new(datafusion_functions_aggregate::planner::AggregateFunctionPlanner),
            Arc::new(datafusion_functions_window::planner::WindowFunctionPlanner),
        ];
        let mut options = ConfigOptions::default();
        options.sql_parser.enable_ident_normalization = false;
        options.sql_parser.parse_float_as_decimal = true;
        options.sql_parser.map_string_types_to_utf8view = false;
        options.execution.time_zone = Some("UTC".into());
        let mut f = Functions { scalar, aggregate, window, planners, options };
        f.set_clock(wall_clock());
        f
    }
}

pub struct Provider<'a> {
    pub catalog: &'a Catalog,
    pub functions: &'a Functions,
    /// Tables the statement reads with `FOR SYSTEM_TIME AS OF`.
    pub lookups: HashSet<ObjectPath>,
    /// The statement's window table functions, by their synthetic table names.
    pub windows: HashMap<String, Arc<WindowTvf>>,
}

/// Flink type names that DataFusion's SQL planner does not know, where a query names a type
/// (`CAST(x AS TIMESTAMP_LTZ(3))`, `CAST(s AS BYTES)`): `TIMESTAMP_LTZ(p)`, `BYTES`,
/// `BINARY(n)`, `VARBINARY(n)`, `TIME(p)`, `TIMESTAMP(p)` of any precision, `CHARACTER
/// VARYING(n)` and `DEC(p, s)` are read as a table definition reads them. The other types keep
/// DataFusion's reading.
#[derive(Debug)]
struct FlinkTypes;

impl TypePlanner for FlinkTypes {
    fn plan_type_field(&self, t: &sp::DataType) -> datafusion_common::Result<Option<FieldRef>> {
        use sp::DataType as T;
        let flink_only = match t {
            T::Custom(..) | T::Bytes(_) | T::Binary(_) | T::Varbinary(_) | T::Time(Some(_), _) | T::CharacterVarying(_) | T::Dec(_) => true,
            T::Timestamp(Some(p), _) => ![0, 3, 6, 9].contains(p),
            _ => false,
        };
        if !flink_only {
            return Ok(None);
        }
        let text = t.to_string();
        let dialect = rsql_sql::FlinkDialect;
        let ty = datafusion_sql::sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(&text)
            .and_then(|mut p| rsql_sql::types::parse_type(&mut p))
            .map_err(|e| DataFusionError::Plan(format!("type {text}: {e}")))?;
        Ok(Some(Arc::new(Field::new("", ty.to_arrow(), true))))
    }
}

impl ContextProvider for Provider<'_> {
    fn get_type_planner(&self) -> Option<Arc<dyn TypePlanner>> {
        Some(Arc::new(FlinkTypes))
    }

    fn get_table_source(&self, name: TableReference) -> datafusion_common::Result<Arc<dyn TableSource>> {
        let parts: Vec<String> = match &name {
            TableReference::Bare { table } => vec![table.to_string()],
            TableReference::Partial { schema, table } => vec![schema.to_string(), table.to_string()],
            TableReference::Full { catalog, schema, table } => vec![catalog.to_string(), schema.to_string(), table.to_string()],
        };
        if let (TableReference::Bare { table }, Some(w)) = (&name, self.windows.get(name.table())) {
            debug_assert_eq!(table.as_ref(), name.table());
            let Some(entry) = self.catalog.lookup(&w.input) else { return plan_err!("table {} does not exist", w.input) };
            let input = match entry {
                CatalogEntry::Table(t) => t.full_schema(),
                CatalogEntry::View(v) => Arc::new(v.plan.schema().as_arrow().clone()),
            };
            let schema = w.schema(&input).map_err(|e| DataFusionError::Plan(e.to_string()))?;
            return Ok(Arc::new(CatalogTable { path: w.input.clone(), entry: entry.clone(), schema, lookup: false, window: Some(w.clone()) }));
        }
        let Some(path) = self.catalog.qualify_parts(&parts) else {
            return plan_err!("'{name}' is not a valid table name");
        };
        match self.catalog.lookup(&path) {
            Some(entry) => {
                let schema = match entry {
                    CatalogEntry::Table(t) => t.full_schema(),
                    CatalogEntry::View(v) => Arc::new(v.plan.schema().as_arrow().clone()),
                };
                let lookup = self.lookups.contains(&path);
                if lookup && matches!(entry, CatalogEntry::View(_)) {
                    return plan_err!("FOR SYSTEM_TIME AS OF needs a table, and {path} is a view");
                }
                Ok(Arc::new(CatalogTable { path, entry: entry.clone(), schema, lookup, window: None }))
            }
            None => {
                let cands = self
                    .catalog
                    .database(&path.catalog, &path.database)
                    .map(|d| d.objects.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default();
                let hint = match did_you_mean(&path.name, cands.iter().map(|s| s.as_str())) {
                    Some(s) => format!("; did you mean '{s}'?"),
                    None => String::new(),
                };
                Err(DataFusionError::Plan(format!("table {path} does not exist{hint}")))
            }
        }
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.functions.scalar.get(&name.to_ascii_lowercase()).cloned()
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.functions.aggregate.get(&name.to_ascii_lowercase()).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.functions.window.get(&name.to_ascii_lowercase()).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.functions.planners
    }

    fn options(&self) -> &ConfigOptions {
        &self.functions.options
    }

    fn udf_names(&self) -> Vec<String> {
        sorted(self.functions.scalar.keys())
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        sorted(self.functions.aggregate.keys())
    }

    fn udwf_names(&self) -> Vec<String> {
        sorted(self.functions.window.keys())
    }
}

/// Names in a stable order, so suggestions in error messages do not change from run to run.
fn sorted<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = names.cloned().collect();
    v.sort();
    v
}
