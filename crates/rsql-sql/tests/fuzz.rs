//! Property test: no input makes the script parser panic or hang. Random text, random token soup
//! and mutations of a real script (deleted, duplicated and swapped slices, inserted quotes and
//! brackets) must all come back as statements or as an error with a location.

use proptest::prelude::*;

const SEED_SCRIPT: &str = include_str!("../../../sql/demo.sql");

const TOKENS: &[&str] = &[
    "CREATE", "TABLE", "VIEW", "(", ")", ",", ";", "'", "`", "\"", "SELECT", "*", "FROM", "WHERE", "INSERT", "INTO",
    "WITH", "=", "PRIMARY", "KEY", "NOT", "ENFORCED", "ARRAY", "<", ">", ">>", "MAP", "ROW", "INT", "STRING", "DECIMAL",
    "BEGIN", "STATEMENT", "SET", "END", "EXECUTE", "--", "/*", "*/", "\n", "x", "1", "1.5", "${", "}", "METADATA",
    "WATERMARK", "FOR", "AS", "INTERVAL", "JOIN", "ON", "GROUP", "BY", ".", "EXPLAIN", "CHANGELOG_MODE", "LIKE",
];

fn check(s: &str) {
    match rsql_sql::parse_script(s) {
        Ok(_) => {}
        Err(e) => assert!(e.location().is_some(), "error without a location for {s:?}: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_text(s in "\\PC{0,200}") {
        check(&s);
    }

    #[test]
    fn token_soup(idx in proptest::collection::vec(0..TOKENS.len(), 0..60)) {
        let s: Vec<&str> = idx.iter().map(|i| TOKENS[*i]).collect();
        check(&s.join(" "));
    }

    #[test]
    fn mutated_seed(cuts in proptest::collection::vec((0usize..4000, 0usize..4000, 0usize..6), 1..6)) {
        let mut s: Vec<char> = SEED_SCRIPT.chars().collect();
        for (a, b, op) in cuts {
            let n = s.len().max(1);
            let (a, b) = (a % n, b % n);
            let (lo, hi) = (a.min(b), a.max(b));
            match op {
                0 => { s.drain(lo..hi); }
                1 => { let part: Vec<char> = s[lo..hi].to_vec(); s.splice(lo..lo, part); }
                2 => { s.insert(lo, '\''); }
                3 => { s.insert(lo, '('); }
                4 => { s.insert(lo, '`'); }
                _ => { if hi > lo { s.swap(lo, hi - 1); } }
            }
        }
        let text: String = s.into_iter().collect();
        check(&text);
    }
}
