//! Dense symmetric linear algebra in f64 for the feature statistics of `fd` and `kid`: the
//! symmetric eigen-decomposition (`eigh`: Householder tridiagonalisation, then implicit QL),
//! products A·Bᵀ, and the cyclic Jacobi solver kept as the slow reference the tests compare
//! against. Not here: LAPACK, divide and conquer, blocking beyond cache tiles.

use super::EvalError;

/// Iterations of implicit QL allowed per eigenvalue; LAPACK `dsteqr` allows 30 per eigenvalue on
/// average and convergence takes one to three.
const MAX_QL_ITERATIONS: usize = 60;
/// Width of the column tiles of the eigenvector matrix the QL rotations are applied to: n × 32 f64
/// (512 KiB at n = 2048) stays in a core's L2 cache while a batch of rotations sweeps it.
const TILE: usize = 32;
/// Rotations recorded before they are applied to the eigenvector tiles (24 bytes each).
const ROTATION_BATCH: usize = 1 << 16;
/// Trailing blocks of at least this many rows split their update over threads (at most
/// `MAX_TRIDIAGONAL_LANES`: the step is short, and a thread per core and step costs more than
/// it saves beyond a few).
const PARALLEL_ROWS: usize = 256;
const MAX_TRIDIAGONAL_LANES: usize = 8;
/// Rows of Qᵀ accumulated together (each reflector is read once per group, not once per row).
const ACCUMULATE_ROWS: usize = 16;
/// Tiles of the products A·Bᵀ: rows of A per task, and the length of the k-chunks.
const ROWS_PER_TASK: usize = 32;
const K_CHUNK: usize = 256;
/// Jacobi sweeps before giving up; convergence is quadratic and takes well under 20 in practice.
const JACOBI_SWEEPS: usize = 60;
/// Off-diagonal mass, relative to the whole matrix, at which Jacobi stops.
const JACOBI_TOL: f64 = 1e-24;

// ---------------------------------------------------------------------------------------------
// Public API

/// The eigen-decomposition A = Vᵀ diag(values) V of a symmetric d×d matrix.
#[derive(Clone, Debug)]
pub struct SymmetricEigen {
    pub dim: usize,
    /// Eigenvalues in ascending order. (d,)
    pub values: Vec<f64>,
    /// Unit eigenvectors as rows: row k (`vectors[k·d..(k+1)·d]`) belongs to `values[k]`. (d, d)
    pub vectors: Vec<f64>,
}

/// Eigenvalues (ascending) and eigenvectors (rows) of the symmetric `a` (d, d). Reads (A + Aᵀ)/2,
/// so a matrix that is symmetric only up to rounding is fine.
///
/// Math: Golub & Van Loan, *Matrix Computations* (4th ed.), Alg. 8.3.1 (tridiagonalisation, each
/// step's rank-2 update fused with the next step's symmetric matrix-vector product) and §8.3.5
/// (implicit shifted QL, in the form of EISPACK `tql2` as JAMA writes it); Q accumulated backward,
/// as LAPACK's `dorgtr` does. Cost: about 7·d³ flops with eigenvectors, most of it in applying the
/// QL rotations; (4/3)·d³ for eigenvalues only. Native builds spread the row updates of the
/// tridiagonalisation, the accumulation of Q, the rotations and the products over the cores (std
/// scoped threads); wasm32 runs them on one.
pub fn eigh(a: &[f64], d: usize) -> Result<SymmetricEigen, EvalError> {
    let mut work = symmetrised(a, d)?;
    let (mut diag, off, tau) = tridiagonalise(&mut work, d);
    let padded = d.div_ceil(TILE) * TILE;
    let mut tiles = accumulate_q(&work, &tau, d, padded);
    let mut apply = |rots: &[Rotation]| par_for_each(tiles.iter_mut().collect(), |t| rotate_tile(t, rots));
    implicit_ql(&mut diag, off, Some(&mut apply))?;
    // Sort ascending; row k of the result is Qᵀ-row order[k] after the rotations.
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| diag[i].total_cmp(&diag[j]));
    let values = order.iter().map(|&i| diag[i]).collect();
    let mut vectors = vec![0.0; d * d];
    for (t, tile) in tiles.iter().enumerate() {
        let (c0, c1) = (t * TILE, ((t + 1) * TILE).min(d));
        for (k, &src) in order.iter().enumerate() {
            vectors[k * d + c0..k * d + c1].copy_from_slice(&tile[src * TILE..src * TILE + (c1 - c0)]);
        }
    }
    Ok(SymmetricEigen { dim: d, values, vectors })
}

