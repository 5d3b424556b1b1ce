//! Data-parallel training (ARCHITECTURE.md "Beyond one machine"): R processes, the ranks, each on
//! its own adapter, train one model as one run with the global batch would. Every rank plans the
//! whole step (a pure function of seed and step), gathers the whole batch and evaluates its shard
//! of the rows (`RowPlan::shard`: a block of the standard rows, a block of the anchors with their
//! 2M rows); the gradients are summed across ranks before the norm, clipping and Adam, so every
//! rank applies the same update to the same weights. The engine that moves the numbers is the
//! caller's (`cdl`'s MPI build, src/cli/mpi.rs); this layer only names what it must do.

/// The collective operations a data-parallel run needs, over all ranks of one job. Every rank
/// calls them in the same order with the same lengths.
pub trait Collective {
    /// This process's rank, 0..ranks.
    fn rank(&self) -> usize;
    /// Processes in the job.
    fn ranks(&self) -> usize;
    /// Replaces `buf` by its element-wise sum over all ranks.
    fn sum_f32(&self, buf: &mut [f32]) -> Result<(), String>;
    /// Every rank's `value`, in rank order.
    fn gather_u64(&self, value: u64) -> Result<Vec<u64>, String>;
}

/// A 64-bit FNV-1a hash of f32 values' bits: the weights check between ranks (equal weights give
/// equal hashes on every platform).
pub fn hash_f32(values: &[f32]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Checks that every rank holds the weights whose hash is `mine`; the error names the ranks that
/// differ from rank 0.
pub fn check_same_weights(comm: &dyn Collective, mine: u64, step: u64) -> Result<(), String> {
    let all = comm.gather_u64(mine)?;
    let differ: Vec<String> =
        all.iter().enumerate().filter(|(_, &h)| h != all[0]).map(|(r, _)| r.to_string()).collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "at step {step} the weights of rank(s) {} differ from rank 0's; the ranks no longer train one model \
             (adapters that round differently?)",
            differ.join(", ")
        ))
    }
}
