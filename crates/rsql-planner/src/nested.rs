//! Flink's ARRAY, MAP and ROW values in queries: the value constructors (`ARRAY[...]`,
//! `MAP[k, v, ...]`, `ROW(...)` and `(a, b)`), value access (`arr[i]`, `m[key]`, `r.f`), and the
//! collection functions rsql runs (`CARDINALITY`, `ELEMENT`, `ARRAY_CONTAINS`, `MAP_KEYS`,
//! `MAP_VALUES`), each with Flink's semantics where DataFusion's differ. Flink's other nested
//! functions are named in a planning error instead of falling through to a DataFusion function
//! of the same name that behaves differently.

use std::sync::Arc;

use datafusion_common::arrow::array::{
    make_comparator, Array, ArrayRef, AsArray, BooleanArray, Int32Array, ListArray, MapArray, StructArray, UInt32Array,
};
use datafusion_common::arrow::compute::{cast, take, SortOptions};
use datafusion_common::arrow::error::ArrowError;
use datafusion_common::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion_common::{exec_err, plan_err, DFSchema, Result as DfResult, ScalarValue};
use datafusion_expr::planner::{ExprPlanner, PlannerResult, RawFieldAccessExpr};
use datafusion_expr::{
    lit, when, ColumnarValue, Expr, ExprSchemable, GetFieldAccess, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use rsql_common::types::FlinkType;

/// The collection functions rsql runs, as Flink names them.
pub const SUPPORTED: [&str; 5] = ["CARDINALITY", "ELEMENT", "ARRAY_CONTAINS", "MAP_KEYS", "MAP_VALUES"];

/// Flink's collection and value functions that rsql does not run yet.
const UNSUPPORTED: [&str; 20] = [
    "ARRAY_APPEND",
    "ARRAY_CONCAT",
    "ARRAY_DISTINCT",
    "ARRAY_EXCEPT",
    "ARRAY_INTERSECT",
    "ARRAY_JOIN",
    "ARRAY_MAX",
    "ARRAY_MIN",
    "ARRAY_POSITION",
    "ARRAY_PREPEND",
    "ARRAY_REMOVE",
    "ARRAY_REVERSE",
    "ARRAY_SLICE",
    "ARRAY_SORT",
    "ARRAY_UNION",
    "MAP_ENTRIES",
    "MAP_FROM_ARRAYS",
    "MAP_UNION",
    "SPLIT",
    "IMPLODE",
];

/// The message for a call of a Flink nested function rsql does not run, from DataFusion's
/// "Invalid function 'name'" error; None for any other error.
pub fn unsupported_function_message(message: &str) -> Option<String> {
    let rest = message.strip_prefix("Invalid function '")?;
    let name = rest.split('\'').next()?.to_ascii_uppercase();
    if !UNSUPPORTED.contains(&name.as_str()) {
        return None;
    }
    Some(format!(
        "the collection function {name} is not supported yet; supported are {} and the constructors ARRAY[...], MAP[...], ROW(...)",
        SUPPORTED.join(", ")
    ))
}

/// Registers the nested value functions under their Flink names (lower case, as the planner
/// looks them up). `row` replaces DataFusion's `struct` alias so fields are named as Flink's.
pub fn register(scalar: &mut std::collections::HashMap<String, Arc<ScalarUDF>>) {
    let own: [Arc<ScalarUDF>; 4] = [
        Arc::new(ScalarUDF::from(Cardinality::new())),
        Arc::new(ScalarUDF::from(Element::new())),
        Arc::new(ScalarUDF::from(ArrayContains::new())),
        row_udf(),
    ];
    for f in own {
        scalar.insert(f.name().to_string(), f);
    }
    scalar.insert("map_keys".into(), datafusion_functions_nested::map_keys::map_keys_udf());
    scalar.insert("map_values".into(), datafusion_functions_nested::map_values::map_values_udf());
}

fn row_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(RowConstructor::new()))
}

