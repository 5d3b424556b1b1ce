//! Host-side random numbers in f64, as pure functions of (seed, stream words, index): `HostRng`
//! (uniforms and normals on `philox::philox4x32_10`, for host draws and CPU Monte-Carlo checks)
//! and `row_normals` (the GPU's row noise, widened). Not a general-purpose RNG: no hidden global
//! state, no `rand`.

use crate::philox::{philox4x32_10, philox_normal, Stream};

/// 2^-52.
const TWO_M52: f64 = 1.0 / 4_503_599_627_370_496.0;

/// Blocks below 2^31 feed uniforms, blocks from 2^31 feed normals.
const HALF_MASK: u32 = 0x7FFF_FFFF;

/// (k + ½)·2^-52 with k the top 52 bits of (hi, lo): in (0, 1), exact in f64.
fn u01(hi: u32, lo: u32) -> f64 {
    let k = (u64::from(hi) << 20) | (u64::from(lo) >> 12);
    (k as f64 + 0.5) * TWO_M52
}

/// A counter-based f64 generator over one Philox stream, with the same key/counter convention as
/// `philox::Stream`; used for host draws (α, ζ, labels, t).
///
/// Uniform `i` uses words (2(i%2), 2(i%2)+1) of block `i/2`, in the lower half of the block
/// range (blocks < 2^31); normal pair `j` uses all four words of block 2^31 + j, so uniforms and
/// normals of one stream never share bits. The `next_*` methods walk the same indices with two
/// cursors, so a sequence of `next_uniform` calls equals `uniform_at(0), uniform_at(1), ...`.
/// Each half holds 2^31 blocks; indices beyond wrap (use distinct stream words instead).
#[derive(Clone, Debug)]
pub struct HostRng {
    stream: Stream,
    cursor_u: u64,
    cursor_n: u64,
}

impl HostRng {
    /// A generator for `(seed, words)`; both cursors at 0.
    pub fn new(seed: u64, words: [u32; 3]) -> Self {
        Self { stream: Stream::new(seed, words), cursor_u: 0, cursor_n: 0 }
    }

    /// The stream this generator draws from.
    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// Philox block `block` of the stream: counter (block, w0, w1, w2), key (seed lo, seed hi),
    /// exactly as `philox::Stream` lays it out.
    pub fn block(&self, block: u32) -> [u32; 4] {
        let s = self.stream;
        let key = [s.seed as u32, (s.seed >> 32) as u32];
        philox4x32_10([block, s.words[0], s.words[1], s.words[2]], key)
    }

    /// Uniform `i` in the open interval (0, 1): (k + ½)·2^-52 with k the top 52 bits of two
    /// words. Exact in f64, never 0 or 1 (so ln u and logit u are finite).
    pub fn uniform_at(&self, i: u64) -> f64 {
        let w = self.block(((i / 2) as u32) & HALF_MASK);
        let j = 2 * (i % 2) as usize;
        u01(w[j], w[j + 1])
    }

    /// Normals 2j and 2j+1: the f64 Box-Muller transform of the two uniforms of block 2^31 + j.
    pub fn normal_pair_at(&self, j: u64) -> [f64; 2] {
        let w = self.block(!HALF_MASK | ((j as u32) & HALF_MASK));
        let (u1, u2) = (u01(w[0], w[1]), u01(w[2], w[3]));
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        [r * c, r * s]
    }

    /// Normal `i`.
    pub fn normal_at(&self, i: u64) -> f64 {
        self.normal_pair_at(i / 2)[(i % 2) as usize]
    }

    /// The next uniform of the sequence.
    pub fn next_uniform(&mut self) -> f64 {
        let u = self.uniform_at(self.cursor_u);
        self.cursor_u += 1;
        u
    }

    /// The next normal of the sequence (independent of the uniforms: disjoint blocks).
    pub fn next_normal(&mut self) -> f64 {
        let z = self.normal_at(self.cursor_n);
        self.cursor_n += 1;
        z
    }

    /// Fills `out` with the next normals. out: (n,)
    pub fn fill_normal(&mut self, out: &mut [f64]) {
        for o in out.iter_mut() {
            *o = self.next_normal();
        }
    }
}

/// out[i] = normal i of `stream` as the GPU draws it (Philox + integer Box-Muller, f32 exact,
/// resolution 2^-20), widened to f64. This is the CPU mirror of a row's noise. out: (d,)
pub fn row_normals(out: &mut [f64], stream: Stream) {
    let mut tmp = vec![0.0f32; out.len()];
    philox_normal(&mut tmp, stream);
    for (o, t) in out.iter_mut().zip(&tmp) {
        *o = f64::from(*t);
    }
}
