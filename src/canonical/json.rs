//! JSON bodies read without guessing: the guard's `body:/pointer` identities mean the same to
//! payguard and to the backend's JSON decoder.
//!
//! Decoders disagree on three things, so each is refused rather than read one way:
//! - a key that appears twice in one object (serde and most decoders keep the last, Go's
//!   `encoding/json` too, some keep the first);
//! - keys that differ only in case along an identity's pointer (Go's `encoding/json` matches
//!   struct fields case-insensitively, so `{"user_id":"a","USER_ID":"b"}` is user `b` to it);
//! - numbers that are not plain integers (`1e2`, `100.0` and `100` are the same user to a
//!   float decoder and three users to a text comparison; integers beyond 64 bits lose digits).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a JSON body or one of its identity fields cannot be read unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonAmbiguity {
    /// A key appears twice in one object.
    #[error("the JSON body repeats the key `{0}` in one object")]
    DuplicateKey(String),
    /// Keys along the pointer differ only in case.
    #[error("the JSON body has keys `{0}` and `{1}`, which some decoders read as the same field")]
    CaseVariantKeys(String, String),
    /// The identity is a number that is not a plain integer.
    #[error("the JSON value at `{0}` is not a plain integer (no fraction, exponent or more than 64 bits)")]
    NotAnInteger(String),
}

/// Parses `body` as JSON, refusing a key repeated in one object. `Ok(None)` when the body is not
/// JSON at all (then it carries no JSON identity).
pub fn parse_strict(body: &[u8]) -> Result<Option<Value>, JsonAmbiguity> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut duplicate = None;
    let parsed = StrictValue {
        duplicate: &mut duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate) {
        (_, Some(key)) => Err(JsonAmbiguity::DuplicateKey(shorten(&key))),
        (Ok(v), None) => Ok(Some(v)),
        (Err(_), None) => Ok(None),
    }
}

/// The identity at `pointer` (RFC 6901) in `value`: a non-empty string, an integer or a
/// boolean, as bytes. `Ok(None)` when the pointer leads nowhere or to `null`, an empty string,
/// an object or an array.
pub fn identity_at<'v>(value: &'v Value, pointer: &str) -> Result<Option<Cow<'v, [u8]>>, JsonAmbiguity> {
    let mut at = value;
    for token in pointer.split('/').skip(1) {
        let token: std::borrow::Cow<'_, str> = if token.contains('~') {
            token.replace("~1", "/").replace("~0", "~").into()
        } else {
            token.into()
        };
        at = match at {
            Value::Object(map) => {
                if let Some(other) = case_variant(map, &token) {
                    return Err(JsonAmbiguity::CaseVariantKeys(shorten(&token), shorten(other)));
                }
                match map.get(token.as_ref()) {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
            Value::Array(items) => match array_index(&token).and_then(|i| items.get(i)) {
                Some(v) => v,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
    }
    Ok(match at {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s.as_bytes())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(Cow::Owned(n.to_string().into_bytes())),
        Value::Number(_) => return Err(JsonAmbiguity::NotAnInteger(shorten(pointer))),
        Value::Bool(b) => Some(Cow::Owned(b.to_string().into_bytes())),
        _ => None,
    })
}

/// Another key of `map` equal to `key` under simple case folding (what Go's `encoding/json`
/// uses: `ſ` folds to `s`, `K` (Kelvin) to `k`). Compares without allocating.
fn case_variant<'m>(map: &'m Map<String, Value>, key: &str) -> Option<&'m str> {
    map.keys()
        .find(|k| k.as_str() != key && same_folded(k, key))
        .map(String::as_str)
}

fn same_folded(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    let fold = |s: &str| {
        s.chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .collect::<Vec<char>>()
    };
    // Only keys with non-ASCII characters get here; they are rare in API bodies.
    fold(a) == fold(b)
}