/// Plans the nested value syntax: constructors, subscripts and field access.
#[derive(Debug, Default)]
pub struct NestedPlanner;

impl ExprPlanner for NestedPlanner {
    fn plan_array_literal(&self, exprs: Vec<Expr>, _schema: &DFSchema) -> DfResult<PlannerResult<Vec<Expr>>> {
        if exprs.is_empty() {
            return plan_err!("ARRAY[] needs at least one element, as in Flink");
        }
        Ok(PlannerResult::Planned(datafusion_functions_nested::expr_fn::make_array(int_literals(exprs))))
    }

    fn plan_make_map(&self, args: Vec<Expr>) -> DfResult<PlannerResult<Vec<Expr>>> {
        if args.is_empty() || !args.len().is_multiple_of(2) {
            return plan_err!("MAP[...] needs pairs of key and value, and has {} values", args.len());
        }
        let args = int_literals(args);
        let mut keys: Vec<Expr> = Vec::with_capacity(args.len() / 2);
        let mut values = Vec::with_capacity(args.len() / 2);
        let mut args = args.into_iter();
        while let (Some(k), Some(v)) = (args.next(), args.next()) {
            // Flink keeps the last value of a key given twice; DataFusion's map refuses
            // duplicates, so a constant key given again replaces its value in place.
            if matches!(k, Expr::Literal(..)) {
                if let Some(at) = keys.iter().position(|e| *e == k) {
                    values[at] = v;
                    continue;
                }
            }
            keys.push(k);
            values.push(v);
        }
        let keys = datafusion_functions_nested::expr_fn::make_array(keys);
        let values = datafusion_functions_nested::expr_fn::make_array(values);
        Ok(PlannerResult::Planned(datafusion_functions_nested::map::map_udf().call(vec![keys, values])))
    }

    fn plan_struct_literal(&self, args: Vec<Expr>, is_named_struct: bool) -> DfResult<PlannerResult<Vec<Expr>>> {
        if is_named_struct {
            return Ok(PlannerResult::Original(args));
        }
        Ok(PlannerResult::Planned(row_udf().call(int_literals(args))))
    }

    fn plan_field_access(&self, expr: RawFieldAccessExpr, schema: &DFSchema) -> DfResult<PlannerResult<RawFieldAccessExpr>> {
        let RawFieldAccessExpr { expr, field_access } = expr;
        let ty = expr.get_type(schema)?;
        match field_access {
            GetFieldAccess::NamedStructField { name } => match &ty {
                DataType::Map(..) => map_value(expr, lit(name), &ty, schema),
                DataType::Struct(fields) => {
                    let n = name.try_as_str().flatten().unwrap_or_default().to_string();
                    if fields.find(&n).is_none() {
                        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                        return plan_err!("the ROW has no field '{n}'; its fields are {}", names.join(", "));
                    }
                    Ok(PlannerResult::Planned(datafusion_functions::expr_fn::get_field(expr, n)))
                }
                other => plan_err!("'{name}' is read from a ROW or MAP, and this value is {}", shown(other)),
            },
            GetFieldAccess::ListIndex { key } => match &ty {
                DataType::Map(..) => map_value(expr, *key, &ty, schema),
                DataType::List(_) => {
                    let key_ty = key.get_type(schema)?;
                    if !key_ty.is_integer() && key_ty != DataType::Null {
                        return plan_err!("an ARRAY index must be an integer, not {}", shown(&key_ty));
                    }
                    // Flink: 1-based; an index out of range (0, negative, past the end) is NULL.
                    // DataFusion counts negative indexes from the end, so those are kept away.
                    let index = *key;
                    let element = datafusion_functions_nested::expr_fn::array_element(expr, index.clone());
                    Ok(PlannerResult::Planned(when(index.gt_eq(lit(1i64)), element).end()?))
                }
                other => plan_err!("[...] reads an element of an ARRAY or a value of a MAP, and this value is {}", shown(other)),
            },
            GetFieldAccess::ListRange { .. } => plan_err!("array slices arr[a:b] are not supported; Flink has no such syntax"),
        }
    }
}

