//! Helpers shared by the channels' unit tests.

use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;

/// The instant `unix` seconds after the epoch.
pub(crate) fn at(unix: i64) -> Timestamp {
    Timestamp::from_second(unix).unwrap()
}

/// A header map from name/value pairs, keeping repeated names (to test duplicate headers).
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}
