//! Number parsing with the exact semantics of memcached's `safe_strto*`
//! helpers (`util.c`), which wrap C's `strtol` family.
//!
//! memcached accepts what `strtol` accepts — leading white space, an optional
//! sign, decimal digits — and then only requires that the character after the
//! digits is white space or the end of the token. Matching this byte for byte
//! is what makes `set k 0 0 5\t` or `incr k +1` behave as they do on memcached.

/// C's `isspace` in the "C" locale.
pub fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What `strtoul`/`strtol` read from a token: sign, magnitude (saturated),
/// and whether the text after the digits is acceptable to `safe_strto*`.
struct Scanned {
    negative: bool,
    /// `None` when the magnitude does not fit in a `u64` (C's `ERANGE`).
    magnitude: Option<u64>,
}

fn scan(token: &[u8]) -> Option<Scanned> {
    let mut i = token.iter().take_while(|&&b| is_c_space(b)).count();
    let mut negative = false;
    if let Some(&sign) = token.get(i) {
        if sign == b'+' || sign == b'-' {
            negative = sign == b'-';
            i += 1;
        }
    }
    let digits = token[i.min(token.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return None; // str == endptr
    }
    let end = i + digits;
    if let Some(&next) = token.get(end) {
        if !is_c_space(next) {
            return None;
        }
    }
    let magnitude = token[i..end].iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    Some(Scanned {
        negative,
        magnitude,
    })
}

/// `safe_strtoull`: a 64-bit unsigned number; a negative number is refused
/// only when its wrapped value looks negative as a signed number (so `-0`
/// passes and `-1` does not), as in memcached.
pub fn parse_u64(token: &[u8]) -> Option<u64> {
    let s = scan(token)?;
    let magnitude = s.magnitude?;
    let value = if s.negative {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    if (value as i64) < 0 && s.negative {
        return None;
    }
    Some(value)
}

/// `safe_strtoul` on a 64-bit platform, truncated to the 32-bit flags field
/// exactly as memcached's cast does.
pub fn parse_u32_truncating(token: &[u8]) -> Option<u32> {
    parse_u64(token).map(|v| v as u32)
}

/// `safe_strtol`: a signed 64-bit `strtol` result (refused outside that range,
/// C's `ERANGE`), truncated into memcached's 32-bit field as its assignment
/// does: `4294967297` reads as 1 and `2147483648` as a negative number.
pub fn parse_i32_truncating(token: &[u8]) -> Option<i32> {
    let s = scan(token)?;
    let magnitude = i128::from(s.magnitude?);
    let value = i64::try_from(if s.negative { -magnitude } else { magnitude }).ok()?;
    Some(value as i32)
}

/// `safe_strtod`: a decimal floating-point number, with the same tail rule.
/// C's `strtod` also reads hexadecimal floats (`0x1p3`), which this does
/// not; a number too large for a double (C's `ERANGE`) is refused.
pub fn parse_f64(token: &[u8]) -> Option<f64> {
    let start = token.iter().take_while(|&&b| is_c_space(b)).count();
    let body = &token[start..];
    let end = body
        .iter()
        .position(|&b| is_c_space(b))
        .unwrap_or(body.len());
    let text = std::str::from_utf8(&body[..end]).ok()?;
    let value: f64 = text.parse().ok()?;
    let overflowed = value.is_infinite() && !text.to_ascii_lowercase().contains("inf");
    (!overflowed).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_follows_strtoull() {
        let table: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b"+7", Some(7)),
            (b"-0", Some(0)),
            (b"-1", None),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"18446744073709551616", None),
            (b"12abc", None),
            (b"12 abc", Some(12)),
            (b"12\r\n", Some(12)),
            (b"  12", Some(12)),
            (b"", None),
            (b"-", None),
            (b"abc", None),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_u64(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn signed_truncates_to_32_bits_like_memcached() {
        assert_eq!(parse_i32_truncating(b"-1"), Some(-1));
        assert_eq!(parse_i32_truncating(b"2147483647"), Some(i32::MAX));
        assert_eq!(parse_i32_truncating(b"2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32_truncating(b"4294967297"), Some(1));
        assert_eq!(parse_i32_truncating(b"4294967295"), Some(-1));
        assert_eq!(parse_i32_truncating(b"9223372036854775808"), None);
        assert_eq!(parse_i32_truncating(b"-9223372036854775808"), Some(0));
        assert_eq!(parse_i32_truncating(b"5\t"), Some(5));
        assert_eq!(parse_i32_truncating(b"5x"), None);
    }

    #[test]
    fn doubles_follow_strtod() {
        assert_eq!(parse_f64(b"0.5"), Some(0.5));
        assert_eq!(parse_f64(b"+1e2"), Some(100.0));
        assert_eq!(parse_f64(b".5 "), Some(0.5));
        assert_eq!(parse_f64(b"inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"1e999"), None);
        assert_eq!(parse_f64(b"0.5x"), None);
        assert_eq!(parse_f64(b"x"), None);
        assert_eq!(parse_f64(b""), None);
    }

    #[test]
    fn flags_truncate_like_a_c_cast() {
        assert_eq!(parse_u32_truncating(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32_truncating(b"4294967296"), Some(0));
        assert_eq!(parse_u32_truncating(b"-1"), None);
    }
}
