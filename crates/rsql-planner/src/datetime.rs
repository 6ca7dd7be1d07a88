//! Flink's date-time conversion functions, which take Java date-time patterns
//! (`'yyyy-MM-dd HH:mm:ss'`): `DATE_FORMAT`, `TO_TIMESTAMP`, `TO_DATE`, `FROM_UNIXTIME` and
//! `UNIX_TIMESTAMP(string [, pattern])`. They replace DataFusion's functions of the same names,
//! whose patterns are strftime's. The session time zone is UTC. As in Flink, a string that does
//! not parse gives NULL (`UNIX_TIMESTAMP` gives BIGINT's smallest value), and a pattern letter
//! that is not supported is an error naming it.

use std::sync::Arc;

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use datafusion_common::arrow::array::{Array, ArrayRef, AsArray, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion_common::arrow::compute::cast;
use datafusion_common::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, TimeUnit, TimestampMicrosecondType};
use datafusion_common::{exec_err, plan_err, DataFusionError, Result as DfResult, ScalarValue};
use datafusion_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility};

use crate::nested::{scalar_or_array, shown};

/// Flink's default layout of a timestamp string.
const DEFAULT_TIMESTAMP: &str = "yyyy-MM-dd HH:mm:ss";
const EPOCH_DAYS_CE: i32 = 719_163;

/// Registers the functions under their Flink names. `UNIX_TIMESTAMP` is registered with the
/// processing-time functions, see [`unix_timestamp`].
pub fn register(scalar: &mut std::collections::HashMap<String, Arc<ScalarUDF>>) {
    for kind in [Kind::DateFormat, Kind::ToTimestamp, Kind::ToDate, Kind::FromUnixtime] {
        let f = Arc::new(ScalarUDF::from(JavaTime::new(kind, None)));
        scalar.insert(f.name().to_string(), f);
    }
}

/// `UNIX_TIMESTAMP` of any arity: `now` (the processing-time function) without arguments, the
/// parsing function with one or two.
pub fn unix_timestamp(now: Arc<ScalarUDF>) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(JavaTime::new(Kind::UnixTimestamp, Some(now))))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    DateFormat,
    ToTimestamp,
    ToDate,
    FromUnixtime,
    UnixTimestamp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::DateFormat => "date_format",
            Kind::ToTimestamp => "to_timestamp",
            Kind::ToDate => "to_date",
            Kind::FromUnixtime => "from_unixtime",
            Kind::UnixTimestamp => "unix_timestamp",
        }
    }

    fn shown(self) -> String {
        self.name().to_ascii_uppercase()
    }

    fn arity(self) -> (usize, usize) {
        match self {
            Kind::DateFormat => (2, 2),
            Kind::UnixTimestamp => (0, 2),
            _ => (1, 2),
        }
    }

    fn output(self) -> DataType {
        match self {
            Kind::DateFormat | Kind::FromUnixtime => DataType::Utf8,
            // TIMESTAMP(3), held in microseconds as every TIMESTAMP here.
            Kind::ToTimestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::ToDate => DataType::Date32,
            Kind::UnixTimestamp => DataType::Int64,
        }
    }
}

#[derive(Debug)]
struct JavaTime {
    kind: Kind,
    signature: Signature,
    /// `UNIX_TIMESTAMP()`: the processing-time function used without arguments.
    now: Option<Arc<ScalarUDF>>,
}

impl PartialEq for JavaTime {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Eq for JavaTime {}

impl std::hash::Hash for JavaTime {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state)
    }
}

impl JavaTime {
    fn new(kind: Kind, now: Option<Arc<ScalarUDF>>) -> Self {
        // UNIX_TIMESTAMP() reads the clock: never folded into a constant.
        let signature = match now {
            Some(_) => Signature::one_of(vec![TypeSignature::Nullary, TypeSignature::UserDefined], Volatility::Volatile),
            None => Signature::user_defined(Volatility::Immutable),
        };
        JavaTime { kind, signature, now }
    }

