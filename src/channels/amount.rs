//! Exact money: decimal text into integer minor units. Never floating point.
//!
//! Channels send amounts either as integer minor units (WeChat fen, Stripe cents) or as decimal
//! text in major units (Alipay `"88.80"` yuan). Both end up as `i64` minor units;
//! the decimal text is parsed digit by digit so no value is ever rounded.

use super::ChannelError;

/// Why an amount text was refused. Carries no part of the input beyond its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The text is empty.
    #[error("amount is empty")]
    Empty,
    /// A character other than ASCII digits and one `.` (or a leading `-` where allowed).
    #[error("amount has a character that is not a decimal digit")]
    InvalidCharacter,
    /// A sign where none is allowed (`+` never is; `-` only for signed amounts).
    #[error("amount has a sign where none is allowed")]
    UnexpectedSign,
    /// `.` without digits on one side (`"1."`, `".5"`, `"."`), or a `.` for a zero-decimal currency.
    #[error("amount has a misplaced decimal point")]
    MisplacedPoint,
    /// More fraction digits than the currency's exponent: the value is not a whole minor unit.
    #[error("amount has more than {exponent} fraction digits")]
    TooManyFractionDigits {
        /// The currency's exponent.
        exponent: u32,
    },
    /// The value does not fit in `i64` minor units.
    #[error("amount is too large")]
    Overflow,
}

/// Parses unsigned decimal text (`"88.80"`, `"88.8"`, `"88"`) into minor units for a currency
/// with `exponent` fraction digits: `parse_decimal_minor("88.80", 2) == Ok(8880)`.
///
/// Strict on purpose: no sign, no exponent notation, no whitespace, no thousands separators,
/// at most `exponent` fraction digits (a third decimal on a yuan amount is not a rounding
/// question but a malformed notification).
pub fn parse_decimal_minor(text: &str, exponent: u32) -> Result<i64, AmountError> {
    if text.starts_with('-') || text.starts_with('+') {
        return Err(AmountError::UnexpectedSign);
    }
    parse_digits(text, exponent, false)
}

/// Like [`parse_decimal_minor`] but accepts one leading `-` (refund deltas, adjustments).
/// `+` is still refused, and `-0` parses as 0.
pub fn parse_signed_decimal_minor(text: &str, exponent: u32) -> Result<i64, AmountError> {
    match text.strip_prefix('-') {
        Some(rest) => {
            if rest.starts_with('-') || rest.starts_with('+') {
                return Err(AmountError::UnexpectedSign);
            }
            // Parse the magnitude as negative directly so i64::MIN stays representable.
            parse_digits(rest, exponent, true)
        }
        None => parse_decimal_minor(text, exponent),
    }
}

fn parse_digits(text: &str, exponent: u32, negative: bool) -> Result<i64, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || !frac_part.is_none_or(all_digits) {
        return Err(if text.contains(['+', '-']) {
            AmountError::UnexpectedSign
        } else {
            AmountError::InvalidCharacter
        });
    }
    if int_part.is_empty() {
        return Err(AmountError::MisplacedPoint);
    }
    let frac = match frac_part {
        None => "",
        Some("") => return Err(AmountError::MisplacedPoint),
        Some(_) if exponent == 0 => return Err(AmountError::MisplacedPoint),
        Some(f) if f.len() > exponent as usize => return Err(AmountError::TooManyFractionDigits { exponent }),
        Some(f) => f,
    };
    let sign: i64 = if negative { -1 } else { 1 };
    let mut value: i64 = 0;
    let padding = exponent as usize - frac.len();
    let digits = int_part
        .bytes()
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', padding));
    for b in digits {
        let d = i64::from(b - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(sign * d))
            .ok_or(AmountError::Overflow)?;
    }
    Ok(value)
}

