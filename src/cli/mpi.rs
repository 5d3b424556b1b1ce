//! `mpirun -n R cdl train …` (built with `--features mpi`): the ranks of an MPI job as the
//! trainer's `Collective` (train/dist.rs). MPI is initialised only when a launcher started the
//! process (mpirun, mpiexec, srun); a plain `cdl train` never touches it.

use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

use cdl::train::dist::Collective;

/// The job's ranks (MPI_COMM_WORLD); MPI is finalised when this is dropped.
pub struct Mpi {
    world: SimpleCommunicator,
    _universe: Universe,
}

impl Mpi {
    /// MPI_Init, once per process.
    pub fn init() -> Result<Self, String> {
        let universe = mpi::initialize().ok_or("MPI was already initialised")?;
        Ok(Self { world: universe.world(), _universe: universe })
    }

    /// Stops every rank of the job (MPI_Abort) with `code`.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn ranks(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f32(&self, buf: &mut [f32]) -> Result<(), String> {
        if i32::try_from(buf.len()).is_err() {
            return Err(format!("{} values are more than one MPI message holds", buf.len()));
        }
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn gather_u64(&self, value: u64) -> Result<Vec<u64>, String> {
        let mut out = vec![0u64; self.ranks()];
        self.world.all_gather_into(&value, &mut out[..]);
        Ok(out)
    }
}
