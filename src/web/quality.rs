//! Image mode's sample quality: FID and KID of the samples on display against as many training
//! images, through the FID Inception-v3 network (`eval::inception`) on the reader's GPU. The
//! weights are the file `tools/inception_to_safetensors.py` writes from pytorch-fid's; the page
//! never downloads them.

use super::dom;
use crate::eval::fd::frechet_distance;
use crate::eval::inception::{Inception, InceptionWeights, FEATURES};
use crate::eval::kid::{kid, Kid, KidConfig};
use crate::gpu::Gpu;

/// Largest weights file read: the converted pytorch-fid file is ~96 MB (23.9 M f32 values).
pub const MAX_INCEPTION_BYTES: f64 = 160.0 * 1024.0 * 1024.0;
/// Images through the network at once: activations of 8 images at 299×299 take ~150 MB.
const BATCH: usize = 8;

/// The loaded feature network: its weights (kept across a device restart) and, once used, its
/// pipelines and buffers on the current device.
pub struct Quality {
    pub name: String,
    weights: InceptionWeights,
    net: Option<Inception>,
}

/// FID and KID of `n` samples against `n` training images.
pub struct Scores {
    pub fid: f64,
    pub kid: Kid,
    pub n: usize,
}

impl Quality {
    /// Reads a converted weights file (every tensor checked by name and shape).
    pub fn load(name: &str, bytes: &[u8]) -> Result<Self, String> {
        let weights = InceptionWeights::from_safetensors(bytes).map_err(|e| format!("{name}: {e}"))?;
        Ok(Self { name: name.to_string(), weights, net: None })
    }

    /// Drops the network's device objects (the device was lost); the weights stay.
    pub fn forget_device(&mut self) {
        self.net = None;
    }

    /// FID and KID (torch-fidelity's estimator, subsets of all `n` points) of `samples` against
    /// `reals`, both (n, 3, side, side) model values in [-1, 1]. `progress` is told how many of
    /// the 2n images have their features.
    pub async fn scores(
        &mut self,
        gpu: &Gpu,
        samples: &[f32],
        reals: &[f32],
        n: usize,
        side: usize,
        progress: impl Fn(usize, usize),
    ) -> Result<Scores, String> {
        if n < 2 {
            return Err(format!("FID/KID need at least 2 images a side, got {n}"));
        }
        let x = self.features(gpu, samples, n, side, |k| progress(k, 2 * n)).await?;
        let y = self.features(gpu, reals, n, side, |k| progress(n + k, 2 * n)).await?;
        let fid = frechet_distance(&x, &y, FEATURES).map_err(|e| e.to_string())?;
        let cfg = KidConfig { subset_size: n, ..KidConfig::default() };
        let kid = kid(&x, &y, FEATURES, cfg).map_err(|e| e.to_string())?;
        Ok(Scores { fid, kid, n })
    }

    /// Pool features (n, 2048) of model-valued images, in batches of `BATCH`.
    async fn features(
        &mut self,
        gpu: &Gpu,
        images: &[f32],
        n: usize,
        side: usize,
        progress: impl Fn(usize),
    ) -> Result<Vec<f64>, String> {
        let per = 3 * side * side;
        if images.len() < n * per {
            return Err(format!("{} values for {n} images of 3×{side}×{side}", images.len()));
        }
        if self.net.is_none() {
            let net = Inception::new(gpu, &self.weights, BATCH, side, side).map_err(|e| e.to_string())?;
            self.net = Some(net);
        }
        let Some(net) = self.net.as_ref() else { return Err("internal: no feature network".into()) };
        let mut out = Vec::with_capacity(n * FEATURES);
        for start in (0..n).step_by(BATCH) {
            let k = BATCH.min(n - start);
            // The network takes [0, 1] pixels (pytorch-fid's input); the model's are in [-1, 1].
            let unit: Vec<f32> =
                images[start * per..(start + k) * per].iter().map(|v| ((v + 1.0) * 0.5).clamp(0.0, 1.0)).collect();
            let f = net.features(gpu, &unit, k).await.map_err(|e| e.to_string())?;
            out.extend(f.iter().map(|&v| f64::from(v)));
            progress(start + k);
            dom::sleep(0).await;
        }
        Ok(out)
    }
}
