//! Exact money amounts.
//!
//! Amounts travel as JSON numbers (`120`, `50.25`, `-3.5`, even `1.2e2`) and are kept as
//! integer **cents** from the moment they are parsed: no floating point ever touches a sum.
//! A literal with more than two significant decimals (`1.005`) is refused rather than
//! rounded, and so is one whose cents do not fit in an `i64`.
//!
//! ```
//! use atelier_lambda::amount::{parse_cents, format_cents, AmountError};
//! assert_eq!(parse_cents("50.25"), Ok(5025));
//! assert_eq!(parse_cents("1.2e2"), Ok(12000));
//! assert_eq!(parse_cents("1.005"), Err(AmountError::TooPrecise));
//! assert_eq!(format_cents(40000), "400");
//! assert_eq!(format_cents(-5050), "-50.5");
//! ```

use thiserror::Error;

/// Why an amount literal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AmountError {
    /// Not a decimal number literal at all.
    #[error("amount is not a number")]
    NotANumber,
    /// A non-zero digit beyond the second decimal.
    #[error("amount has more than 2 decimals")]
    TooPrecise,
    /// The amount in cents does not fit in a signed 64-bit integer.
    #[error("amount is out of range")]
    Overflow,
}

/// Parses a JSON number literal (or the same text from a CSV cell) into exact cents.
pub fn parse_cents(text: &str) -> Result<i64, AmountError> {
    parse_wide(text, i128::from(i64::MAX)).map(|cents| i64::try_from(cents).expect("bounded by i64"))
}

/// Parses a total — a sum of amounts, which the views keep in 128 bits — into exact cents.
pub fn parse_total_cents(text: &str) -> Result<i128, AmountError> {
    parse_wide(text, i128::MAX)
}

/// Parses into cents whose magnitude is at most `most` (one more for a negative amount).
fn parse_wide(text: &str, most: i128) -> Result<i128, AmountError> {
    let bytes = text.trim().as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    // Split mantissa and exponent.
    let (mantissa, exponent) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, &mantissa[mantissa.len()..]),
    };
    let digits_ok = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
    if int_part.is_empty() && frac_part.is_empty()
        || !digits_ok(int_part)
        || !digits_ok(frac_part)
        || (mantissa.contains(&b'.') && frac_part.is_empty() && int_part.is_empty())
    {
        return Err(AmountError::NotANumber);
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let (sign, digits) = match e.first() {
                Some(b'-') => (-1, &e[1..]),
                Some(b'+') => (1, &e[1..]),
                _ => (1, e),
            };
            if digits.is_empty() || !digits_ok(digits) {
                return Err(AmountError::NotANumber);
            }
            // Exponents this large can only overflow or lose precision; cap the parse.
            let magnitude: i64 = std::str::from_utf8(digits)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(i64::MAX / 4)
                .min(i64::MAX / 4);
            sign * magnitude
        }
    };
    // value = digits * 10^(exponent - frac_len); cents = value * 100.
    let mut digits: Vec<u8> = int_part.iter().chain(frac_part).map(|d| d - b'0').collect();
    let mut scale = exponent - frac_part.len() as i64 + 2;
    // Drop trailing zeros that a negative scale would divide away.
    while scale < 0 {
        match digits.last() {
            Some(0) => {
                digits.pop();
                scale += 1;
            }
            Some(_) => return Err(AmountError::TooPrecise),
            None => break,
        }
    }
    if scale < 0 {
        // All digits were zeros: the value is exactly zero.
        return Ok(0);
    }
    // The magnitude may reach |MIN| for a negative amount, one more than MAX.
    let most = most.unsigned_abs() + u128::from(negative);
    let mut cents: u128 = 0;
    let grow = |cents: u128, digit: u8| cents.checked_mul(10).and_then(|c| c.checked_add(u128::from(digit)));
    for d in digits {
        cents = grow(cents, d).filter(|c| *c <= most).ok_or(AmountError::Overflow)?;
    }
    for _ in 0..scale {
        if cents == 0 {
            break;
        }
        cents = grow(cents, 0).filter(|c| *c <= most).ok_or(AmountError::Overflow)?;
    }
    if negative {
        Ok(0i128.wrapping_sub_unsigned(cents))
    } else {
        Ok(cents as i128)
    }
}

/// `n / d` rounded half away from zero: the averages of the views (in cents).
pub fn divide_rounded(n: i128, d: i128) -> i128 {
    let (q, r) = (n / d, n % d);
    if 2 * r.abs() >= d.abs() {
        q + if (n < 0) != (d < 0) { -1 } else { 1 }
    } else {
        q
    }
}

/// Formats cents as the shortest exact decimal: `40000` → `400`, `5025` → `50.25`, `5050` → `50.5`.
pub fn format_cents(cents: impl Into<i128>) -> String {
    let cents: i128 = cents.into();
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let (units, rest) = (abs / 100, abs % 100);
    match rest {
        0 => format!("{sign}{units}"),
        r if r % 10 == 0 => format!("{sign}{units}.{}", r / 10),
        r => format!("{sign}{units}.{r:02}"),
    }
}

/// The average of `count` amounts summing to `total` cents, rounded half away from zero to
/// whole cents (Spark's `round(avg, 2)` rounds the same way).
pub fn average_cents(total: i128, count: i64) -> i128 {
    if count == 0 {
        return 0;
    }
    let count = i128::from(count);
    let (q, r) = (total / count, total % count);
    if 2 * r.abs() >= count.abs() {
        q + total.signum() * count.signum()
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_and_decimals_exactly() {
        assert_eq!(parse_cents("0"), Ok(0));
        assert_eq!(parse_cents("120"), Ok(12000));
        assert_eq!(parse_cents("-120"), Ok(-12000));
        assert_eq!(parse_cents("0.1"), Ok(10));
        assert_eq!(parse_cents("0.10"), Ok(10));
        assert_eq!(parse_cents("0.100"), Ok(10));
        assert_eq!(parse_cents("19.99"), Ok(1999));
        assert_eq!(parse_cents("1e2"), Ok(10000));
        assert_eq!(parse_cents("125e-2"), Ok(125));
        assert_eq!(parse_cents("0e999999999999"), Ok(0));
    }

    #[test]
    fn refuses_what_it_cannot_keep_exactly() {
        assert_eq!(parse_cents("1.001"), Err(AmountError::TooPrecise));
        assert_eq!(parse_cents("1e-3"), Err(AmountError::TooPrecise));
        assert_eq!(parse_cents("92233720368547758.08"), Err(AmountError::Overflow));
        assert_eq!(parse_cents("1e30"), Err(AmountError::Overflow));
        assert_eq!(parse_cents("1e99999999999999999999"), Err(AmountError::Overflow));
        for bad in ["", "-", "abc", "1.2.3", "1e", "e5", ".", "1,5", "0x10", "NaN"] {
            assert_eq!(parse_cents(bad), Err(AmountError::NotANumber), "{bad:?}");
        }
    }

    #[test]
    fn formats_shortest_exact_decimal() {
        assert_eq!(format_cents(0), "0");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(-5), "-0.05");
        assert_eq!(format_cents(12345), "123.45");
        assert_eq!(format_cents(12340), "123.4");
    }

    #[test]
    fn averages_round_half_away_from_zero() {
        assert_eq!(average_cents(10, 4), 3); // 2.5 -> 3
        assert_eq!(average_cents(-10, 4), -3);
        assert_eq!(average_cents(32000, 2), 16000);
        assert_eq!(average_cents(100, 3), 33);
    }
}
