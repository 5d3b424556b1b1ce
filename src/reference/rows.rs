//! CPU reference of the row inputs of a training step (math.md §9b): each row reads one example
//! of the data batch and draws its noise from its own counter-based streams, so the GPU builds
//! every row in parallel and the CPU draws the same numbers. Outputs are overwritten.

/// The oracle takes the host's own row table.
pub use crate::diffusion::rows::{pack, RowSpec, ROW_WORDS};
use crate::philox::{philox_normal, Stream};

/// For row r of example x: y = y_x x + y_n0 eps0 (the anchor's corruption, CDL only), then
/// input = a y + b eps and target = eps, with a = sqrt(s(alpha)), b = sqrt(s(-alpha)) computed
/// in f64 on the host. eps is element i of stream `noise`, eps0 element i of stream `noise0`
/// (both with the step's seed).
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
