//! `${name}` and `${name:-default}` placeholders in scripts, filled from `-D name=value` and the
//! environment before parsing. An undefined placeholder without a default is an error that names
//! where it is.

use std::collections::BTreeMap;

use rsql_common::{Location, Result, RsqlError};

pub fn substitute(text: &str, defines: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut line = 1u64;
    let mut col = 1u64;
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        let (before, after) = rest.split_at(pos);
        for ch in before.chars() {
            if ch == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        out.push_str(before);
        let Some(end) = after.find('}') else {
            return Err(RsqlError::parse("unterminated placeholder '${'; close it with '}'", Some(Location::new(line, col))));
        };
        let inner = &after[2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (inner.trim(), None),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !valid {
            return Err(RsqlError::parse(format!("'${{{inner}}}' is not a valid placeholder; use ${{NAME}} or ${{NAME:-default}}"), Some(Location::new(line, col))));
        }
        let value = defines.get(name).cloned().or_else(|| std::env::var(name).ok()).or_else(|| default.map(|d| d.to_string()));
        match value {
            Some(v) => out.push_str(&v),
            None => {
                return Err(RsqlError::parse(
                    format!("placeholder '${{{name}}}' is not defined; pass -D {name}=VALUE, set the environment variable {name}, or write ${{{name}:-default}}"),
                    Some(Location::new(line, col)),
                ))
            }
        }
        let consumed = &after[..=end];
        for ch in consumed.chars() {
            if ch == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_reports() {
        let mut d = BTreeMap::new();
        d.insert("HOST".to_string(), "127.0.0.1".to_string());
        assert_eq!(substitute("h=${HOST} p=${PORT:-3306}", &d).unwrap(), "h=127.0.0.1 p=3306");
        let e = substitute("a\n  ${RSQL_SURELY_UNDEFINED_X}", &d).unwrap_err();
        assert_eq!(e.location(), Some(Location::new(2, 3)));
        assert!(substitute("${", &d).is_err());
        assert_eq!(substitute("no placeholders", &d).unwrap(), "no placeholders");
    }
}
