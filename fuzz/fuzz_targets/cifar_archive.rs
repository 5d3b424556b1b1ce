//! Fuzz target cifar_archive: cifar::read_archive_with: an options byte (split, records per batch), then a .tar.gz.
//! The contract and its bound: fuzz/src/lib.rs.

#![no_main]

libfuzzer_sys::fuzz_target!(|input: &[u8]| cdl_fuzz::cifar_archive(input));