/// Integer literals that fit an INT become INT literals, as Flink types them (DataFusion types
/// every integer literal BIGINT), so `ARRAY[1, 2]` is an `ARRAY<INT>` as in Flink.
fn int_literals(exprs: Vec<Expr>) -> Vec<Expr> {
    exprs
        .into_iter()
        .map(|e| match e {
            Expr::Literal(ScalarValue::Int64(Some(v)), m) if i32::try_from(v).is_ok() => Expr::Literal(ScalarValue::Int32(Some(v as i32)), m),
            other => other,
        })
        .collect()
}

/// `m[key]`: the value under `key`, NULL when the key is absent.
fn map_value(map: Expr, key: Expr, map_ty: &DataType, schema: &DFSchema) -> DfResult<PlannerResult<RawFieldAccessExpr>> {
    let DataType::Map(entries, _) = map_ty else { return plan_err!("not a MAP") };
    let DataType::Struct(kv) = entries.data_type() else { return plan_err!("a MAP without key and value") };
    let key_ty = kv[0].data_type().clone();
    let given = key.get_type(schema)?;
    let key = if given == key_ty {
        key
    } else {
        let ok = given == DataType::Null
            || matches!((FlinkType::from_arrow(&given), FlinkType::from_arrow(&key_ty)), (Some(a), Some(b)) if a.can_assign_to(&b));
        if !ok {
            return plan_err!("a MAP with {} keys is read with a key of type {}", shown(&key_ty), shown(&given));
        }
        key.cast_to(&key_ty, schema)?
    };
    let values = datafusion_functions_nested::expr_fn::map_extract(map, key);
    Ok(PlannerResult::Planned(datafusion_functions_nested::expr_fn::array_element(values, lit(1i64))))
}

/// A type as Flink names it, or as Arrow does when Flink has no name for it.
pub(crate) fn shown(dt: &DataType) -> String {
    FlinkType::from_arrow(dt).map(|t| t.to_string()).unwrap_or_else(|| dt.to_string())
}

/// The list or map array of a collection argument, with its row count.
fn collection_arg(name: &str, args: &ScalarFunctionArgs, i: usize) -> DfResult<ArrayRef> {
    let a = args.args[i].to_array(args.number_rows)?;
    match a.data_type() {
        DataType::List(_) | DataType::Map(..) | DataType::Null => Ok(a),
        other => exec_err!("{name} needs an ARRAY or MAP, not {}", shown(other)),
    }
}

/// The (start, end) of each row's elements in a list or map array; None for a NULL row.
fn row_ranges(a: &dyn Array) -> Vec<Option<(usize, usize)>> {
    let offsets: Vec<usize> = match a.data_type() {
        DataType::List(_) => a.as_list::<i32>().value_offsets().iter().map(|o| *o as usize).collect(),
        DataType::Map(..) => a.as_map().value_offsets().iter().map(|o| *o as usize).collect(),
        _ => return vec![None; a.len()],
    };
    (0..a.len()).map(|i| if a.is_null(i) { None } else { Some((offsets[i], offsets[i + 1])) }).collect()
}

pub(crate) fn scalar_or_array(out: ArrayRef, args: &ScalarFunctionArgs) -> DfResult<ColumnarValue> {
    if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) && out.len() == 1 {
        return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
    }
    Ok(ColumnarValue::Array(out))
}

/// `CARDINALITY(array | map)`: the number of elements or entries, as an INT (Flink's type; only
/// the outer level counts, unlike DataFusion's `cardinality`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Cardinality {
    signature: Signature,
}

