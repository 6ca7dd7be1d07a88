//! Text conventions the formats share: Java's `Float.toString`/`Double.toString` and
//! `BigDecimal.toString` (what Flink's Jackson writes for FLOAT, DOUBLE and DECIMAL), JSON string
//! escaping as Jackson does it, base64, and Flink's SQL / ISO-8601 date-time text in both
//! directions.

use std::fmt::Write as _;

use rsql_common::builder::days_from_civil;

/// Java's `Float.toString` of the shortest decimal that reads back as the same `f32`:
/// `10.0`, `0.1`, `1.0E7`, `1.0E-4`, `NaN`, `Infinity`.
pub fn java_float_to_string(v: f32) -> String {
    if !v.is_finite() || v == 0.0 {
        return special(v as f64);
    }
    java_layout(&format!("{v:e}"))
}

/// Java's `Double.toString` of the shortest decimal that reads back as the same `f64`.
pub fn java_double_to_string(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return special(v);
    }
    java_layout(&format!("{v:e}"))
}

fn special(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else if v.is_sign_negative() {
        "-0.0".into()
    } else {
        "0.0".into()
    }
}

/// Lays out Rust's `{:e}` text (`-1.2345e-5`) the way Java does.
fn java_layout(sci: &str) -> String {
    let (neg, rest) = match sci.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, sci),
    };
    let (mant, exp) = rest.split_once('e').unwrap_or((rest, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if (-3..7).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        if digits.len() > 1 {
            out.push_str(&digits[1..]);
        } else {
            out.push('0');
        }
        let _ = write!(out, "E{exp}");
    }
    out
}

/// `BigDecimal.toString` of an unscaled value at `scale`: plain unless the adjusted exponent is
/// below -6 (`1E-7`), as Jackson writes decimals by default.
pub fn big_decimal_to_string(unscaled: i128, scale: i8) -> String {
    let neg = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as i64;
    let adjusted = -scale + (digits.len() as i64 - 1);
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
    } else if scale > 0 && adjusted >= -6 {
        plain_into(&mut out, &digits, scale as usize);
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('E');
        if adjusted >= 0 {
            out.push('+');
        }
        let _ = write!(out, "{adjusted}");
    }
    out
}

/// `BigDecimal.toPlainString`.
pub fn big_decimal_to_plain(unscaled: i128, scale: i8) -> String {
    let neg = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + 4);
    if neg {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (-(scale as i64)) as usize));
    } else {
        plain_into(&mut out, &digits, scale as usize);
    }
    out
}

fn plain_into(out: &mut String, digits: &str, scale: usize) {
    if digits.len() > scale {
        out.push_str(&digits[..digits.len() - scale]);
        out.push('.');
        out.push_str(&digits[digits.len() - scale..]);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(digits);
    }
}

