//! Counter-based Gaussian generator: Philox4x32-10 followed by an integer-only Box-Muller. Every
//! value is a pure function of `(seed, stream words, index)`, bit-identical on every target (CPU,
//! lavapipe, a browser's WebGPU), so a run can be replayed from its seed. This file and
//! `shaders/philox.wgsl` implement the same integer functions; tables are shared by value.

/// Philox multipliers and Weyl key increments (Salmon et al., SC'11, "Parallel random numbers").
pub const M0: u32 = 0xD251_1F53;
pub const M1: u32 = 0xCD9E_8D57;
pub const W0: u32 = 0x9E37_79B9;
pub const W1: u32 = 0xBB67_AE85;

/// `round(ln(1 + 2^-i) * 2^26)` for i = 1..=30.
pub const LN1P_Q26: [u32; 30] = [
    27210303, 14974910, 7904286, 4068450, 2065051, 1040468, 522251, 261633, 130944, 65504, 32760, 16382, 8192, 4096,
    2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1, 0, 0, 0, 0,
];
/// `round(atan(2^-i) * 2^29)` for i = 0..24.
pub const ATAN_Q29: [i32; 24] = [
    421657428, 248918915, 131521918, 66762579, 33510843, 16771758, 8387925, 4194219, 2097141, 1048575, 524288, 262144,
    131072, 65536, 32768, 16384, 8192, 4096, 2048, 1024, 512, 256, 128, 64,
];
/// `round(ln 2 * 2^26)`.
pub const LN2_Q26: u32 = 46516320;
/// `round(pi / 4 * 2^32)`.
pub const PI4_Q32: u32 = 3373259426;
/// `round(2^32 / K)`, K = prod_{i<24} sqrt(1 + 2^-2i) the CORDIC gain.
pub const INV_K_Q32: u32 = 2608131496;

/// Philox4x32 with 10 rounds (Random123's `philox4x32_R(10, ctr, key)`).
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..10 {
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// `-2 ln(u)` in Q6.26 for `u = (a | 1) / 2^32`, in (0, 44.4].
pub fn neg2ln_q26(a: u32) -> u32 {
    let v = a | 1;
    let lz = v.leading_zeros();
    let e = 31 - lz;
    // Mantissa in Q2.30, [1, 2). Multiply by factors (1 + 2^-i) while staying <= 2; then
    // ln(mantissa) = ln 2 - sum of ln(1 + 2^-i) taken.
    let mut m = (v << lz) >> 1;
    let mut acc = 0u32;
    for (i, ln1p) in LN1P_Q26.iter().enumerate() {
        let t = m + (m >> (i + 1));
        if t <= 1 << 31 {
            m = t;
            acc += ln1p;
        }
    }
    2 * (31 - e) * LN2_Q26 + 2 * acc
}

/// `floor(sqrt(l * 2^16))`: the square root of a Q6.26 value in Q3.21.
pub fn sqrt_q21(l: u32) -> u32 {
    (u64::from(l) << 16).isqrt() as u32
}

/// `r * (cos t, sin t)` in Q.27 for `r` in Q3.21 and `t = 2 pi b / 2^32`, by 24 CORDIC rotations
/// within the quadrant given by the top two bits of `b`.
pub fn cordic_q27(r_q21: u32, b: u32) -> (i32, i32) {
    let f = b & 0x3FFF_FFFF;
    let mut phi = ((u64::from(f) * u64::from(PI4_Q32)) >> 32) as i32;
    let mut x = (((u64::from(r_q21) << 6) * u64::from(INV_K_Q32)) >> 32) as i32;
    let mut y = 0i32;
    for (i, atan) in ATAN_Q29.iter().enumerate() {
        let (dx, dy) = (y >> i, x >> i);
        if phi >= 0 {
            x -= dx;
            y += dy;
            phi -= atan;
        } else {
            x += dx;
            y -= dy;
            phi += atan;
        }
    }
    match b >> 30 {
        0 => (x, y),
        1 => (-y, x),
        2 => (-x, -y),
        _ => (y, -x),
    }
}

/// A Q.27 value rounded to Q.20 and converted exactly to f32.
fn q27_to_f32(v: i32) -> f32 {
    ((v + 64) >> 7) as f32 * (1.0 / (1u32 << 20) as f32)
}

/// Two standard normals from two uniform words (Box-Muller).
///
/// Bit-identity across targets: GPU `log`, `sqrt`, `cos`, and even `a * b + c` (which a shader
/// compiler may fuse) are not correctly rounded in WGSL, so the transform from uniform bits to a
/// normal is done in exact integer arithmetic: `-2 ln u` by multiplicative normalisation
/// (shift-and-add with a table of `ln(1 + 2^-i)`, `neg2ln_q26`); `sqrt` by the digit-by-digit
/// integer square root (`sqrt_q21`); `(cos, sin)` by CORDIC rotation (shift-and-add with a table
/// of `atan(2^-i)`, `cordic_q27`). The result is an integer of at most 23 bits times `2^-20`; its
/// conversion to f32 and the scaling are exact. Resolution is `2^-20` (about 1e-6) and
/// |z| <= 6.67 (u >= 2^-32).
pub fn box_muller(a: u32, b: u32) -> [f32; 2] {
    let r = sqrt_q21(neg2ln_q26(a));
    let (c, s) = cordic_q27(r, b);
    [q27_to_f32(c), q27_to_f32(s)]
}

/// A uniform in (0, 1) from one word: `(2 * (x >> 9) + 1) * 2^-24`, exact in f32.
pub fn uniform(x: u32) -> f32 {
    ((x >> 9) * 2 + 1) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// Where a sequence of draws lives: a 64-bit seed (the Philox key) and three caller-chosen
/// counter words (for example step, row block and a tag), the fourth counter word being the
/// block index. Element `i` of a sequence is component `i % 4` of block `i / 4`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    pub seed: u64,
    pub words: [u32; 3],
}

impl Stream {
    pub fn new(seed: u64, words: [u32; 3]) -> Self {
        Self { seed, words }
    }

    fn block(&self, block: u32) -> [u32; 4] {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        philox4x32_10([block, self.words[0], self.words[1], self.words[2]], key)
    }

    /// Four normals of one block.
    pub fn normal4(&self, block: u32) -> [f32; 4] {
        let x = self.block(block);
        let [z0, z1] = box_muller(x[0], x[1]);
        let [z2, z3] = box_muller(x[2], x[3]);
        [z0, z1, z2, z3]
    }

    /// Four uniforms in (0, 1) of one block.
    pub fn uniform4(&self, block: u32) -> [f32; 4] {
        self.block(block).map(uniform)
    }
}

/// out[i] = normal i of `stream`, for i in 0..out.len(). out: (N,)
pub fn philox_normal(out: &mut [f32], stream: Stream) {
    for (b, chunk) in out.chunks_mut(4).enumerate() {
        let z = stream.normal4(b as u32);
        chunk.copy_from_slice(&z[..chunk.len()]);
    }
}

/// out[i] = uniform i of `stream`, in (0, 1). out: (N,)
pub fn philox_uniform(out: &mut [f32], stream: Stream) {
    for (b, chunk) in out.chunks_mut(4).enumerate() {
        let u = stream.uniform4(b as u32);
        chunk.copy_from_slice(&u[..chunk.len()]);
    }
}

/// A vector of `n` normals; the usual way tests and examples make inputs.
pub fn normal_vec(n: usize, seed: u64, tag: u32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    philox_normal(&mut v, Stream::new(seed, [tag, 0, 0]));
    v
}
