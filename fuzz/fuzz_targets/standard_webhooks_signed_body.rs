#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| payguard_fuzz::targets::standard_webhooks_signed_body(data));
