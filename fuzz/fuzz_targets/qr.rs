#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| roger_proto::fuzzing::qr(data));