/// Parses decimal text (`-12.5`, `1.5E+3`, `.5`) into an unscaled value at `scale`, rounding half
/// up. `Err(())` when the text is not a number; `Ok(None)` when it does not fit `precision`
/// (Flink reads such a value as NULL).
#[allow(clippy::result_unit_err)]
pub fn parse_decimal_text(s: &str, precision: u8, scale: i8) -> Result<Option<i128>, ()> {
    let s = s.trim().as_bytes();
    let mut i = 0;
    let neg = match s.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut digits: Vec<u8> = Vec::with_capacity(s.len());
    let mut frac_len: i64 = 0;
    let mut seen_point = false;
    let mut any = false;
    while i < s.len() {
        match s[i] {
            b'0'..=b'9' => {
                any = true;
                digits.push(s[i] - b'0');
                if seen_point {
                    frac_len += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        i += 1;
    }
    if !any {
        return Err(());
    }
    let mut exp: i64 = 0;
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        let t = std::str::from_utf8(&s[i + 1..]).map_err(|_| ())?;
        exp = t.parse::<i64>().map_err(|_| ())?;
        if exp.abs() > 10_000 {
            return Err(());
        }
        i = s.len();
    }
    if i != s.len() {
        return Err(());
    }
    // value = digits * 10^(exp - frac_len); wanted: unscaled at `scale`.
    let shift = exp - frac_len + scale as i64;
    while digits.len() > 1 && digits[0] == 0 {
        digits.remove(0);
    }
    let mut v: i128 = 0;
    let limit = 10i128.pow(precision.min(38) as u32);
    if shift >= 0 {
        for d in &digits {
            v = match v.checked_mul(10).and_then(|x| x.checked_add(*d as i128)) {
                Some(x) => x,
                None => return Ok(None),
            };
        }
        for _ in 0..shift {
            if v == 0 {
                break;
            }
            v = match v.checked_mul(10) {
                Some(x) => x,
                None => return Ok(None),
            };
        }
    } else {
        let drop = (-shift) as usize;
        let keep = digits.len().saturating_sub(drop);
        for d in &digits[..keep] {
            v = match v.checked_mul(10).and_then(|x| x.checked_add(*d as i128)) {
                Some(x) => x,
                None => return Ok(None),
            };
        }
        // Round half up on the first dropped digit.
        let first_dropped = if drop <= digits.len() { digits.get(keep).copied().unwrap_or(0) } else { 0 };
        if first_dropped >= 5 {
            v += 1;
        }
    }
    if v >= limit {
        return Ok(None);
    }
    Ok(Some(if neg { -v } else { v }))
}

/// Appends `s` as a JSON string the way Jackson escapes it: `"` and `\`, the short escapes
/// `\b \t \n \f \r`, other control characters as `\u00XX`; everything else as UTF-8.
pub fn write_json_string(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0..=0x1f => {
                buf.extend_from_slice(&bytes[start..i]);
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what Jackson writes for binary values).
pub fn base64_encode(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        out.push(B64[(n >> 18) as usize & 63]);
        out.push(B64[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 { B64[(n >> 6) as usize & 63] } else { b'=' });
        out.push(if chunk.len() > 2 { B64[n as usize & 63] } else { b'=' });
    }
}

/// Decodes standard (or URL-safe) base64, padding optional; `None` on any other character.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s.trim().as_bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b'\r' | b'\n' => continue,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Days since the epoch as `yyyy-MM-dd`.
pub fn write_date(buf: &mut Vec<u8>, days: i32) {
    let (y, m, d) = civil_from_days(days as i64);
    push_year(buf, y);
    let _ = write_two(buf, b'-', m);
    let _ = write_two(buf, b'-', d);
}

fn push_year(buf: &mut Vec<u8>, y: i64) {
    if (0..=9999).contains(&y) {
        let y = y as u32;
        buf.extend_from_slice(&[
            b'0' + (y / 1000) as u8,
            b'0' + (y / 100 % 10) as u8,
            b'0' + (y / 10 % 10) as u8,
            b'0' + (y % 10) as u8,
        ]);
    } else if y > 9999 {
        buf.extend_from_slice(format!("+{y}").as_bytes());
    } else {
        buf.extend_from_slice(format!("-{:04}", -y).as_bytes());
    }
}

fn write_two(buf: &mut Vec<u8>, sep: u8, v: u32) -> Option<()> {
    buf.push(sep);
    buf.push(b'0' + (v / 10 % 10) as u8);
    buf.push(b'0' + (v % 10) as u8);
    Some(())
}

/// (year, month, day) of days since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Seconds of the day as `HH:mm:ss` (Flink writes TIME to JSON with whole seconds).
pub fn write_time_seconds(buf: &mut Vec<u8>, secs_of_day: i64) {
    let s = secs_of_day.rem_euclid(86_400) as u32;
    buf.push(b'0' + (s / 36_000) as u8);
    buf.push(b'0' + (s / 3600 % 10) as u8);
    let _ = write_two(buf, b':', s / 60 % 60);
    let _ = write_two(buf, b':', s % 60);
}

/// Microseconds of the day as `HH:mm:ss[.fraction]`, the fraction without trailing zeros
/// (Java's `ISO_LOCAL_TIME`).
pub fn write_time_iso(buf: &mut Vec<u8>, micros_of_day: i64) {
    let m = micros_of_day.rem_euclid(86_400_000_000);
    write_time_seconds(buf, m / 1_000_000);
    write_fraction(buf, m % 1_000_000);
}

fn write_fraction(buf: &mut Vec<u8>, micros: i64) {
    if micros == 0 {
        return;
    }
    let mut digits = [0u8; 6];
    let mut v = micros;
    for i in (0..6).rev() {
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    let mut n = 6;
    while n > 0 && digits[n - 1] == b'0' {
        n -= 1;
    }
    buf.push(b'.');
    buf.extend_from_slice(&digits[..n]);
}

/// Microseconds since the epoch as Flink's SQL (`yyyy-MM-dd HH:mm:ss[.f]`) or ISO-8601
/// (`yyyy-MM-ddTHH:mm:ss[.f]`) text, with a trailing `Z` for TIMESTAMP_LTZ.
pub fn write_timestamp(buf: &mut Vec<u8>, micros: i64, iso: bool, zulu: bool) {
    let days = micros.div_euclid(86_400_000_000);
    let rem = micros.rem_euclid(86_400_000_000);
    let (y, m, d) = civil_from_days(days);
    push_year(buf, y);
    let _ = write_two(buf, b'-', m);
    let _ = write_two(buf, b'-', d);
    buf.push(if iso { b'T' } else { b' ' });
    write_time_iso(buf, rem);
    if zulu {
        buf.push(b'Z');
    }
}

/// Parses `yyyy-MM-dd`.
pub fn parse_date_text(s: &str) -> Option<i32> {
    let b = s.trim().as_bytes();
    let (days, used) = parse_date_prefix(b)?;
    (used == b.len()).then_some(days)
}

fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u32 = 0;
    for c in b {
        v = v.checked_mul(10)?.checked_add((c - b'0') as u32)?;
    }
    Some(v)
}

fn parse_date_prefix(b: &[u8]) -> Option<(i32, usize)> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = num(&b[0..4])?;
    let m = num(&b[5..7])?;
    let d = num(&b[8..10])?;
    Some((days_from_civil(y as i64, m, d)?, 10))
}

/// Parses `HH:mm[:ss[.fraction]]` into microseconds of the day.
pub fn parse_time_text(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let (v, used) = parse_time_prefix(b)?;
    (used == b.len()).then_some(v)
}

fn parse_time_prefix(b: &[u8]) -> Option<(i64, usize)> {
    if b.len() < 5 || b[2] != b':' {
        return None;
    }
    let h = num(&b[0..2])?;
    let mi = num(&b[3..5])?;
    let mut used = 5;
    let mut sec = 0;
    let mut micros: i64 = 0;
    if b.len() >= 8 && b[5] == b':' {
        sec = num(&b[6..8])?;
        used = 8;
        if b.len() > 8 && b[8] == b'.' {
            let mut i = 9;
            let mut scale = 100_000i64;
            while i < b.len() && b[i].is_ascii_digit() {
                micros += (b[i] - b'0') as i64 * scale;
                scale /= 10;
                i += 1;
                if i - 9 > 9 {
                    return None;
                }
            }
            if i == 9 {
                return None;
            }
            used = i;
        }
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    Some(((h as i64 * 3600 + mi as i64 * 60 + sec as i64) * 1_000_000 + micros, used))
}

/// Parses a timestamp in either SQL (`2024-01-02 03:04:05.123`) or ISO-8601
/// (`2024-01-02T03:04:05.123`) layout, with an optional trailing `Z`, into microseconds.
pub fn parse_timestamp_text(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let (days, _) = parse_date_prefix(b)?;
    if b.len() == 10 {
        return Some(days as i64 * 86_400_000_000);
    }
    if b[10] != b' ' && b[10] != b'T' && b[10] != b't' {
        return None;
    }
    let rest = &b[11..];
    let (t, used) = parse_time_prefix(rest)?;
    let tail = &rest[used..];
    if !(tail.is_empty() || tail == b"Z" || tail == b"z") {
        return None;
    }
    Some(days as i64 * 86_400_000_000 + t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_java() {
        assert_eq!(java_float_to_string(10.0), "10.0");
        assert_eq!(java_float_to_string(0.1), "0.1");
        assert_eq!(java_float_to_string(22.0), "22.0");
        assert_eq!(java_float_to_string(1.0e7), "1.0E7");
        assert_eq!(java_float_to_string(9_999_999.0), "9999999.0");
        assert_eq!(java_float_to_string(0.001), "0.001");
        assert_eq!(java_float_to_string(0.0001), "1.0E-4");
        assert_eq!(java_float_to_string(-1.5e-10), "-1.5E-10");
        assert_eq!(java_float_to_string(3.4028235e38), "3.4028235E38");
        assert_eq!(java_double_to_string(20.0), "20.0");
        assert_eq!(java_double_to_string(123456.789), "123456.789");
        assert_eq!(java_double_to_string(1e21), "1.0E21");
        assert_eq!(java_double_to_string(-0.0), "-0.0");
        assert_eq!(java_double_to_string(f64::NAN), "NaN");
        assert_eq!(java_double_to_string(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn decimals_print_like_big_decimal() {
        assert_eq!(big_decimal_to_string(1234, 2), "12.34");
        assert_eq!(big_decimal_to_string(-5, 3), "-0.005");
        assert_eq!(big_decimal_to_string(1, 7), "1E-7");
        assert_eq!(big_decimal_to_string(12, 8), "1.2E-7");
        assert_eq!(big_decimal_to_string(0, 2), "0.00");
        assert_eq!(big_decimal_to_string(42, 0), "42");
        assert_eq!(big_decimal_to_plain(1, 7), "0.0000001");
    }

    #[test]
    fn decimal_text() {
        assert_eq!(parse_decimal_text("12.345", 10, 2), Ok(Some(1235)));
        assert_eq!(parse_decimal_text("1.5E+3", 10, 2), Ok(Some(150000)));
        assert_eq!(parse_decimal_text("-0.5", 10, 0), Ok(Some(-1)));
        assert_eq!(parse_decimal_text("12345", 4, 0), Ok(None));
        assert_eq!(parse_decimal_text("1e-30", 10, 2), Ok(Some(0)));
        assert_eq!(parse_decimal_text("abc", 10, 2), Err(()));
        assert_eq!(parse_decimal_text("1e99999999999", 10, 2), Err(()));
    }

    #[test]
    fn strings_escape_like_jackson() {
        let mut b = Vec::new();
        write_json_string(&mut b, "a\"b\\c\n\u{1}é/");
        assert_eq!(String::from_utf8(b).unwrap(), "\"a\\\"b\\\\c\\n\\u0001é/\"");
    }

    #[test]
    fn base64_round_trip() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", &[0xff, 0, 1, 2, 3]] {
            let mut out = Vec::new();
            base64_encode(data, &mut out);
            assert_eq!(base64_decode(std::str::from_utf8(&out).unwrap()).unwrap(), data);
        }
        let mut out = Vec::new();
        base64_encode(b"foob", &mut out);
        assert_eq!(out, b"Zm9vYg==");
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp_text("2024-01-02 03:04:05.123").unwrap();
        let mut b = Vec::new();
        write_timestamp(&mut b, t, false, false);
        assert_eq!(b, b"2024-01-02 03:04:05.123");
        b.clear();
        write_timestamp(&mut b, t - 123_000, true, true);
        assert_eq!(b, b"2024-01-02T03:04:05Z");
        assert_eq!(parse_timestamp_text("2024-01-02T03:04:05Z"), Some(t - 123_000));
        assert_eq!(parse_timestamp_text("1969-12-31 23:59:59.999999"), Some(-1));
        b.clear();
        write_timestamp(&mut b, -1, false, false);
        assert_eq!(b, b"1969-12-31 23:59:59.999999");
        assert_eq!(parse_timestamp_text("2024-13-02 03:04:05"), None);
        assert_eq!(parse_date_text("2020-02-29"), Some(18321));
        b.clear();
        write_date(&mut b, 18321);
        assert_eq!(b, b"2020-02-29");
        assert_eq!(parse_time_text("03:04:05.5"), Some(11_045_500_000));
    }
}