/// Reads an integer minor-unit amount (WeChat fen, Stripe cents) at JSON `pointer`. Absent or
/// null is `None`; anything but a JSON integer (a fraction, a string) is malformed, so an amount
/// never passes through floating point.
pub(crate) fn integer_minor_at(object: &serde_json::Value, pointer: &str) -> Result<Option<i64>, ChannelError> {
    match object.pointer(pointer) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ChannelError::Malformed(format!("{pointer} is not an integer amount"))),
    }
}

/// Number of fraction digits of an ISO 4217 currency (case-insensitive): 0 for JPY, KRW and
/// the other zero-decimal currencies, 3 for BHD, IQD, JOD, KWD, LYD, OMR, TND, 4 for CLF and UYW,
/// 2 otherwise.
pub(crate) fn currency_exponent(code: &str) -> u32 {
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF",
        "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    const FOUR: &[&str] = &["CLF", "UYW"];
    let upper = code.to_ascii_uppercase();
    if ZERO.contains(&upper.as_str()) {
        0
    } else if THREE.contains(&upper.as_str()) {
        3
    } else if FOUR.contains(&upper.as_str()) {
        4
    } else {
        2
    }
}

/// Formats minor units as decimal text with exactly `exponent` fraction digits
/// (`format_minor(8880, 2) == "88.80"`, `format_minor(-5, 2) == "-0.05"`); the inverse of
/// [`parse_signed_decimal_minor`].
pub fn format_minor(minor: i64, exponent: u32) -> String {
    let digits = minor.unsigned_abs().to_string();
    let sign = if minor < 0 { "-" } else { "" };
    let exp = exponent as usize;
    if exp == 0 {
        return format!("{sign}{digits}");
    }
    let padded = if digits.len() <= exp {
        format!("{}{digits}", "0".repeat(exp + 1 - digits.len()))
    } else {
        digits
    };
    let (int_part, frac_part) = padded.split_at(padded.len() - exp);
    format!("{sign}{int_part}.{frac_part}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alipay_yuan_text_becomes_fen() {
        assert_eq!(parse_decimal_minor("88.80", 2), Ok(8880));
        assert_eq!(parse_decimal_minor("0.01", 2), Ok(1));
        assert_eq!(parse_decimal_minor("88.8", 2), Ok(8880));
        assert_eq!(parse_decimal_minor("88", 2), Ok(8800));
        assert_eq!(parse_decimal_minor("0", 2), Ok(0));
        assert_eq!(parse_decimal_minor("007.50", 2), Ok(750));
    }

    #[test]
    fn zero_and_three_decimal_currencies_scale_by_their_exponent() {
        assert_eq!(parse_decimal_minor("1999", currency_exponent("JPY")), Ok(1999));
        assert_eq!(parse_decimal_minor("1.234", currency_exponent("KWD")), Ok(1234));
        assert_eq!(parse_decimal_minor("1.2", currency_exponent("bhd")), Ok(1200));
        assert_eq!(
            parse_decimal_minor("1.5", currency_exponent("JPY")),
            Err(AmountError::MisplacedPoint)
        );
    }

    #[test]
    fn currency_exponents_follow_iso_4217() {
        for code in ["JPY", "KRW", "VND", "CLP", "ISK", "jpy"] {
            assert_eq!(currency_exponent(code), 0, "{code}");
        }
        for code in ["BHD", "JOD", "KWD", "OMR", "TND", "IQD", "LYD"] {
            assert_eq!(currency_exponent(code), 3, "{code}");
        }
        for code in ["CNY", "USD", "EUR", "HKD", "GBP", "cny"] {
            assert_eq!(currency_exponent(code), 2, "{code}");
        }
        assert_eq!(currency_exponent("CLF"), 4);
    }

    #[test]
    fn signs_are_refused_unless_signed_parsing_is_asked_for() {
        assert_eq!(parse_decimal_minor("-1.00", 2), Err(AmountError::UnexpectedSign));
        assert_eq!(parse_decimal_minor("+1.00", 2), Err(AmountError::UnexpectedSign));
        assert_eq!(parse_signed_decimal_minor("-1.05", 2), Ok(-105));
        assert_eq!(parse_signed_decimal_minor("-0", 2), Ok(0));
        assert_eq!(parse_signed_decimal_minor("+1", 2), Err(AmountError::UnexpectedSign));
        assert_eq!(parse_signed_decimal_minor("--1", 2), Err(AmountError::UnexpectedSign));
        assert_eq!(parse_signed_decimal_minor("-", 2), Err(AmountError::Empty));
        assert_eq!(parse_decimal_minor("1-2", 2), Err(AmountError::UnexpectedSign));
    }

    #[test]
    fn malformed_text_is_refused() {
        assert_eq!(parse_decimal_minor("", 2), Err(AmountError::Empty));
        assert_eq!(parse_decimal_minor(" 1.00", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_decimal_minor("1.00 ", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_decimal_minor("1e2", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_decimal_minor("1,000.00", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_decimal_minor("1.0.0", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_decimal_minor("١٢", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_decimal_minor("NaN", 2), Err(AmountError::InvalidCharacter));
        assert_eq!(parse_decimal_minor("1.", 2), Err(AmountError::MisplacedPoint));
        assert_eq!(parse_decimal_minor(".5", 2), Err(AmountError::MisplacedPoint));
        assert_eq!(parse_decimal_minor(".", 2), Err(AmountError::MisplacedPoint));
    }

    #[test]
    fn more_fraction_digits_than_the_exponent_is_refused_not_rounded() {
        assert_eq!(
            parse_decimal_minor("88.801", 2),
            Err(AmountError::TooManyFractionDigits { exponent: 2 })
        );
        assert_eq!(
            parse_decimal_minor("0.001", 2),
            Err(AmountError::TooManyFractionDigits { exponent: 2 })
        );
    }

    #[test]
    fn overflow_is_refused_at_the_i64_boundary() {
        assert_eq!(parse_decimal_minor("92233720368547758.07", 2), Ok(i64::MAX));
        assert_eq!(
            parse_decimal_minor("92233720368547758.08", 2),
            Err(AmountError::Overflow)
        );
        assert_eq!(parse_signed_decimal_minor("-92233720368547758.08", 2), Ok(i64::MIN));
        assert_eq!(
            parse_signed_decimal_minor("-92233720368547758.09", 2),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            parse_decimal_minor("99999999999999999999", 0),
            Err(AmountError::Overflow)
        );
    }

    #[test]
    fn format_minor_renders_exact_decimal_text() {
        assert_eq!(format_minor(8880, 2), "88.80");
        assert_eq!(format_minor(1, 2), "0.01");
        assert_eq!(format_minor(0, 2), "0.00");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(1999, 0), "1999");
        assert_eq!(format_minor(1234, 3), "1.234");
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn integer_minor_at_refuses_fractions_and_strings() {
        let v = serde_json::json!({"amount": {"total": 8880, "float": 88.8, "text": "8880", "none": null}});
        assert_eq!(integer_minor_at(&v, "/amount/total"), Ok(Some(8880)));
        assert_eq!(integer_minor_at(&v, "/amount/missing"), Ok(None));
        assert_eq!(integer_minor_at(&v, "/amount/none"), Ok(None));
        assert!(integer_minor_at(&v, "/amount/float").is_err());
        assert!(integer_minor_at(&v, "/amount/text").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn format_then_parse_round_trips(minor in any::<i64>(), exponent in 0u32..=4) {
            let text = format_minor(minor, exponent);
            prop_assert_eq!(parse_signed_decimal_minor(&text, exponent), Ok(minor));
            if minor >= 0 {
                prop_assert_eq!(parse_decimal_minor(&text, exponent), Ok(minor));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}", exponent in 0u32..=4) {
            let _ = parse_signed_decimal_minor(&text, exponent);
            let _ = parse_decimal_minor(&text, exponent);
        }
    }
}
