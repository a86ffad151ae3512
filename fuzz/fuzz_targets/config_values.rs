#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| balancer::fuzzing::config_values(data));