    /// The types the arguments are cast to: strings to Utf8, times to microsecond timestamps,
    /// numbers of seconds to BIGINT.
    fn coerce(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        let (lo, hi) = self.kind.arity();
        if args.len() < lo || args.len() > hi {
            let takes = if lo == hi { format!("{lo}") } else { format!("{lo} to {hi}") };
            return plan_err!("{} takes {takes} arguments, not {}", self.kind.shown(), args.len());
        }
        args.iter().enumerate().map(|(i, t)| self.coerce_one(i, t)).collect()
    }

    fn coerce_one(&self, i: usize, t: &DataType) -> DfResult<DataType> {
        let kind = self.kind;
        if i > 0 {
            return match t {
                DataType::Null => Ok(DataType::Utf8),
                t if is_string(t) => Ok(DataType::Utf8),
                t => plan_err!("the pattern of {} must be a string, not {}", kind.shown(), shown(t)),
            };
        }
        match (kind, t) {
            (Kind::DateFormat, DataType::Null | DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64) => {
                Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
            }
            (Kind::FromUnixtime, DataType::Null) => Ok(DataType::Int64),
            (Kind::FromUnixtime, t) if t.is_integer() => Ok(DataType::Int64),
            (Kind::FromUnixtime, t) => plan_err!("{} cannot take {}; {}", kind.shown(), shown(t), kind.expects()),
            (_, DataType::Null) => Ok(DataType::Utf8),
            (_, t) if is_string(t) => Ok(DataType::Utf8),
            (_, t) => plan_err!("{} cannot take {} as its first argument; {}", kind.shown(), shown(t), kind.expects()),
        }
    }
}