/// Eigenvalues only (ascending) of the symmetric `a` (d, d): the tridiagonalisation and O(d²) QL.
pub fn eigvalsh(a: &[f64], d: usize) -> Result<Vec<f64>, EvalError> {
    let mut work = symmetrised(a, d)?;
    let (mut diag, off, _) = tridiagonalise(&mut work, d);
    implicit_ql(&mut diag, off, None)?;
    diag.sort_by(f64::total_cmp);
    Ok(diag)
}

/// C = A·Bᵀ: C[i][j] = a_i · b_j for the rows of A (m, k) and B (n, k). C: (m, n)
pub fn matmul_abt(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    product(a, b, m, n, k, false)
}

/// C = A·Bᵀ when the caller knows C is symmetric (A·Aᵀ, or W·Fᵀ with W = F·S, S symmetric):
/// only the upper triangle is computed, the lower one is its mirror, so C is exactly symmetric.
pub fn matmul_abt_symmetric(a: &[f64], b: &[f64], n: usize, k: usize) -> Vec<f64> {
    product(a, b, n, n, k, true)
}

/// Eigenvalues and eigenvectors (columns of the returned (d, d) matrix) of the symmetric `a` by
/// cyclic Jacobi, O(d³) per sweep: the slow, simple reference `eigh` is tested against.
pub fn jacobi_eigen(a: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>), EvalError> {
    let mut a = symmetrised_full(a, d)?;
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _ in 0..JACOBI_SWEEPS {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off <= JACOBI_TOL * total {
            return Ok(((0..d).map(|i| a[i * d + i]).collect(), v));
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, the symmetric Schur pair).
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    Err(EvalError::Invalid(format!("the Jacobi eigen-solver did not converge in {JACOBI_SWEEPS} sweeps")))
}

// ---------------------------------------------------------------------------------------------
// Guards

/// The upper triangle of (A + Aᵀ)/2 in full row-major storage (the lower triangle is unused).
fn symmetrised(a: &[f64], d: usize) -> Result<Vec<f64>, EvalError> {
    check_square(a, d)?;
    let mut w = vec![0.0; d * d];
    for i in 0..d {
        for j in i..d {
            w[i * d + j] = 0.5 * (a[i * d + j] + a[j * d + i]);
        }
    }
    Ok(w)
}

/// (A + Aᵀ)/2, both triangles.
fn symmetrised_full(a: &[f64], d: usize) -> Result<Vec<f64>, EvalError> {
    let mut w = symmetrised(a, d)?;
    for i in 0..d {
        for j in 0..i {
            w[i * d + j] = w[j * d + i];
        }
    }
    Ok(w)
}

fn check_square(a: &[f64], d: usize) -> Result<(), EvalError> {
    if a.len() != d * d {
        return Err(EvalError::Shape(format!("{} values for a {d}×{d} matrix", a.len())));
    }
    if let Some(index) = a.iter().position(|v| !v.is_finite()) {
        return Err(EvalError::NonFinite { what: "matrix", index, value: a[index] });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Householder tridiagonalisation (Golub & Van Loan Alg. 8.3.1)

/// Reduces the symmetric `a` (upper triangle of a row-major (n, n)) to T = Qᵀ A Q, tridiagonal.
/// Returns T's diagonal (n,) and off-diagonal (n − 1,) and the reflectors' τ (n − 2,); reflector
/// k is H_k = I − τ_k v_k v_kᵀ with v_k stored in row k of `a`, columns k+1..n (v_k[k+1] = 1).
/// Q = H_0 H_1 ⋯ H_{n−3}.
///
/// Step k forms p = τ B v on the trailing block B, w = p − (τ/2)(pᵀv) v, and B ← B − v wᵀ − w vᵀ.
/// The update of each row is fused with the next step's product B′v′ (v′ comes from the first
/// trailing row, which is updated first), so the trailing block is read once per step.
fn tridiagonalise(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut diag = vec![0.0; n];
    let mut off = vec![0.0; n.saturating_sub(1)];
    let mut tau = vec![0.0; n.saturating_sub(2)];
    let mut p = vec![0.0; n];
    let mut w = vec![0.0; n];
    let mut ybufs =
        if n >= PARALLEL_ROWS { vec![vec![0.0; n]; threads().min(MAX_TRIDIAGONAL_LANES)] } else { Vec::new() };
    if n >= 3 {
        let (t, beta) = householder(&mut a[1..n]);
        (tau[0], off[0]) = (t, beta);
        let (head, tail) = a.split_at_mut(n);
        symv_upper(tail, n, 1, &head[1..n], &mut p[1..]);
        p[1..].iter_mut().for_each(|x| *x *= t);
    }
    for k in 0..n.saturating_sub(2) {
        diag[k] = a[k * n + k];
        let t = tau[k];
        let (head, tail) = a.split_at_mut((k + 1) * n);
        let v = &head[k * n + k + 1..(k + 1) * n]; // absolute columns k+1..n
        let alpha = -0.5 * t * dot(&p[k + 1..], v);
        for ((wj, pj), vj) in w[k + 1..].iter_mut().zip(&p[k + 1..]).zip(v) {
            *wj = pj + alpha * vj;
        }
        // The first trailing row (k+1), then the next reflector from it.
        let i = k + 1;
        let row = &mut tail[i..n];
        rank2_update(row, &v[i - k - 1..], &w[i..], v[i - k - 1], w[i]);
        let next = i + 2 < n;
        if next {
            let (t2, beta) = householder(&mut tail[i + 1..n]);
            (tau[i], off[i]) = (t2, beta);
        } else {
            off[i] = tail[i + 1];
        }
        // Rows k+2..n: the update fused with y = B′ v′ over the next trailing block; large blocks
        // are split into row ranges of equal work, each with its own y, summed afterwards.
        let (row_i, rest) = tail.split_at_mut(n);
        let vn = next.then_some(&row_i[..]); // v′ at absolute columns i+1..n
        let y = &mut p;
        y[i + 1..].iter_mut().for_each(|x| *x = 0.0);
        let lanes = if next && n - i > PARALLEL_ROWS { ybufs.len() } else { 1 };
        if lanes <= 1 {
            update_rows(rest, i + 1, n, k, v, &w, vn, y);
        } else {
            let mut items = Vec::with_capacity(lanes);
            let (mut rows, mut first) = (rest, i + 1);
            for (t, buf) in ybufs.iter_mut().enumerate() {
                // Row r costs n − r; cut where the remaining work is shared equally.
                let left = lanes - t;
                let work: usize = (n - first) * (n - first + 1) / 2;
                let mut end = first;
                let mut acc = 0;
                while end < n && (left == 1 || acc < work / left) {
                    acc += n - end;
                    end += 1;
                }
                let (chunk, after) = std::mem::take(&mut rows).split_at_mut((end - first) * n);
                buf[i + 1..].iter_mut().for_each(|x| *x = 0.0);
                items.push((first, chunk, buf));
                (rows, first) = (after, end);
            }
            let w = &w;
            par_for_each(items, |(first, chunk, buf)| update_rows(chunk, first, n, k, v, w, vn, buf));
            for buf in &ybufs {
                y[i + 1..].iter_mut().zip(&buf[i + 1..]).for_each(|(a, b)| *a += b);
            }
        }
        if next {
            let t2 = tau[i];
            y[i + 1..].iter_mut().for_each(|x| *x *= t2);
        }
    }
    if n >= 2 {
        diag[n - 2] = a[(n - 2) * n + n - 2];
        off[n - 2] = a[(n - 2) * n + n - 1];
    }
    if n >= 1 {
        diag[n - 1] = a[n * n - 1];
    }
    (diag, off, tau)
}

/// Rows `first..` of the trailing block (`rows` starts at row `first`, n columns): B −= v wᵀ + w vᵀ
/// on their upper parts, and with `vn` = Some(v′) also y += (these rows' share of) B′ v′, y and
/// v′ indexed by absolute column. v: reflector k at columns k+1..n.
#[allow(clippy::too_many_arguments)]
fn update_rows(
    rows: &mut [f64],
    first: usize,
    n: usize,
    k: usize,
    v: &[f64],
    w: &[f64],
    vn: Option<&[f64]>,
    y: &mut [f64],
) {
    for (o, row) in rows.chunks_exact_mut(n).enumerate() {
        let r = first + o;
        let row = &mut row[r..];
        let (vr, wr) = (v[r - k - 1], w[r]);
        match vn {
            Some(x) => {
                let acc = fused_row(row, &v[r - k - 1..], &w[r..], &x[r..], &mut y[r..], vr, wr, x[r]);
                y[r] += acc;
            }
            None => rank2_update(row, &v[r - k - 1..], &w[r..], vr, wr),
        }
    }
}

/// The reflector H = I − τ v vᵀ with H x = β e₁ (LAPACK `dlarfg`): x becomes v (v[0] = 1).
fn householder(x: &mut [f64]) -> (f64, f64) {
    let alpha = x[0];
    let norm = dot(&x[1..], &x[1..]).sqrt();
    x[0] = 1.0;
    if norm == 0.0 {
        return (0.0, alpha);
    }
    let beta = -alpha.hypot(norm).copysign(alpha);
    let scale = 1.0 / (alpha - beta);
    x[1..].iter_mut().for_each(|v| *v *= scale);
    ((beta - alpha) / beta, beta)
}

/// y = B x for the symmetric B stored as the upper triangle of rows `start..n` of the row-major
/// `a` (n columns; `a` begins at row `start`), x and y indexed from `start`.
fn symv_upper(a: &[f64], n: usize, start: usize, x: &[f64], y: &mut [f64]) {
    y.iter_mut().for_each(|v| *v = 0.0);
    for r in start..n {
        let row = &a[(r - start) * n + r..(r - start + 1) * n];
        let o = r - start;
        let xr = x[o];
        let acc = row[0] * xr + dot(&row[1..], &x[o + 1..]);
        for (yj, aj) in y[o + 1..].iter_mut().zip(&row[1..]) {
            *yj += aj * xr;
        }
        y[o] += acc;
    }
}

/// row[j] −= v_r w_j + w_r v_j over the row's upper part (row[0] is the diagonal).
fn rank2_update(row: &mut [f64], v: &[f64], w: &[f64], vr: f64, wr: f64) {
    for ((a, vj), wj) in row.iter_mut().zip(v).zip(w) {
        *a -= vr * wj + wr * vj;
    }
}

/// `rank2_update` of one row fused with its share of y = B′x (upper storage): returns the row's
/// dot product with x (diagonal included) and adds row[j]·x_r to y[j] for j > r.
#[allow(clippy::too_many_arguments)]
fn fused_row(row: &mut [f64], v: &[f64], w: &[f64], x: &[f64], y: &mut [f64], vr: f64, wr: f64, xr: f64) -> f64 {
    let a0 = row[0] - (vr * w[0] + wr * v[0]);
    row[0] = a0;
    let mut lanes = [0.0; 4];
    let len = row.len() - 1;
    let (row, v, w, x, y) = (&mut row[1..], &v[1..=len], &w[1..=len], &x[1..=len], &mut y[1..=len]);
    let body = len / 4 * 4;
    for ((((r, vj), wj), xj), yj) in row[..body]
        .chunks_exact_mut(4)
        .zip(v[..body].chunks_exact(4))
        .zip(w[..body].chunks_exact(4))
        .zip(x[..body].chunks_exact(4))
        .zip(y[..body].chunks_exact_mut(4))
    {
        for l in 0..4 {
            let a = r[l] - (vr * wj[l] + wr * vj[l]);
            r[l] = a;
            lanes[l] += a * xj[l];
            yj[l] += a * xr;
        }
    }
    let mut acc = a0 * xr + (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for j in body..len {
        let a = row[j] - (vr * w[j] + wr * v[j]);
        row[j] = a;
        acc += a * x[j];
        y[j] += a * xr;
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Q, accumulated backward (LAPACK dorg2l): column j of Q is H_0 ⋯ H_{j−1} e_j

/// Qᵀ as column tiles: tile t holds, for every row i of Qᵀ (column i of Q), components
/// t·TILE..(t+1)·TILE, zero-padded to `padded` components. (padded / TILE tiles of (n, TILE))
fn accumulate_q(a: &[f64], tau: &[f64], n: usize, padded: usize) -> Vec<Vec<f64>> {
    // Qᵀ row-major, in groups of rows; each group applies every reflector it needs.
    let mut qt = vec![0.0; n * n];
    let groups: Vec<(usize, &mut [f64])> =
        qt.chunks_mut(ACCUMULATE_ROWS * n.max(1)).enumerate().map(|(g, c)| (g * ACCUMULATE_ROWS, c)).collect();
    par_for_each(groups, |(j0, rows)| {
        let count = rows.len() / n;
        for (r, row) in rows.chunks_exact_mut(n).enumerate() {
            row[j0 + r] = 1.0;
        }
        // Row j needs reflectors k < j (those with k + 1 ≤ j), in the order k = j − 1 down to 0.
        let last = (j0 + count).saturating_sub(2).min(tau.len().saturating_sub(1));
        if tau.is_empty() || j0 + count < 2 {
            return;
        }
        for k in (0..=last).rev() {
            let v = &a[k * n + k + 1..(k + 1) * n];
            let t = tau[k];
            for (r, row) in rows.chunks_exact_mut(n).enumerate() {
                if j0 + r > k {
                    let q = &mut row[k + 1..];
                    let s = t * dot(q, v);
                    for (qi, vi) in q.iter_mut().zip(v) {
                        *qi -= s * vi;
                    }
                }
            }
        }
    });
    let mut tiles = vec![vec![0.0; n * TILE]; padded / TILE];
    for (t, tile) in tiles.iter_mut().enumerate() {
        let (c0, c1) = (t * TILE, ((t + 1) * TILE).min(n));
        for i in 0..n {
            tile[i * TILE..i * TILE + (c1 - c0)].copy_from_slice(&qt[i * n + c0..i * n + c1]);
        }
    }
    tiles
}

// ---------------------------------------------------------------------------------------------
// Implicit QL on the tridiagonal (EISPACK tql2 / JAMA), rotations recorded and applied in batches

/// A plane rotation of rows i and i+1 of Qᵀ: (x, y) ← (c x − s y, s x + c y).
#[derive(Clone, Copy)]
struct Rotation {
    i: u32,
    c: f64,
    s: f64,
}

/// Where `implicit_ql` sends its rotations, batch by batch.
type RotationSink<'a> = dyn FnMut(&[Rotation]) + 'a;

/// Eigenvalues of the tridiagonal (diag, off) into `diag` (unsorted). With `apply`, every rotation
/// is passed on in order (in batches of `ROTATION_BATCH`), so applying them to Qᵀ gives the
/// eigenvectors as its rows.
fn implicit_ql(diag: &mut [f64], off: Vec<f64>, mut apply: Option<&mut RotationSink>) -> Result<(), EvalError> {
    let n = diag.len();
    let d = diag;
    let mut e = off;
    e.push(0.0); // e[i] couples d[i] and d[i+1]; e[n−1] = 0
    e.truncate(n);
    let mut batch: Vec<Rotation> = Vec::with_capacity(if apply.is_some() { ROTATION_BATCH } else { 0 });
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    for l in 0..n {
        // The first negligible off-diagonal element at or after l.
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > f64::EPSILON * tst1 {
            m += 1;
        }
        let mut iter = 0;
        // m > l: d[l] is not yet an eigenvalue; sweep until e[l] is negligible.
        let mut converged = m == l;
        while !converged {
            iter += 1;
            if iter > MAX_QL_ITERATIONS {
                return Err(EvalError::Invalid(format!(
                    "the QL eigen-solver did not converge for eigenvalue {l} in {MAX_QL_ITERATIONS} iterations"
                )));
            }
            // The implicit (Wilkinson-type) shift from the leading 2×2 block.
            let g = d[l];
            let mut p = (d[l + 1] - g) / (2.0 * e[l]);
            let mut r = p.hypot(1.0).copysign(p);
            if p == 0.0 {
                r = 1.0;
            }
            d[l] = e[l] / (p + r);
            d[l + 1] = e[l] * (p + r);
            let dl1 = d[l + 1];
            let h = g - d[l];
            d[l + 2..].iter_mut().for_each(|x| *x -= h);
            f += h;
            // One implicit QL sweep from m − 1 down to l.
            p = d[m];
            let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
            let el1 = e[l + 1];
            let (mut s, mut s2) = (0.0, 0.0);
            for i in (l..m).rev() {
                c3 = c2;
                c2 = c;
                s2 = s;
                let g = c * e[i];
                let h = c * p;
                r = p.hypot(e[i]);
                e[i + 1] = s * r;
                s = e[i] / r;
                c = p / r;
                p = c * d[i] - s * g;
                d[i + 1] = h + s * (c * g + s * d[i]);
                if let Some(apply) = apply.as_mut() {
                    batch.push(Rotation { i: i as u32, c, s });
                    if batch.len() == ROTATION_BATCH {
                        apply(&batch);
                        batch.clear();
                    }
                }
            }
            p = -s * s2 * c3 * el1 * e[l] / dl1;
            e[l] = s * p;
            d[l] = c * p;
            converged = e[l].abs() <= f64::EPSILON * tst1;
            if !(d[l].is_finite() && e[l].is_finite()) {
                return Err(EvalError::Invalid("the QL eigen-solver produced a non-finite value".into()));
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    if let Some(apply) = apply.as_mut() {
        if !batch.is_empty() {
            apply(&batch);
        }
    }
    Ok(())
}

/// Applies `rots` in order to one column tile of Qᵀ. tile: (n, TILE)
fn rotate_tile(tile: &mut [f64], rots: &[Rotation]) {
    for r in rots {
        let i = r.i as usize;
        let (lo, hi) = tile.split_at_mut((i + 1) * TILE);
        let Ok(x) = <&mut [f64; TILE]>::try_from(&mut lo[i * TILE..]) else { continue };
        let Ok(y) = <&mut [f64; TILE]>::try_from(&mut hi[..TILE]) else { continue };
        let (c, s) = (r.c, r.s);
        for (xv, yv) in x.iter_mut().zip(y.iter_mut()) {
            let h = *yv;
            *yv = s * *xv + c * h;
            *xv = c * *xv - s * h;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Products A·Bᵀ, tiled: rows of A per task, k in chunks, 2×2 blocks of dot products

fn product(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, symmetric: bool) -> Vec<f64> {
    assert!(
        a.len() == m * k && b.len() == n * k,
        "matmul_abt: ({m}, {k}) · ({n}, {k})ᵀ with {} and {}",
        a.len(),
        b.len()
    );
    let mut c = vec![0.0; m * n];
    if n == 0 {
        return c;
    }
    let tasks: Vec<(usize, &mut [f64])> =
        c.chunks_mut(ROWS_PER_TASK * n).enumerate().map(|(t, rows)| (t * ROWS_PER_TASK, rows)).collect();
    par_for_each(tasks, |(i0, out)| {
        let rows = out.len() / n;
        let j_start = if symmetric { i0 } else { 0 };
        for k0 in (0..k).step_by(K_CHUNK) {
            let k1 = (k0 + K_CHUNK).min(k);
            let arow = |i: usize| &a[i * k + k0..i * k + k1];
            let brow = |j: usize| &b[j * k + k0..j * k + k1];
            let mut j = j_start;
            while j < n {
                let pair = j + 1 < n;
                let mut i = 0;
                while i < rows {
                    if pair && i + 1 < rows {
                        let s = dot2x2(arow(i0 + i), arow(i0 + i + 1), brow(j), brow(j + 1));
                        out[i * n + j] += s[0];
                        out[i * n + j + 1] += s[1];
                        out[(i + 1) * n + j] += s[2];
                        out[(i + 1) * n + j + 1] += s[3];
                        i += 2;
                    } else {
                        out[i * n + j] += dot(arow(i0 + i), brow(j));
                        if pair {
                            out[i * n + j + 1] += dot(arow(i0 + i), brow(j + 1));
                        }
                        i += 1;
                    }
                }
                j += if pair { 2 } else { 1 };
            }
        }
    });
    if symmetric {
        for i in 0..n {
            for j in 0..i {
                c[i * n + j] = c[j * n + i];
            }
        }
    }
    c
}

/// [a0·b0, a0·b1, a1·b0, a1·b1] with four lanes per dot product.
fn dot2x2(a0: &[f64], a1: &[f64], b0: &[f64], b1: &[f64]) -> [f64; 4] {
    let mut acc = [[0.0; 4]; 4];
    let body = a0.len() / 4 * 4;
    for (((x0, x1), y0), y1) in a0[..body]
        .chunks_exact(4)
        .zip(a1[..body].chunks_exact(4))
        .zip(b0[..body].chunks_exact(4))
        .zip(b1[..body].chunks_exact(4))
    {
        for l in 0..4 {
            acc[0][l] += x0[l] * y0[l];
            acc[1][l] += x0[l] * y1[l];
            acc[2][l] += x1[l] * y0[l];
            acc[3][l] += x1[l] * y1[l];
        }
    }
    let mut out = acc.map(|v| (v[0] + v[1]) + (v[2] + v[3]));
    for t in body..a0.len() {
        out[0] += a0[t] * b0[t];
        out[1] += a0[t] * b1[t];
        out[2] += a1[t] * b0[t];
        out[3] += a1[t] * b1[t];
    }
    out
}

/// a · b with four lanes (vectorisable; the summation order differs from a plain loop).
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0; 4];
    let body = a.len().min(b.len()) / 4 * 4;
    for (x, y) in a[..body].chunks_exact(4).zip(b[..body].chunks_exact(4)) {
        for l in 0..4 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f64 = a[body..].iter().zip(&b[body..]).map(|(x, y)| x * y).sum();
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

// ---------------------------------------------------------------------------------------------
// Threads

/// Calls `f` on every item: natively spread round-robin over the available cores (std scoped
/// threads), on wasm32 in order on the calling thread.
pub(crate) fn par_for_each<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync) {
    let lanes = threads().min(items.len());
    if lanes <= 1 {
        items.into_iter().for_each(f);
        return;
    }
    spread(items, lanes, &f);
}

#[cfg(not(target_arch = "wasm32"))]
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(target_arch = "wasm32")]
fn threads() -> usize {
    1
}

#[cfg(not(target_arch = "wasm32"))]
fn spread<T: Send>(items: Vec<T>, lanes: usize, f: &(impl Fn(T) + Sync)) {
    let mut per: Vec<Vec<T>> = (0..lanes).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        per[i % lanes].push(item);
    }
    std::thread::scope(|s| {
        for lane in per {
            s.spawn(move || lane.into_iter().for_each(f));
        }
    });
}

#[cfg(target_arch = "wasm32")]
fn spread<T: Send>(items: Vec<T>, _lanes: usize, f: &(impl Fn(T) + Sync)) {
    items.into_iter().for_each(f);
}
