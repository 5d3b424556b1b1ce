//! Row inputs of a training step (spec §9b): each row reads one example of the data batch and
//! draws its noise from its own counter-based streams, so the GPU builds every row in parallel
//! and the CPU can draw the same numbers.
//!
//! For row r of example x: y = y_x x + y_n0 eps0 (the anchor's corruption, CDL only), then
//! input = a y + b eps and target = eps, with a = sqrt(s(alpha)), b = sqrt(s(-alpha)) computed
//! in f64 on the host. eps is element i of stream `noise`, eps0 element i of stream `noise0`
//! (both with the step's seed). Outputs are overwritten.

use super::philox::{philox_normal, Stream};

/// What one row needs, as uploaded (coefficients rounded once to f32).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSpec {
    /// Example of the data batch the row reads.
    pub example: u32,
    /// sqrt(s(alpha)).
    pub a: f32,
    /// sqrt(s(-alpha)).
    pub b: f32,
    pub y_x: f32,
    pub y_n0: f32,
    /// Counter words of the row's noise stream.
    pub noise: [u32; 3],
    /// Counter words of the anchor's corruption stream.
    pub noise0: [u32; 3],
}

/// u32 words per row in the uploaded table.
pub const ROW_WORDS: usize = 12;

/// The table the GPU reads: per row [example, a, b, y_x, y_n0 (f32 bits), noise, noise0, pad].
pub fn pack(rows: &[RowSpec]) -> Vec<u32> {
    let mut t = Vec::with_capacity(rows.len() * ROW_WORDS);
    for r in rows {
        t.extend([r.example, r.a.to_bits(), r.b.to_bits(), r.y_x.to_bits(), r.y_n0.to_bits()]);
        t.extend(r.noise);
        t.extend(r.noise0);
        t.push(0);
    }
    t
}

/// inputs, targets: (R, N); x: (B, N).
pub fn row_inputs(inputs: &mut [f32], targets: &mut [f32], x: &[f32], rows: &[RowSpec], seed: u64, n: usize) {
    let (mut e, mut e0) = (vec![0f32; n], vec![0f32; n]);
    for (r, row) in rows.iter().enumerate() {
        philox_normal(&mut e, Stream::new(seed, row.noise));
        philox_normal(&mut e0, Stream::new(seed, row.noise0));
        let xe = &x[row.example as usize * n..(row.example as usize + 1) * n];
        for i in 0..n {
            inputs[r * n + i] = row.a * (row.y_x * xe[i] + row.y_n0 * e0[i]) + row.b * e[i];
            targets[r * n + i] = e[i];
        }
    }
}
