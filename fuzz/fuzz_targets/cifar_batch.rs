//! Fuzz target cifar_batch: cifar::parse_batch: one CIFAR-10 binary batch (3073-byte records).
//! The contract and its bound: fuzz/src/lib.rs.

#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| cdl_fuzz::cifar_batch(input));
