//! Fuzz target run_config: train::apply_config: a TOML run config of `cdl train --config`.
//! The contract and its bound: fuzz/src/lib.rs.

#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| cdl_fuzz::run_config(input));