/// An array index token: `0` or digits without a leading zero (RFC 6901 §4).
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Keys quoted in problem details are cut to 64 characters.
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Deserializes a [`Value`], recording the first key repeated within one object.
struct StrictValue<'a> {
    duplicate: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue {
            duplicate: &mut *self.duplicate,
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = access.next_value_seed(StrictValue {
                duplicate: &mut *self.duplicate,
            })?;
            if map.contains_key(&key) {
                *self.duplicate = Some(key);
                return Err(de::Error::custom("duplicate key"));
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(body: &str, pointer: &str) -> Result<Option<Vec<u8>>, JsonAmbiguity> {
        let v = parse_strict(body.as_bytes())?.expect("json");
        identity_at(&v, pointer).map(|o| o.map(Cow::into_owned))
    }

    #[test]
    fn identities_are_strings_integers_or_booleans() {
        let body = r#"{"user":{"id":42,"name":"ann","tags":["a","b"]},"flag":true,"none":null,"e":""}"#;
        assert_eq!(id(body, "/user/id").unwrap().unwrap(), b"42");
        assert_eq!(id(body, "/user/name").unwrap().unwrap(), b"ann");
        assert_eq!(id(body, "/user/tags/1").unwrap().unwrap(), b"b");
        assert_eq!(id(body, "/flag").unwrap().unwrap(), b"true");
        assert_eq!(id(body, "/none").unwrap(), None);
        assert_eq!(id(body, "/e").unwrap(), None);
        assert_eq!(id(body, "/user").unwrap(), None);
        assert_eq!(id(body, "/user/tags/01").unwrap(), None);
        assert_eq!(id(body, "/missing").unwrap(), None);
        assert_eq!(id(r#"{"a/b":{"~":"x"}}"#, "/a~1b/~0").unwrap().unwrap(), b"x");
        assert_eq!(id(r#"{"n":-7}"#, "/n").unwrap().unwrap(), b"-7");
        assert_eq!(
            id(r#"{"n":18446744073709551615}"#, "/n").unwrap().unwrap(),
            b"18446744073709551615"
        );
    }

    #[test]
    fn a_key_repeated_anywhere_is_refused() {
        for body in [
            r#"{"user_id":"a","user_id":"b"}"#,
            r#"{"x":{"k":1,"k":2},"user_id":"a"}"#,
            r#"[{"k":1,"k":1}]"#,
        ] {
            assert!(
                matches!(parse_strict(body.as_bytes()), Err(JsonAmbiguity::DuplicateKey(_))),
                "{body}"
            );
        }
        assert!(parse_strict(br#"{"a":{"k":1},"b":{"k":1}}"#).unwrap().is_some());
    }

    #[test]
    fn case_variants_along_the_pointer_are_refused() {
        assert_eq!(
            id(r#"{"user_id":"a","USER_ID":"b"}"#, "/user_id"),
            Err(JsonAmbiguity::CaseVariantKeys("user_id".into(), "USER_ID".into()))
        );
        assert!(id(r#"{"user":{"id":"a"},"User":{"id":"b"}}"#, "/user/id").is_err());
        // Go folds the long s and the Kelvin sign too.
        assert!(id("{\"sku\":\"a\",\"\u{17f}ku\":\"b\"}", "/sku").is_err());
        assert!(id("{\"k\":\"a\",\"\u{212a}\":\"b\"}", "/k").is_err());
        // Elsewhere in the body case variants do not matter.
        assert_eq!(
            id(r#"{"user_id":"a","Note":1,"note":2}"#, "/user_id").unwrap().unwrap(),
            b"a"
        );
    }

    #[test]
    fn numbers_that_are_not_plain_integers_are_refused() {
        for body in [r#"{"n":1e2}"#, r#"{"n":100.0}"#, r#"{"n":123456789012345678901234}"#] {
            assert_eq!(id(body, "/n"), Err(JsonAmbiguity::NotAnInteger("/n".into())), "{body}");
        }
    }

    #[test]
    fn a_body_that_is_not_json_has_no_identity() {
        assert_eq!(parse_strict(b"user_id=a"), Ok(None));
        assert_eq!(parse_strict(b"{\"a\":1} trailing"), Ok(None));
        assert_eq!(parse_strict(b""), Ok(None));
    }
}
