//! Beijing wall-clock time (UTC+08:00, no DST), in which Alipay, WeChat Pay v2 and UnionPay write
//! their timestamps without an offset.

use jiff::Timestamp;

/// Beijing wall-clock text (`yyyy-MM-dd HH:mm:ss[.fff]` or `yyyyMMddHHmmss`) as RFC 3339 with
/// `+08:00`; `None` when the text is not such a time.
pub(crate) fn beijing_rfc3339(text: &str) -> Option<String> {
    let civil = if text.len() == 14 && text.bytes().all(|b| b.is_ascii_digit()) {
        jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", text).ok()?
    } else {
        let (date, time) = text.split_once(' ')?;
        format!("{date}T{time}").parse::<jiff::civil::DateTime>().ok()?
    };
    Some(format!("{civil}+08:00"))
}

/// The instant as Beijing wall-clock text in `format` (simulation).
pub(crate) fn beijing_format(at: Timestamp, format: &str) -> String {
    at.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
        .strftime(format)
        .to_string()
}
