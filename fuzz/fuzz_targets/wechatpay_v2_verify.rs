#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| payguard_fuzz::targets::wechatpay_v2_verify(data));
