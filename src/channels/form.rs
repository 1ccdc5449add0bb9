//! `application/x-www-form-urlencoded` bodies as raw bytes, and the sorted `k=v&...` content
//! the form-signing channels (Alipay, UnionPay) sign.

use std::collections::BTreeMap;

use super::ChannelError;

/// Form fields as percent-decoded raw bytes, sorted by key.
pub(crate) type RawForm = BTreeMap<String, Vec<u8>>;

/// Decodes an `application/x-www-form-urlencoded` body exactly once: split on `&`,
/// then on the first `=`, `+` → space, `%XX` → byte. Values stay raw bytes (no transcoding);
/// keys must be UTF-8. Duplicate keys and broken `%` escapes are malformed.
pub(crate) fn parse_form_raw(body: &[u8]) -> Result<RawForm, ChannelError> {
    let mut fields = RawForm::new();
    for pair in memchr::memchr_iter(b'&', body)
        .chain(std::iter::once(body.len()))
        .scan(0, |start, end| {
            let pair = body.get(*start..end).unwrap_or_default();
            *start = end + 1;
            Some(pair)
        })
    {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match memchr::memchr(b'=', pair) {
            Some(i) => (pair.get(..i).unwrap_or_default(), pair.get(i + 1..).unwrap_or_default()),
            None => (pair, &[][..]),
        };
        let key = String::from_utf8(percent_decode_form(k)?)
            .map_err(|_| ChannelError::Malformed("form key is not UTF-8".into()))?;
        if key.is_empty() {
            return Err(ChannelError::Malformed("form field with an empty name".into()));
        }
        let value = percent_decode_form(v)?;
        if fields.contains_key(&key) {
            return Err(ChannelError::Malformed(format!(
                "form field {key} appears more than once"
            )));
        }
        fields.insert(key, value);
    }
    Ok(fields)
}

/// Decodes one key or value. Hand-written rather than the `percent-encoding` crate: that crate
/// passes a broken escape such as `%G1` or a trailing `%` through unchanged, and a signed form
/// must not have two readings, so a broken escape is refused here. Runs of plain bytes are found
/// with `memchr` and copied whole, so a long value with few escapes costs little more than a copy.
fn percent_decode_form(input: &[u8]) -> Result<Vec<u8>, ChannelError> {
    let broken = || ChannelError::Malformed("broken percent escape in form body".into());
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    loop {
        let Some(at) = memchr::memchr2(b'%', b'+', rest) else {
            out.extend_from_slice(rest);
            return Ok(out);
        };
        let (plain, escaped) = rest.split_at(at);
        out.extend_from_slice(plain);
        rest = match escaped {
            [b'+', more @ ..] => {
                out.push(b' ');
                more
            }
            [b'%', hi, lo, more @ ..] => {
                let byte = hex_digit(*hi).zip(hex_digit(*lo)).ok_or_else(broken)?;
                out.push(byte.0 << 4 | byte.1);
                more
            }
            _ => return Err(broken()),
        };
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `k1=v1&k2=v2...` over the sorted fields minus `exclude`, values as raw bytes.
/// Empty values are skipped unless `include_empty`.
pub(crate) fn sorted_content(fields: &RawForm, exclude: &[&str], include_empty: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        if exclude.contains(&k.as_str()) || (v.is_empty() && !include_empty) {
            continue;
        }
        if !out.is_empty() {
            out.push(b'&');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_plus_and_plain_runs_decode() {
        let f = parse_form_raw(b"a=x%2By+z%0A&b=%E4%B8%AD&c=&d").unwrap();
        assert_eq!(f["a"], b"x+y z\n");
        assert_eq!(f["b"], "中".as_bytes());
        assert_eq!(f["c"], b"");
        assert_eq!(f["d"], b"");
        assert_eq!(sorted_content(&f, &["d"], false), b"a=x+y z\n&b=\xE4\xB8\xAD");
        assert_eq!(sorted_content(&f, &[], true), b"a=x+y z\n&b=\xE4\xB8\xAD&c=&d=");
    }

    #[test]
    fn broken_escapes_are_refused_wherever_they_are() {
        for body in [
            &b"a=%"[..],
            b"a=%4",
            b"a=%G1",
            b"a=1%2",
            b"a=%%41",
            b"%zz=1",
            b"a=ok&b=x%",
        ] {
            let err = parse_form_raw(body).unwrap_err();
            assert!(
                matches!(err, ChannelError::Malformed(ref m) if m.contains("percent escape")),
                "{body:?}: {err}"
            );
        }
    }

    #[test]
    fn duplicate_and_empty_names_are_refused() {
        assert!(parse_form_raw(b"a=1&a=2").is_err());
        assert!(
            parse_form_raw(b"a=1&%61=2").is_err(),
            "an escaped duplicate is still a duplicate"
        );
        assert!(parse_form_raw(b"=1").is_err());
    }
}