impl Kind {
    fn expects(self) -> &'static str {
        match self {
            Kind::DateFormat => "it takes a TIMESTAMP, TIMESTAMP_LTZ, DATE or a string 'yyyy-MM-dd HH:mm:ss'",
            Kind::FromUnixtime => "it takes the seconds since 1970-01-01 00:00:00 UTC as an integer",
            _ => "it takes a string",
        }
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

impl ScalarUDFImpl for JavaTime {
    fn name(&self) -> &str {
        self.kind.name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        self.coerce(args)
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.kind.output())
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        if args.arg_fields.is_empty() && self.now.is_some() {
            return Ok(Arc::new(Field::new(self.name(), DataType::Int64, false)));
        }
        // A constant pattern is checked when the statement is planned.
        if let Some(Some(ScalarValue::Utf8(Some(p)) | ScalarValue::LargeUtf8(Some(p)) | ScalarValue::Utf8View(Some(p)))) =
            args.scalar_arguments.get(1)
        {
            to_strftime(p).map_err(|e| DataFusionError::Plan(format!("{}: {e}", self.kind.shown())))?;
        }
        Ok(Arc::new(Field::new(self.name(), self.kind.output(), true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if args.args.is_empty() {
            return match &self.now {
                Some(now) => now.invoke_with_args(args),
                None => now_missing(self.kind),
            };
        }
        let n = args.number_rows;
        let first = args.args[0].to_array(n)?;
        let patterns: Option<ArrayRef> = match args.args.get(1) {
            Some(p) => Some(cast(&p.to_array(n)?, &DataType::Utf8)?),
            None => None,
        };
        let pattern_at = |i: usize| -> Option<Option<&str>> {
            patterns.as_ref().map(|p| {
                let p = p.as_string::<i32>();
                if p.is_null(i) {
                    None
                } else {
                    Some(p.value(i))
                }
            })
        };
        let mut cache = PatternCache::default();
        let kind = self.kind;
        let out: ArrayRef = match kind {
            Kind::DateFormat => {
                let micros = if is_string(first.data_type()) {
                    let s = cast(&first, &DataType::Utf8)?;
                    let s = s.as_string::<i32>();
                    let default = cache.compile(DEFAULT_TIMESTAMP, kind)?;
                    (0..s.len())
                        .map(|i| if s.is_null(i) { None } else { parse_items(&default, s.value(i), true).map(|t| t.and_utc().timestamp_micros()) })
                        .collect::<TimestampMicrosecondArray>()
                } else {
                    cast(&first, &DataType::Timestamp(TimeUnit::Microsecond, None))?.as_primitive::<TimestampMicrosecondType>().clone()
                };
                let mut out = Vec::with_capacity(micros.len());
                for i in 0..micros.len() {
                    let v = match (micros.is_null(i), pattern_at(i).flatten()) {
                        (false, Some(p)) => {
                            let items = cache.compile(p, kind)?;
                            DateTime::from_timestamp_micros(micros.value(i)).map(|t| t.naive_utc().format_with_items(items.iter()).to_string())
                        }
                        _ => None,
                    };
                    out.push(v);
                }
                Arc::new(StringArray::from(out))
            }
            Kind::FromUnixtime => {
                let secs = cast(&first, &DataType::Int64)?;
                let secs = secs.as_primitive::<Int64Type>();
                let mut out = Vec::with_capacity(secs.len());
                for i in 0..secs.len() {
                    let p = pattern_at(i).unwrap_or(Some(DEFAULT_TIMESTAMP));
                    let v = match (secs.is_null(i), p) {
                        (false, Some(p)) => {
                            let items = cache.compile(p, kind)?;
                            DateTime::from_timestamp(secs.value(i), 0).map(|t| t.naive_utc().format_with_items(items.iter()).to_string())
                        }
                        _ => None,
                    };
                    out.push(v);
                }
                Arc::new(StringArray::from(out))
            }
            Kind::ToTimestamp | Kind::ToDate | Kind::UnixTimestamp => {
                let s = cast(&first, &DataType::Utf8)?;
                let s = s.as_string::<i32>();
                // Per row: None for a NULL argument, Some(None) for a string that does not parse.
                let mut parsed: Vec<Option<Option<NaiveDateTime>>> = Vec::with_capacity(s.len());
                for i in 0..s.len() {
                    let p = pattern_at(i);
                    if s.is_null(i) || matches!(p, Some(None)) {
                        parsed.push(None);
                        continue;
                    }
                    let text = s.value(i);
                    parsed.push(Some(match (kind, p.flatten()) {
                        (Kind::ToTimestamp, None) => parse_default_timestamp(text),
                        (Kind::ToDate, None) => parse_default_date(text),
                        // SimpleDateFormat: the text may go on after the pattern.
                        (Kind::UnixTimestamp, p) => parse_items(&cache.compile(p.unwrap_or(DEFAULT_TIMESTAMP), kind)?, text, true),
                        (_, Some(p)) => parse_items(&cache.compile(p, kind)?, text, false),
                        (Kind::DateFormat | Kind::FromUnixtime, None) => None,
                    }));
                }
                match kind {
                    Kind::ToTimestamp => Arc::new(
                        parsed
                            .iter()
                            .map(|t| t.flatten().map(|t| t.and_utc().timestamp_millis() * 1000))
                            .collect::<TimestampMicrosecondArray>(),
                    ),
                    Kind::ToDate => Arc::new(
                        parsed
                            .iter()
                            .map(|t| t.flatten().map(|t| t.date().num_days_from_ce() - EPOCH_DAYS_CE))
                            .collect::<Date32Array>(),
                    ),
                    // A string that does not parse is BIGINT's smallest value, as in Flink.
                    _ => Arc::new(
                        parsed
                            .iter()
                            .map(|t| t.map(|t| t.map(|t| t.and_utc().timestamp()).unwrap_or(i64::MIN)))
                            .collect::<Int64Array>(),
                    ),
                }
            }
        };
        scalar_or_array(out, &args)
    }
}

fn now_missing(kind: Kind) -> DfResult<ColumnarValue> {
    exec_err!("{} needs an argument", kind.shown())
}

/// TO_DATE's layout without a pattern: `yyyy-MM-dd`, optionally followed by a time after a
/// space (`2024-01-02 03:04:05` is 2024-01-02, as in Flink).
fn parse_default_date(text: &str) -> Option<NaiveDateTime> {
    let (d, rest) = NaiveDate::parse_and_remainder(text, "%Y-%m-%d").ok()?;
    (rest.is_empty() || rest.starts_with(' ')).then(|| d.and_time(NaiveTime::MIN))
}

/// TO_TIMESTAMP's layouts without a pattern: `yyyy-MM-dd HH:mm:ss[.fraction]`, `yyyy-MM-dd
/// HH:mm` and `yyyy-MM-dd` (midnight); the fraction is cut to milliseconds by the caller.
/// Surrounding spaces make it NULL, as in Flink.
fn parse_default_timestamp(t: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M"))
        .ok()
        .or_else(|| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().map(|d| d.and_time(NaiveTime::MIN)))
}

/// Parses `text` with compiled pattern items; fields the pattern lacks take Java's defaults
/// (1970, January, the 1st, midnight).
fn parse_items(items: &[Item<'static>], text: &str, trailing: bool) -> Option<NaiveDateTime> {
    let mut p = Parsed::new();
    if trailing {
        chrono::format::parse_and_remainder(&mut p, text, items.iter()).ok()?;
    } else {
        chrono::format::parse(&mut p, text, items.iter()).ok()?;
    }
    if p.year().is_none() && p.year_div_100().is_none() && p.year_mod_100().is_none() {
        p.set_year(1970).ok()?;
    }
    if p.month().is_none() && p.ordinal().is_none() {
        p.set_month(1).ok()?;
    }
    if p.day().is_none() && p.ordinal().is_none() {
        p.set_day(1).ok()?;
    }
    if p.hour_mod_12().is_none() {
        p.set_hour(0).ok()?;
    } else if p.hour_div_12().is_none() {
        // 'hh' without 'a': morning, as SimpleDateFormat reads it.
        p.set_ampm(false).ok()?;
    }
    if p.minute().is_none() {
        p.set_minute(0).ok()?;
    }
    let date = p.to_naive_date().ok()?;
    let time = p.to_naive_time().ok()?;
    Some(date.and_time(time))
}

/// Compiled patterns of one batch (a pattern is nearly always one constant).
#[derive(Default)]
struct PatternCache {
    last: Option<(String, Arc<Vec<Item<'static>>>)>,
}

impl PatternCache {
    fn compile(&mut self, pattern: &str, kind: Kind) -> DfResult<Arc<Vec<Item<'static>>>> {
        if let Some((p, items)) = &self.last {
            if p == pattern {
                return Ok(items.clone());
            }
        }
        let fmt = to_strftime(pattern).map_err(|e| DataFusionError::Execution(format!("{}: {e}", kind.shown())))?;
        let items: Vec<Item<'static>> = StrftimeItems::new(&fmt)
            .parse_to_owned()
            .map_err(|e| DataFusionError::Execution(format!("{}: pattern '{pattern}': {e}", kind.shown())))?;
        let items = Arc::new(items);
        self.last = Some((pattern.to_string(), items.clone()));
        Ok(items)
    }
}

/// Translates a Java date-time pattern (SimpleDateFormat / DateTimeFormatter letters) to a
/// strftime pattern. Letters outside the supported set are an error naming them.
pub fn to_strftime(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // 'literal text'; '' is a quote.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(format!("pattern '{pattern}': a quote opened at position {} is not closed", i + 1)),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        out.push('\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some('%') => {
                        out.push_str("%%");
                        j += 1;
                    }
                    Some(ch) => {
                        out.push(*ch);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            if c == '%' {
                out.push_str("%%");
            } else {
                out.push(c);
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        let spec = match (c, n) {
            ('y' | 'u', 2) => "%y",
            ('y' | 'u', _) => "%Y",
            ('M' | 'L', 1) => "%-m",
            ('M' | 'L', 2) => "%m",
            ('M' | 'L', 3) => "%b",
            ('M' | 'L', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', 1) => "%-j",
            ('D', _) => "%j",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', 9) => "%9f",
            ('S', _) => return Err(format!("pattern '{pattern}': fractions of a second are supported with 3, 6 or 9 'S' letters, not {n}")),
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('a', _) => "%p",
            ('Z', _) => "%z",
            ('X' | 'x', 1 | 2) => "%z",
            ('X' | 'x', _) => "%:z",
            _ => {
                return Err(format!(
                    "pattern '{pattern}': the letter '{c}' is not supported; supported are y M d D H h m s S E a Z X, and text in single quotes"
                ))
            }
        };
        out.push_str(spec);
        i += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(p: &str) -> Vec<Item<'static>> {
        StrftimeItems::new(&to_strftime(p).unwrap()).parse_to_owned().unwrap()
    }

    fn fmt(p: &str, t: &str) -> String {
        let t = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        t.format_with_items(items(p).iter()).to_string()
    }

    fn parse(p: &str, s: &str, trailing: bool) -> Option<String> {
        parse_items(&items(p), s, trailing).map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
    }

    // Expected values are Flink 2.3's for the same calls (batch mode, UTC session).
    #[test]
    fn formats_as_flink() {
        assert_eq!(fmt("yyyy-MM-dd HH:mm:ss", "2024-01-02 03:04:05.123"), "2024-01-02 03:04:05");
        assert_eq!(fmt("yyyyMMdd HH:mm:ss.SSS", "2024-01-02 03:04:05.123"), "20240102 03:04:05.123");
        assert_eq!(fmt("EEE MMM d hh:mm a 'at' yy D", "2024-01-02 13:04:05"), "Tue Jan 2 01:04 PM at 24 2");
        assert_eq!(fmt("'it''s' 100% yyyy", "2024-01-02 13:04:05"), "it's 100% 2024");
    }

    #[test]
    fn parses_as_flink() {
        assert_eq!(parse("yyyy/MM/dd HH:mm", "2024/01/02 03:04", false).as_deref(), Some("2024-01-02 03:04:00.000"));
        assert_eq!(parse("yyyyMMdd", "20240102", false).as_deref(), Some("2024-01-02 00:00:00.000"));
        assert_eq!(parse("yyyy-MM-dd HH:mm:ss", "2024-01-02 03:04:05.999", true).as_deref(), Some("2024-01-02 03:04:05.000"));
        assert_eq!(parse("yyyy-MM-dd HH:mm:ss", "2024-01-02 03:04:05.999", false), None);
        assert_eq!(parse("yyyy-MM-dd HH:mm:ss", "2024-01-02", true), None);
        assert_eq!(parse("yyyy-MM-dd HH:mm:ss", "garbage", true), None);
        assert_eq!(parse_default_timestamp("2024-01-02").map(|t| t.to_string()).as_deref(), Some("2024-01-02 00:00:00"));
        assert_eq!(parse_default_timestamp("2024-01-02T03:04:05"), None);
        assert_eq!(parse_default_timestamp(" 2024-01-02 03:04:05 "), None);
        assert_eq!(parse_default_date("2024-01-02 03:04:05").map(|t| t.to_string()).as_deref(), Some("2024-01-02 00:00:00"));
        assert_eq!(parse_default_date("garbage"), None);
        assert_eq!(
            parse_default_timestamp("2024-01-02 03:04:05.123456").map(|t| t.and_utc().timestamp_millis()),
            Some(1_704_164_645_123)
        );
    }

    #[test]
    fn refuses_unknown_letters_and_open_quotes() {
        assert!(to_strftime("yyyy-QQ").unwrap_err().contains("letter 'Q'"));
        assert!(to_strftime("yyyy 'open").unwrap_err().contains("not closed"));
        assert!(to_strftime("ss.SS").unwrap_err().contains("3, 6 or 9"));
    }
}
