#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    viaduct::fuzzing::pac(data);
});
