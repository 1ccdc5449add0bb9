#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| payguard_fuzz::targets::alipay_verify(data));
