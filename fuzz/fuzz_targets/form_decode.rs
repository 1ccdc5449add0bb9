#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| payguard_fuzz::targets::form_decode(data));
