//! Schema pieces every config section shares. A leaf module: it depends on nothing in payguard,
//! so any section (server, guard, store, channels) can use it without an import circle.

use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject, StringValidation};
use schemars::JsonSchema;

/// What a duration may look like in the config file: one or more `<number><unit>` parts, as
/// `humantime` parses them (`300ms`, `10s`, `1.5s`, `5m`, `1h 30m`, `2 days`).
pub(crate) const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]+)?\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$";

/// The schema of a duration field (`#[schemars(with = "DurationText")]` on a
/// `humantime_serde` field): a string matching [`DURATION_PATTERN`], so editors flag `300` and
/// `"300"` and `payguard check` can say which unit is missing.
pub(crate) struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> String {
        "Duration".to_string()
    }

    fn is_referenceable() -> bool {
        false
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            instance_type: Some(InstanceType::String.into()),
            metadata: Some(Box::new(Metadata {
                examples: vec!["300ms".into(), "10s".into(), "5m".into(), "1h 30m".into()],
                ..Metadata::default()
            })),
            string: Some(Box::new(StringValidation {
                pattern: Some(DURATION_PATTERN.to_string()),
                ..StringValidation::default()
            })),
            ..SchemaObject::default()
        }
        .into()
    }
}

/// Whether `node` (a schema object) describes a duration.
pub(crate) fn is_duration(node: &serde_json::Value) -> bool {
    node.get("pattern").and_then(|p| p.as_str()) == Some(DURATION_PATTERN)
}

/// A hint for a duration written without a unit: `300` or `"300"` → `use "300s"`.
pub(crate) fn missing_unit_hint(value: &serde_json::Value) -> Option<String> {
    let digits = match value {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    let plain_number = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1;
    plain_number.then(|| format!("{digits} has no unit: use \"{digits}s\" (or ms, m, h)"))
}
