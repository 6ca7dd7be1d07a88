//! The kind of change a row stands for, with Flink's byte values (RowKind.java).

use std::fmt;

/// +I insert, -U the old value of an update, +U the new value of an update, -D delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RowKind {
    Insert = 0,
    UpdateBefore = 1,
    UpdateAfter = 2,
    Delete = 3,
}

impl RowKind {
    /// `+I`, `-U`, `+U`, `-D` as Flink prints them.
    pub fn short_string(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    /// Adds a row to the result (+I, +U).
    pub fn is_accumulate(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }

    /// Takes a row away from the result (-U, -D).
    pub fn is_retract(self) -> bool {
        !self.is_accumulate()
    }

    /// The weight of the change: +1 for +I/+U, -1 for -U/-D.
    pub fn weight(self) -> i64 {
        if self.is_accumulate() {
            1
        } else {
            -1
        }
    }

    pub fn from_byte(b: u8) -> Option<RowKind> {
        Some(match b {
            0 => RowKind::Insert,
            1 => RowKind::UpdateBefore,
            2 => RowKind::UpdateAfter,
            3 => RowKind::Delete,
            _ => return None,
        })
    }

    pub fn parse(s: &str) -> Option<RowKind> {
        Some(match s {
            "+I" => RowKind::Insert,
            "-U" => RowKind::UpdateBefore,
            "+U" => RowKind::UpdateAfter,
            "-D" => RowKind::Delete,
            _ => return None,
        })
    }
}

impl fmt::Display for RowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_values_match_flink() {
        for (b, k) in [(0, RowKind::Insert), (1, RowKind::UpdateBefore), (2, RowKind::UpdateAfter), (3, RowKind::Delete)] {
            assert_eq!(k as u8, b);
            assert_eq!(RowKind::from_byte(b), Some(k));
            assert_eq!(RowKind::parse(k.short_string()), Some(k));
        }
        assert_eq!(RowKind::from_byte(4), None);
        assert!(RowKind::UpdateAfter.is_accumulate());
        assert!(RowKind::UpdateBefore.is_retract());
    }
}
