//! The weights check of data-parallel training (`train::dist`): the hash tells weights apart bit
//! for bit, and a rank whose weights differ from rank 0's is named.

use std::cell::RefCell;

use cdl::train::dist::{check_same_weights, hash_f32, Collective};

/// Ranks whose hashes are given: `gather_u64` returns them with the caller's own at its place.
struct Ranks {
    rank: usize,
    hashes: RefCell<Vec<u64>>,
}

impl Collective for Ranks {
    fn rank(&self) -> usize {
        self.rank
    }
    fn ranks(&self) -> usize {
        self.hashes.borrow().len()
    }
    fn sum_f32(&self, _buf: &mut [f32]) -> Result<(), String> {
        Err("not used".into())
    }
    fn gather_u64(&self, value: u64) -> Result<Vec<u64>, String> {
        self.hashes.borrow_mut()[self.rank] = value;
        Ok(self.hashes.borrow().clone())
    }
}

#[test]
fn the_weights_hash_tells_every_bit() {
    let w = [0.5f32, -1.25, 3.0e-8, 7.0];
    assert_eq!(hash_f32(&w), hash_f32(&w.clone()));
    let mut last_bit = w;
    last_bit[2] = f32::from_bits(w[2].to_bits() ^ 1);
    assert_ne!(hash_f32(&w), hash_f32(&last_bit));
    assert_ne!(hash_f32(&[0.0]), hash_f32(&[-0.0]));
    assert_ne!(hash_f32(&[1.0, 2.0]), hash_f32(&[2.0, 1.0]));
}

#[test]
fn a_rank_with_other_weights_is_named() {
    let h = hash_f32(&[1.0, 2.0]);
    let same = Ranks { rank: 1, hashes: RefCell::new(vec![h, 0, h]) };
    assert_eq!(check_same_weights(&same, h, 40), Ok(()));
    let other = Ranks { rank: 0, hashes: RefCell::new(vec![0, h, h ^ 1, h]) };
    let e = check_same_weights(&other, h, 40).unwrap_err();
    assert!(e.contains("step 40") && e.contains("rank(s) 2 differ") && !e.contains("1,"), "{e}");
}
