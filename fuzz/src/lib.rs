//! payguard's fuzz targets: the bodies live in [`targets`], shared with `tests/fuzz_smoke.rs`;
//! `fuzz_targets/*.rs` hand them to libFuzzer. Run them with `scripts/fuzz`.

pub mod targets;
