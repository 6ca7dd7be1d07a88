//! Connector options: declared specs, validation with "did you mean" suggestions, value parsing
//! (durations, memory sizes, enums) and masking of secrets in everything a user sees.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::catalog::{OptionValue, TableDef};
use crate::error::{Location, Result, RsqlError};

#[derive(Clone, Debug, PartialEq)]
pub enum OptionKind {
    String,
    Int,
    Bool,
    Duration,
    /// One of the listed values (case-insensitive).
    Enum(&'static [&'static str]),
}

/// One option a connector understands.
#[derive(Clone, Debug)]
pub struct OptionSpec {
    pub key: &'static str,
    pub kind: OptionKind,
    pub required: bool,
}

impl OptionSpec {
    pub const fn required(key: &'static str, kind: OptionKind) -> Self {
        OptionSpec { key, kind, required: true }
    }
    pub const fn optional(key: &'static str, kind: OptionKind) -> Self {
        OptionSpec { key, kind, required: false }
    }
}

/// The options a connector accepts: exact keys, and prefixes (`properties.`, `fields.`) whose
/// keys are passed through.
#[derive(Clone, Debug, Default)]
pub struct OptionSchema {
    pub specs: Vec<OptionSpec>,
    pub prefixes: Vec<&'static str>,
}

impl OptionSchema {
    pub fn new(specs: Vec<OptionSpec>) -> Self {
        OptionSchema { specs, prefixes: Vec::new() }
    }
    pub fn with_prefixes(mut self, prefixes: &[&'static str]) -> Self {
        self.prefixes.extend_from_slice(prefixes);
        self
    }
    pub fn extend(&mut self, specs: impl IntoIterator<Item = OptionSpec>) {
        self.specs.extend(specs)
    }

    /// Checks the options of a table: every required key present, no unknown key, every value
    /// of its kind. `connector` is always accepted.
    pub fn validate(&self, table: &TableDef) -> Result<()> {
        let tname = table.path.name.clone();
        for spec in &self.specs {
            if spec.required && !table.options.contains_key(spec.key) {
                return Err(RsqlError::Options {
                    table: tname,
                    message: format!("missing required option '{}'; add '{}' = '...' to the WITH clause", spec.key, spec.key),
                    location: Some(table.location),
                });
            }
        }
        for (key, value) in &table.options {
            if key == "connector" {
                continue;
            }
            match self.specs.iter().find(|s| s.key == key) {
                Some(spec) => check_value(&tname, key, value, &spec.kind)?,
                None => {
                    if self.prefixes.iter().any(|p| key.starts_with(p)) {
                        continue;
                    }
                    let mut candidates: Vec<&str> = self.specs.iter().map(|s| s.key).collect();
                    candidates.sort();
                    let hint = match did_you_mean(key, candidates.iter().copied()) {
                        Some(s) => format!("; did you mean '{s}'?"),
                        None => format!("; supported options: {}", candidates.join(", ")),
                    };
                    return Err(RsqlError::Options {
                        table: tname,
                        message: format!(
                            "unknown option '{}' for connector '{}'{}",
                            key,
                            table.connector().unwrap_or("?"),
                            hint
                        ),
                        location: Some(value.location),
                    });
                }
            }
        }
        Ok(())
    }
}

fn check_value(table: &str, key: &str, value: &OptionValue, kind: &OptionKind) -> Result<()> {
    let v = value.value.as_str();
    let bad = |expect: String| RsqlError::Options {
        table: table.to_string(),
        message: format!("option '{}' has the value '{}', but {}", key, mask_if_sensitive(key, v), expect),
        location: Some(value.location),
    };
    match kind {
        OptionKind::String => Ok(()),
        OptionKind::Int => v.trim().parse::<i64>().map(|_| ()).map_err(|_| bad("it must be a whole number".into())),
        OptionKind::Bool => parse_bool(v).map(|_| ()).ok_or_else(|| bad("it must be 'true' or 'false'".into())),
        OptionKind::Duration => parse_duration(v).map(|_| ()).ok_or_else(|| bad("it must be a duration such as '500 ms', '10s' or '1 min'".into())),
        OptionKind::Enum(values) => {
            if values.iter().any(|e| e.eq_ignore_ascii_case(v)) {
                Ok(())
            } else {
                Err(bad(format!("it must be one of: {}", values.join(", "))))
            }
        }
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Parses Flink durations: `10s`, `500 ms`, `1 min`, `2h`, `1d`, a bare number is milliseconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let ms = match unit.as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => n,
        "s" | "sec" | "secs" | "second" | "seconds" => n.checked_mul(1000)?,
        "min" | "mins" | "minute" | "minutes" | "m" => n.checked_mul(60_000)?,
        "h" | "hour" | "hours" => n.checked_mul(3_600_000)?,
        "d" | "day" | "days" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Whether an option key holds a secret (its value is masked wherever it is shown).
pub fn is_sensitive(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "password"
        || k.ends_with(".password")
        || k.ends_with("secret")
        || k.ends_with("token")
        || k.ends_with("sasl.jaas.config")
        || k.ends_with("sasl.password")
}

pub fn mask_if_sensitive<'a>(key: &str, value: &'a str) -> &'a str {
    if is_sensitive(key) {
        "******"
    } else {
        value
    }
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(&w, &c.to_ascii_lowercase());
        if best.map(|(bd, _)| d < bd).unwrap_or(true) {
            best = Some((d, c));
        }
    }
    best.filter(|(d, c)| *d <= (c.len().max(w.len()) / 3).max(2)).map(|(_, c)| c)
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Typed access to a table's options, with errors that name the table and option.
pub struct Opts<'a> {
    pub table: &'a TableDef,
}

