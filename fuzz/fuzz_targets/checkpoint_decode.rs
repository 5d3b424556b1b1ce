//! Fuzz target checkpoint_decode: checkpoint::decode: safetensors bytes (header precheck, tensors, metadata).
//! The contract and its bound: fuzz/src/lib.rs.

#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| cdl_fuzz::checkpoint_decode(input));
