//! Configuration: the YAML file format, its JSON Schema, and the internal config the proxy uses.

pub mod secret;