impl<'a> Opts<'a> {
    pub fn new(table: &'a TableDef) -> Self {
        Opts { table }
    }
    fn err(&self, key: &str, message: String) -> RsqlError {
        RsqlError::Options {
            table: self.table.path.name.clone(),
            message: format!("option '{key}': {message}"),
            location: Some(self.table.options.get(key).map(|v| v.location).unwrap_or(self.table.location)),
        }
    }
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.table.option(key)
    }
    pub fn required(&self, key: &str) -> Result<&'a str> {
        self.get(key).ok_or_else(|| self.err(key, "is required".into()))
    }
    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }
    pub fn int(&self, key: &str, default: i64) -> Result<i64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| self.err(key, format!("'{v}' is not a whole number"))),
        }
    }
    pub fn opt_int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.int(key, 0).map(Some),
        }
    }
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| self.err(key, format!("'{v}' is not a number"))),
        }
    }
    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| self.err(key, format!("'{v}' is not 'true' or 'false'"))),
        }
    }
    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_duration(v).ok_or_else(|| self.err(key, format!("'{v}' is not a duration such as '10s'"))),
        }
    }
    /// Options under a prefix, with the prefix removed (e.g. `properties.`).
    pub fn with_prefix(&self, prefix: &str) -> BTreeMap<String, String> {
        self.table
            .options
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.value.clone())))
            .collect()
    }
    pub fn error(&self, key: &str, message: impl Into<String>) -> RsqlError {
        self.err(key, message.into())
    }
}

/// Location of an option in the script, or of the table when the option is absent.
pub fn option_location(table: &TableDef, key: &str) -> Location {
    table.options.get(key).map(|v| v.location).unwrap_or(table.location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500 ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1 min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("hostnme", ["hostname", "port"]), Some("hostname"));
        assert_eq!(did_you_mean("zzzzzz", ["hostname", "port"]), None);
    }

    #[test]
    fn secrets_are_masked() {
        assert!(is_sensitive("password"));
        assert!(is_sensitive("properties.sasl.jaas.config"));
        assert!(is_sensitive("api-token"));
        assert!(!is_sensitive("hostname"));
    }
}
