//! The contract between the host's loss plan (`loss::plan_step`) and the GPU's training step:
//! one `RowSpec` per network evaluation, packed into the table the row-input kernel reads, and
//! the `LossHead` sizes and scalars the loss-head kernels read (math §9b).

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

/// Sizes and scalars of one step's loss head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossHead<T> {
    /// S standard rows.
    pub n_std: usize,
    /// K anchors.
    pub anchors: usize,
    /// M integration points per anchor.
    pub points: usize,
    pub lambda_std: T,
    pub lambda_cdl: T,
    /// 1/B (authors') or 1/K.
    pub cdl_norm: T,
    /// Constant part of the standard loss (h_G or 0).
    pub std_const: T,
}

impl<T> LossHead<T> {
    /// Rows of the step: S + 2KM.
    pub fn rows(&self) -> usize {
        self.n_std + 2 * self.anchors * self.points
    }
}

impl LossHead<f64> {
    /// The scalars rounded once to f32, as the GPU head reads them.
    pub fn to_f32(&self) -> LossHead<f32> {
        LossHead {
            n_std: self.n_std,
            anchors: self.anchors,
            points: self.points,
            lambda_std: self.lambda_std as f32,
            lambda_cdl: self.lambda_cdl as f32,
            cdl_norm: self.cdl_norm as f32,
            std_const: self.std_const as f32,
        }
    }
}
