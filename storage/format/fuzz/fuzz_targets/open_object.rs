//! libFuzzer entry point: arbitrary bytes through the object decoder must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = coffer_format_fuzz::open_object(data);
});