impl Cardinality {
    fn new() -> Self {
        Cardinality { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Cardinality {
    fn name(&self) -> &str {
        "cardinality"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match args.first() {
            Some(DataType::List(_) | DataType::Map(..) | DataType::Null) => Ok(DataType::Int32),
            Some(other) => plan_err!("CARDINALITY needs an ARRAY or MAP, not {}", shown(other)),
            None => plan_err!("CARDINALITY takes one argument"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let a = collection_arg("CARDINALITY", &args, 0)?;
        let out: Int32Array = row_ranges(a.as_ref()).into_iter().map(|r| r.map(|(s, e)| (e - s) as i32)).collect();
        scalar_or_array(Arc::new(out), &args)
    }
}

/// `ELEMENT(array)`: the sole element of a one-element array, NULL for an empty one; an array
/// with more elements fails the job, as Flink's does.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Element {
    signature: Signature,
}

impl Element {
    fn new() -> Self {
        Element { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for Element {
    fn name(&self) -> &str {
        "element"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match args.first() {
            Some(DataType::List(f)) => Ok(f.data_type().clone()),
            Some(DataType::Null) => Ok(DataType::Null),
            Some(other) => plan_err!("ELEMENT needs an ARRAY, not {}", shown(other)),
            None => plan_err!("ELEMENT takes one argument"),
        }
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let dt = self.return_type(&args.arg_fields.iter().map(|f| f.data_type().clone()).collect::<Vec<_>>())?;
        Ok(Arc::new(Field::new(self.name(), dt, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let DataType::List(_) = a.data_type() else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Null));
        };
        let mut idx: Vec<Option<u32>> = Vec::with_capacity(a.len());
        for (row, r) in row_ranges(a.as_ref()).into_iter().enumerate() {
            idx.push(match r {
                Some((s, e)) if e - s == 1 => Some(s as u32),
                Some((s, e)) if e - s > 1 => {
                    return exec_err!("ELEMENT needs an array of at most one element, and row {row} has an array of {}", e - s)
                }
                _ => None,
            });
        }
        let out = take(a.as_list::<i32>().values().as_ref(), &UInt32Array::from(idx), None)?;
        scalar_or_array(out, &args)
    }
}

/// `ARRAY_CONTAINS(array, element)`: whether the array holds the element; a NULL element is
/// found when the array holds a NULL (Flink's rule; DataFusion's `array_has` gives NULL). A NULL
/// array gives NULL. The element is cast to the array's element type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayContains {
    signature: Signature,
}

impl ArrayContains {
    fn new() -> Self {
        ArrayContains { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for ArrayContains {
    fn name(&self) -> &str {
        "array_contains"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        let [array, element] = args else { return plan_err!("ARRAY_CONTAINS takes two arguments, an array and an element") };
        let DataType::List(f) = array else { return plan_err!("ARRAY_CONTAINS needs an ARRAY first, not {}", shown(array)) };
        let want = f.data_type();
        if element == want || *element == DataType::Null {
            return Ok(vec![array.clone(), want.clone()]);
        }
        match (FlinkType::from_arrow(element), FlinkType::from_arrow(want)) {
            (Some(a), Some(b)) if a.can_assign_to(&b) => Ok(vec![array.clone(), want.clone()]),
            _ => plan_err!("ARRAY_CONTAINS looks for a {} in an array of {}; add a CAST", shown(element), shown(want)),
        }
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let needle = args.args[1].to_array(args.number_rows)?;
        let DataType::List(_) = a.data_type() else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
        };
        let values = a.as_list::<i32>().values().clone();
        let cmp = if needle.data_type() == values.data_type() {
            Some(make_comparator(values.as_ref(), needle.as_ref(), SortOptions::default())?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(a.len());
        for (row, r) in row_ranges(a.as_ref()).into_iter().enumerate() {
            out.push(r.map(|(s, e)| {
                if needle.is_null(row) {
                    (s..e).any(|k| values.is_null(k))
                } else {
                    match &cmp {
                        Some(c) => (s..e).any(|k| !values.is_null(k) && c(k, row).is_eq()),
                        None => false,
                    }
                }
            }));
        }
        scalar_or_array(Arc::new(BooleanArray::from(out)), &args)
    }
}

/// `ROW(a, b, ...)` and `(a, b, ...)`: a ROW whose fields are named `EXPR$0`, `EXPR$1`, ... as
/// Flink names them.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RowConstructor {
    signature: Signature,
}

impl RowConstructor {
    fn new() -> Self {
        RowConstructor { signature: Signature::variadic_any(Volatility::Immutable) }
    }

    fn fields(arg_fields: &[FieldRef]) -> Fields {
        arg_fields.iter().enumerate().map(|(i, f)| Field::new(format!("EXPR${i}"), f.data_type().clone(), true)).collect()
    }
}

impl ScalarUDFImpl for RowConstructor {
    fn name(&self) -> &str {
        "row"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        plan_err!("ROW's type comes from its arguments")
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        if args.arg_fields.is_empty() {
            return plan_err!("ROW() needs at least one field");
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Struct(Self::fields(args.arg_fields)), false)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let fields = Self::fields(&args.arg_fields);
        let columns = args.args.iter().map(|a| a.to_array(args.number_rows)).collect::<DfResult<Vec<_>>>()?;
        let out = StructArray::try_new(fields, columns, None)?;
        scalar_or_array(Arc::new(out), &args)
    }
}

/// Whether a value of type `dt` is cast by [`assign`] rather than by Arrow's CAST.
pub fn is_nested(dt: &DataType) -> bool {
    matches!(dt, DataType::List(_) | DataType::Map(..) | DataType::Struct(_))
}

/// `value` as a value of the nested type `to`, for writing it into a column of that type: ROW
/// fields are matched by position, as Flink assigns them (Arrow's CAST matches them by name, and
/// `ROW(1, 'x')` has the fields `EXPR$0`, `EXPR$1`), element, key and value types are cast.
pub fn assign(value: Expr, to: &DataType) -> Expr {
    Arc::new(ScalarUDF::from(AssignNested { target: to.clone(), signature: Signature::any(1, Volatility::Immutable) })).call(vec![value])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct AssignNested {
    target: DataType,
    signature: Signature,
}

impl ScalarUDFImpl for AssignNested {
    fn name(&self) -> &str {
        "cast"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.target.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let out = cast_by_position(&a, &self.target)?;
        scalar_or_array(out, &args)
    }
}

/// Casts nested arrays with ROW fields matched by position; other types with Arrow's cast.
pub fn cast_by_position(arr: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if arr.data_type() == to {
        return Ok(arr.clone());
    }
    match (arr.data_type(), to) {
        (DataType::Struct(from), DataType::Struct(fields)) => {
            if from.len() != fields.len() {
                return Err(ArrowError::CastError(format!("a ROW of {} fields cannot be written as a ROW of {}", from.len(), fields.len())));
            }
            let s = arr.as_struct();
            let columns = s.columns().iter().zip(fields.iter()).map(|(c, f)| cast_by_position(c, f.data_type())).collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(fields.clone(), columns, s.nulls().cloned())?))
        }
        (DataType::List(_), DataType::List(field)) => {
            let l = arr.as_list::<i32>();
            let values = cast_by_position(l.values(), field.data_type())?;
            Ok(Arc::new(ListArray::try_new(field.clone(), l.offsets().clone(), values, l.nulls().cloned())?))
        }
        (DataType::Map(..), DataType::Map(field, sorted)) => {
            let m = arr.as_map();
            let entries: ArrayRef = Arc::new(m.entries().clone());
            let entries = cast_by_position(&entries, field.data_type())?;
            Ok(Arc::new(MapArray::try_new(field.clone(), m.offsets().clone(), entries.as_struct().clone(), m.nulls().cloned(), *sorted)?))
        }
        _ => cast(arr.as_ref(), to),
    }
}
