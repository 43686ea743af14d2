//! libFuzzer entry point: arbitrary client paths through the normaliser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    coffer_storage_fuzz::parse_path(data);
});
