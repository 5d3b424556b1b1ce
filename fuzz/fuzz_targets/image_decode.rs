//! Fuzz target image_decode: images::decode_image_with: an options byte (size, channels, exact), then PNG/JPEG bytes.
//! The contract and its bound: fuzz/src/lib.rs.

#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| cdl_fuzz::image_decode(input));
