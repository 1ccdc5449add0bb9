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
    for pair in body.split(|b| *b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
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

fn percent_decode_form(input: &[u8]) -> Result<Vec<u8>, ChannelError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex_pair = input.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex_pair
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ChannelError::Malformed("broken percent escape in form body".into()))?;
                out.push(byte);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    Ok(out)
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
