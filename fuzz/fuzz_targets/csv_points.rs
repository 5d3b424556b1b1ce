//! Fuzz target csv_points: data::parse_csv_limited: CSV text of 2-D points, at most 64 rows.
//! The contract and its bound: fuzz/src/lib.rs.

#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| cdl_fuzz::csv_points(input));
