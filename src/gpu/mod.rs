//! The GPU context: adapter and device acquisition (native and browser behind one async API),
//! storage buffers, the pipeline cache, dispatch sizing and async readback; nothing here knows
//! about any op or model. Binding convention for every kernel: group 0 holds the storage
//! buffers, inputs first and outputs last; group 1 binding 0 holds the op's uniform parameters.

mod error;
#[cfg(not(target_arch = "wasm32"))]
mod instance;
mod readback;
mod recorder;

pub use error::GpuError;
pub use recorder::{Counters, Recorder};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use glam::UVec3;
use wgpu::util::DeviceExt;

/// The most workgroups one dispatch dimension may have (WebGPU default limit).
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;

/// Options for acquiring a device.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Pick the adapter at this index of `list_adapters`, or whose name contains this
    /// (case-insensitive); native only. The backend is chosen by `WGPU_BACKEND`.
    pub adapter: Option<String>,
    /// Keep naga's bounds checks in native shaders (always on in browsers). Set by
    /// `CDL_SHADER_CHECKS=1` natively; off by default because every kernel guards its own
    /// indices and the checks cost 2-4x on lavapipe.
    pub shader_checks: bool,
    /// Kernel variants forced per op family, as (op, variant) pairs: `CDL_VARIANT=op:variant,…`
    /// natively. Checked against the op registry by `ops::check_variants`.
    pub variants: Vec<(String, String)>,
}

impl GpuOptions {
    /// Defaults, overridden by `CDL_ADAPTER`, `CDL_SHADER_CHECKS` and `CDL_VARIANT` natively.
    pub fn from_env() -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        {
            Self {
                adapter: std::env::var("CDL_ADAPTER").ok().filter(|s| !s.is_empty()),
                shader_checks: std::env::var("CDL_SHADER_CHECKS").is_ok_and(|v| v != "0"),
                variants: parse_variants(&std::env::var("CDL_VARIANT").unwrap_or_default()),
            }
        }
        #[cfg(target_arch = "wasm32")]
        Self::default()
    }
}

/// `op:variant` pairs, comma-separated; an item without a colon keeps an empty variant, so that
/// the registry's check names it instead of it being dropped.
pub fn parse_variants(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (op, variant) = item.split_once(':').unwrap_or((item, ""));
            (op.trim().to_string(), variant.trim().to_string())
        })
        .collect()
}

/// A compute pipeline and the bind group layouts it was built with.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub key: String,
    pub pipeline: wgpu::ComputePipeline,
}

/// A device, its queue and everything that is created once per device.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    shader_checks: bool,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    kernels: Mutex<HashMap<String, Kernel>>,
    /// A small buffer for optional bindings a dispatch does not read.
    unused: Buffer,
    /// Its twin for optional outputs: a writable binding may not alias a read one.
    unused_out: Buffer,
    /// Device errors no error scope caught (validation, out of memory, device lost), kept for
    /// the next readback to report instead of panicking inside wgpu.
    errors: Arc<Mutex<Vec<String>>>,
    debug: u32,
    /// Command buffers and dispatches submitted through `Recorder` (see `counters`).
    submissions: AtomicU64,
    dispatches: AtomicU64,
    flops: AtomicU64,
    /// The kernel variant in use per op family, where one is forced or chosen (`variant`).
    variants: Mutex<HashMap<String, String>>,
    /// Variants chosen by measurement per (op, shape) key (`choice`), and whether one was added
    /// since `take_new_choices`.
    choices: Mutex<std::collections::BTreeMap<String, String>>,
    new_choices: AtomicBool,
    /// Whether launchers may time their variants for a shape without a choice (`set_tuning`).
    tuning: AtomicBool,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpu({} / {:?})", self.info.name, self.info.backend)
    }
}

impl Gpu {
    /// Acquires an adapter and a device with every limit the adapter offers.
    pub async fn new(opts: &GpuOptions) -> Result<Self, GpuError> {
        Self::with_adapter(Self::adapter(opts).await?, opts).await
    }

    /// The adapter `new` would use (`opts.adapter` chooses one natively). The first half of
    /// `new`, for callers that report the two waits apart (the web pages' start-up stages).
    pub async fn adapter(opts: &GpuOptions) -> Result<wgpu::Adapter, GpuError> {
        pick_adapter(opts).await
    }

    /// A device on `adapter` with every limit it offers: the second half of `new`.
    pub async fn with_adapter(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Self, GpuError> {
        let info = adapter.get_info();
        // Storage bindings default to 128 MiB; the adapter usually offers far more.
        let limits = adapter.limits();
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("cdl"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let debug = debug_level();
        let placeholder = |label| Buffer {
            buffer: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                // 16 bytes: the smallest binding a vec4 array accepts.
                size: 16,
                usage: STORAGE_USAGE,
                mapped_at_creation: false,
            }),
            offset: 0,
            len: 4,
        };
        let (unused, unused_out) = (placeholder("unused"), placeholder("unused output"));
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| lock(&sink).push(first_line(&e.to_string()))));
        Ok(Self {
            device,
            queue,
            info,
            limits,
            features,
            shader_checks: opts.shader_checks,
            modules: Mutex::default(),
            kernels: Mutex::default(),
            unused,
            unused_out,
            errors,
            debug,
            submissions: AtomicU64::new(0),
            dispatches: AtomicU64::new(0),
            flops: AtomicU64::new(0),
            variants: Mutex::new(opts.variants.iter().cloned().collect()),
            choices: Mutex::default(),
            new_choices: AtomicBool::new(false),
            tuning: AtomicBool::new(false),
        })
    }

    /// The variant chosen for `key` (an op family and a shape, as its launcher spells it).
    pub fn choice(&self, key: &str) -> Option<String> {
        lock(&self.choices).get(key).cloned()
    }

    /// Records a choice: `measured` marks it new (to be saved), a cached one is not.
    pub fn set_choice(&self, key: &str, variant: &str, measured: bool) {
        lock(&self.choices).insert(key.to_string(), variant.to_string());
        if measured {
            self.new_choices.store(true, Ordering::SeqCst);
        }
    }

    /// Every choice, sorted by key.
    pub fn choices(&self) -> Vec<(String, String)> {
        lock(&self.choices).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Whether a choice was measured since the last call (the cache needs writing).
    pub fn take_new_choices(&self) -> bool {
        self.new_choices.swap(false, Ordering::SeqCst)
    }

    /// Lets launchers time their variants on a shape without a choice (off by default: the
    /// family's default variant is used).
    pub fn set_tuning(&self, on: bool) {
        self.tuning.store(on, Ordering::SeqCst);
    }

    pub fn tuning(&self) -> bool {
        self.tuning.load(Ordering::SeqCst)
    }

    /// The kernel variant forced (`GpuOptions::variants`) or set (`set_variant`) for op family
    /// `op`; None leaves the family's launcher to its default.
    pub fn variant(&self, op: &str) -> Option<String> {
        lock(&self.variants).get(op).cloned()
    }

    /// Uses `variant` for op family `op` in the dispatches prepared from now on (None: the
    /// family's default). The launcher rejects a name it does not know when it next prepares.
    pub fn set_variant(&self, op: &str, variant: Option<&str>) {
        let mut v = lock(&self.variants);
        match variant {
            Some(name) => v.insert(op.to_string(), name.to_string()),
            None => v.remove(op),
        };
    }

    /// Every forced or set variant, sorted by op family.
    pub fn variants(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = lock(&self.variants).iter().map(|(k, x)| (k.clone(), x.clone())).collect();
        v.sort();
        v
    }

    /// One line naming the adapter and backend.
    pub fn describe(&self) -> String {
        if self.info.name.is_empty() {
            // Browsers hide the adapter's name; say what is known.
            return format!("browser WebGPU adapter ({:?}, {:?})", self.info.backend, self.info.device_type);
        }
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name, self.info.backend, self.info.device_type, self.info.driver, self.info.driver_info
        )
    }

    /// The limits that matter for the kernels, as (name, value) pairs.
    pub fn limit_report(&self) -> Vec<(&'static str, u64)> {
        let l = &self.limits;
        vec![
            ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
            ("max_buffer_size", l.max_buffer_size),
            ("max_compute_workgroup_storage_size", u64::from(l.max_compute_workgroup_storage_size)),
            ("max_compute_invocations_per_workgroup", u64::from(l.max_compute_invocations_per_workgroup)),
            ("max_compute_workgroups_per_dimension", u64::from(l.max_compute_workgroups_per_dimension)),
            ("max_storage_buffers_per_shader_stage", u64::from(l.max_storage_buffers_per_shader_stage)),
            ("max_bind_groups", u64::from(l.max_bind_groups)),
            ("timestamp_query", u64::from(self.features.contains(wgpu::Features::TIMESTAMP_QUERY))),
        ]
    }

    // --- buffers -----------------------------------------------------------------------------

    /// A zeroed f32 storage buffer of `len` elements that can be copied to and from.
    pub fn zeros(&self, label: &str, len: usize) -> Result<Buffer, GpuError> {
        let size = self.checked_size(label, len)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        Ok(Buffer { buffer, offset: 0, len })
    }

    /// Fails unless a buffer of `len` f32 elements fits this adapter's binding limits; for
    /// planning a model before allocating anything.
    pub fn check_fits(&self, label: &str, len: usize) -> Result<(), GpuError> {
        self.checked_size(label, len).map(|_| ())
    }

    /// A small buffer to bind where an optional operand is absent.
    pub fn unused(&self) -> &Buffer {
        &self.unused
    }

    /// A small buffer to bind where an optional output is absent (never the one `unused`
    /// gives, which the same dispatch may bind read-only).
    pub fn unused_out(&self) -> &Buffer {
        &self.unused_out
    }

    /// A storage buffer holding `data`.
    pub fn upload(&self, label: &str, data: &[f32]) -> Result<Buffer, GpuError> {
        self.checked_size(label, data.len())?;
        let contents: &[u8] = if data.is_empty() { &[0u8; 4] } else { bytemuck::cast_slice(data) };
        let buffer = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: STORAGE_USAGE,
        });
        Ok(Buffer { buffer, offset: 0, len: data.len() })
    }

    /// Overwrites the start of `dst` with `data` (at most `dst.len` elements are written).
    pub fn write(&self, dst: &Buffer, data: &[f32]) {
        let data = &data[..data.len().min(dst.len)];
        self.queue.write_buffer(&dst.buffer, (dst.offset * 4) as u64, bytemuck::cast_slice(data));
    }

    /// A uniform buffer holding one parameter struct.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, params: &T) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    fn checked_size(&self, label: &str, len: usize) -> Result<u64, GpuError> {
        let size = (len.max(1) * 4) as u64;
        let max = self.limits.max_storage_buffer_binding_size;
        if size > max || size > self.limits.max_buffer_size {
            return Err(GpuError::TooLarge { what: label.to_string(), bytes: size, limit: max });
        }
        Ok(size)
    }

    // --- pipelines ---------------------------------------------------------------------------

    /// `kernel_with_constants` for a shader without pipeline-overridable constants, cached
    /// under `key`.
    pub async fn kernel(
        &self,
        key: &str,
        shader: &'static str,
        source: &'static str,
        entry: &'static str,
    ) -> Result<Kernel, GpuError> {
        self.kernel_with_constants(key, shader, source, entry, &[]).await
    }

    /// The compute pipeline for `entry` of the shader `source` with the values `constants` of
    /// its pipeline-overridable constants, created on first use and cached under `name` and
    /// every value (`pipeline_key`), so no two specialisations share a pipeline. Validation
    /// errors come back as `Err`.
    pub async fn kernel_with_constants(
        &self,
        name: &str,
        shader: &'static str,
        source: &'static str,
        entry: &'static str,
        constants: &[(&str, f64)],
    ) -> Result<Kernel, GpuError> {
        let key = pipeline_key(name, constants);
        if let Some(k) = lock(&self.kernels).get(&key) {
            return Ok(k.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.module(shader, source);
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants, ..Default::default() },
            cache: None,
        });
        if let Some(e) = scope.pop().await {
            return Err(GpuError::Pipeline { key, message: first_line(&e.to_string()) });
        }
        if self.debug >= 1 {
            log(&format!("cdl: pipeline {key} = {shader}.wgsl::{entry}"));
        }
        if self.debug >= 2 {
            log(source);
        }
        let k = Kernel { key: key.clone(), pipeline };
        lock(&self.kernels).insert(key, k.clone());
        Ok(k)
    }

    fn module(&self, shader: &'static str, source: &'static str) -> wgpu::ShaderModule {
        if let Some(m) = lock(&self.modules).get(shader) {
            return m.clone();
        }
        let desc =
            wgpu::ShaderModuleDescriptor { label: Some(shader), source: wgpu::ShaderSource::Wgsl(source.into()) };
        let module = if self.shader_checks || cfg!(target_arch = "wasm32") {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel bounds-checks its own indices against the shape uniforms, and
            // launchers check buffer lengths against shapes before binding (tests run the same
            // kernels with `CDL_SHADER_CHECKS=1`).
            #[allow(unsafe_code)]
            unsafe {
                self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        lock(&self.modules).insert(shader, module.clone());
        module
    }

    /// A dispatch of `kernel` over `buffers` (group 0, in binding order) with `params` (group 1).
    pub fn dispatch<T: bytemuck::Pod>(
        &self,
        kernel: &Kernel,
        buffers: &[&Buffer],
        params: &T,
        workgroups: u32,
    ) -> Result<Dispatch, GpuError> {
        let layout0 = kernel.pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.binding() })
            .collect();
        let storage = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel.key),
            layout: &layout0,
            entries: &entries,
        });
        let ubuf = self.uniform(&kernel.key, params);
        let uniforms = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel.key),
            layout: &kernel.pipeline.get_bind_group_layout(1),
            entries: &[wgpu::BindGroupEntry { binding: 0, resource: ubuf.as_entire_binding() }],
        });
        let grid = fold_workgroups(workgroups)?;
        if self.debug >= 1 {
            log(&format!("cdl: dispatch {} workgroups {} -> {:?}", kernel.key, workgroups, grid));
        }
        Ok(Dispatch {
            key: kernel.key.clone(),
            pipeline: kernel.pipeline.clone(),
            groups: [storage, uniforms],
            params: ubuf,
            grid,
            flops: 0,
        })
    }

    /// A new, empty submission: the only way commands reach the queue.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder::new(self)
    }

    /// Submissions, dispatches and their FLOPs recorded since the device was created.
    pub fn counters(&self) -> Counters {
        Counters {
            submissions: self.submissions.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
            flops: self.flops.load(Ordering::Relaxed),
        }
    }

    /// Encodes and submits `dispatches` in one compute pass.
    pub fn run(&self, dispatches: &[&Dispatch]) {
        let mut rec = self.recorder();
        rec.dispatches(dispatches.iter().copied());
        rec.submit();
    }

    /// Runs each dispatch in its own pass between two timestamps and returns the GPU time of
    /// each in milliseconds, or `None` when the adapter has no timestamp queries. Separate passes
    /// add a little per-dispatch overhead; use it for breakdowns, not totals.
    pub async fn profile(&self, dispatches: &[&Dispatch]) -> Result<Option<Vec<f64>>, GpuError> {
        if !self.features.contains(wgpu::Features::TIMESTAMP_QUERY) || dispatches.is_empty() {
            return Ok(None);
        }
        let n = 2 * dispatches.len() as u32;
        let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: n,
        });
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile"),
            size: u64::from(n) * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        for (i, d) in dispatches.iter().enumerate() {
            let i = 2 * i as u32;
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&d.key),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &set,
                    beginning_of_pass_write_index: Some(i),
                    end_of_pass_write_index: Some(i + 1),
                }),
            });
            d.encode(&mut pass);
        }
        enc.resolve_query_set(&set, 0..n, &resolved, 0);
        self.queue.submit([enc.finish()]);
        // Reinterpret the u64 ticks as pairs of f32 words for the common readback path.
        let words = Buffer { buffer: resolved, offset: 0, len: 2 * n as usize };
        let raw = self.read_u32(&words).await?;
        let period_ms = f64::from(self.queue.get_timestamp_period()) * 1e-6;
        let ticks: Vec<u64> = raw.chunks(2).map(|w| u64::from(w[0]) | (u64::from(w[1]) << 32)).collect();
        Ok(Some(ticks.chunks(2).map(|t| t[1].saturating_sub(t[0]) as f64 * period_ms).collect()))
    }

    /// Copies min(src.len, dst.len) elements from `src` to `dst` on the device (one submission).
    pub fn copy(&self, src: &Buffer, dst: &Buffer) {
        let mut rec = self.recorder();
        rec.copy(src, 0, dst, 0, src.len.min(dst.len));
        rec.submit();
    }

    /// Reads a buffer back to the host.
    pub async fn read(&self, buf: &Buffer) -> Result<Vec<f32>, GpuError> {
        let out = readback::read_f32(self, buf).await;
        self.take_error()?;
        out
    }

    /// The first device error recorded since the last call, if any.
    pub fn take_error(&self) -> Result<(), GpuError> {
        let mut errs = lock(&self.errors);
        match errs.first().cloned() {
            Some(e) => {
                errs.clear();
                Err(GpuError::Device(e))
            }
            None => Ok(()),
        }
    }

    /// Reads a buffer of u32 words back to the host (same bytes, other type).
    pub async fn read_u32(&self, buf: &Buffer) -> Result<Vec<u32>, GpuError> {
        Ok(self.read(buf).await?.into_iter().map(f32::to_bits).collect())
    }

    /// Waits until the queue is idle (natively); the browser resolves this itself.
    pub async fn finish(&self) -> Result<(), GpuError> {
        readback::wait_idle(self).await?;
        self.take_error()
    }
}

const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// Alignment of buffer views, in f32 elements: 256 bytes, WebGPU's default
/// `min_storage_buffer_offset_alignment`.
pub const VIEW_ALIGN: usize = 64;

/// An f32 storage buffer, or a view of `len` elements starting at `offset` elements into one
/// (parameters of a whole model live in one buffer and each layer binds its view).
#[derive(Clone, Debug)]
pub struct Buffer {
    pub buffer: wgpu::Buffer,
    /// First element of the view (a multiple of `VIEW_ALIGN`).
    pub offset: usize,
    pub len: usize,
}

impl Buffer {
    /// A view of `len` elements from `start` (relative to this view; `start` a multiple of
    /// `VIEW_ALIGN`).
    pub fn view(&self, start: usize, len: usize) -> Result<Buffer, GpuError> {
        if !start.is_multiple_of(VIEW_ALIGN) || len == 0 || start + len > self.len {
            return Err(GpuError::Shape(format!(
                "view [{start}, {}) of a {}-element buffer (start must be a multiple of {VIEW_ALIGN}, len > 0)",
                start + len,
                self.len
            )));
        }
        Ok(Buffer { buffer: self.buffer.clone(), offset: self.offset + start, len })
    }

    /// The binding of exactly this view.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: (self.offset * 4) as u64,
            size: std::num::NonZeroU64::new((self.len.max(1) * 4) as u64),
        })
    }
}

/// A prepared dispatch: pipeline, bind groups and grid, created once and encoded every step.
#[derive(Debug)]
pub struct Dispatch {
    /// The pipeline's cache key (for example `matmul_nn4[LANES=64,TRANS_A=0,TRANS_B=0]`),
    /// used in profiles.
    pub key: String,
    pipeline: wgpu::ComputePipeline,
    groups: [wgpu::BindGroup; 2],
    /// The uniform buffer behind group 1, for launchers that update parameters in place.
    pub params: wgpu::Buffer,
    grid: UVec3,
    /// Floating-point operations of one run, as the launcher counts them from the shapes: two
    /// per multiply-add of a matrix product or convolution, 0 for every other op (as PyTorch's
    /// FLOP counter counts).
    flops: u64,
}

impl Dispatch {
    /// Floating-point operations of one run (see the field).
    pub fn flops(&self) -> u64 {
        self.flops
    }

    /// The same dispatch, counted as `flops` floating-point operations per run.
    pub fn with_flops(mut self, flops: u64) -> Self {
        self.flops = flops;
        self
    }

    /// Replaces the folded 1-D grid with an explicit 2-D one (for kernels indexed by
    /// `global_invocation_id`, such as the benchmark baselines).
    pub fn set_grid(&mut self, x: u32, y: u32) {
        self.grid = UVec3::new(x, y, 1);
    }

    fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.groups[0], &[]);
        pass.set_bind_group(1, &self.groups[1], &[]);
        pass.dispatch_workgroups(self.grid.x, self.grid.y, self.grid.z);
    }
}

/// Folds a linear workgroup count into a grid whose dimensions stay within the WebGPU limit.
/// Kernels recover the linear id as `(wid.z * n.y + wid.y) * n.x + wid.x` and skip ids past
/// the count (the grid may overshoot by less than one row).
pub fn fold_workgroups(count: u32) -> Result<UVec3, GpuError> {
    let m = MAX_WORKGROUPS_PER_DIM;
    if count <= m {
        return Ok(UVec3::new(count.max(1), 1, 1));
    }
    let y = count.div_ceil(m);
    if y <= m {
        return Ok(UVec3::new(count.div_ceil(y), y, 1));
    }
    let z = y.div_ceil(m);
    let y = y.div_ceil(z);
    Ok(UVec3::new(count.div_ceil(y * z), y, z))
}

/// Number of groups of `per_group` needed to cover `n` items.
pub fn groups_for(n: usize, per_group: usize) -> u32 {
    n.div_ceil(per_group).max(1) as u32
}

/// Every adapter natively visible, in the order `GpuOptions::adapter` indexes them:
/// "name (backend, device type)".
#[cfg(not(target_arch = "wasm32"))]
pub async fn list_adapters() -> Vec<String> {
    instance::adapters()
        .await
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
        })
        .collect()
}

/// The index in `list_adapters` of the adapter that rank `rank` of a data-parallel job takes:
/// round-robin over the adapters of the default adapter's backend and kind (a machine's GPUs,
/// not the same GPU again through a fallback backend such as GL).
#[cfg(not(target_arch = "wasm32"))]
pub async fn rank_adapter(rank: usize) -> Option<usize> {
    let all = instance::adapters().await;
    let default = instance::high_performance(all.clone())?.get_info();
    let peers: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, a)| a.get_info().backend == default.backend && a.get_info().device_type == default.device_type)
        .map(|(i, _)| i)
        .collect();
    peers.get(rank % peers.len().max(1)).copied()
}

#[cfg(not(target_arch = "wasm32"))]
async fn pick_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter, GpuError> {
    let all = instance::adapters().await;
    let Some(want) = &opts.adapter else {
        return instance::high_performance(all).ok_or(GpuError::NoAdapter);
    };
    let want = want.to_lowercase();
    let names: Vec<String> = all
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {} ({:?})", a.get_info().name, a.get_info().backend))
        .collect();
    // A number is an index into `cdl info`'s list (even where a name holds that number, as
    // "LLVM 15" does); anything else is a piece of the adapter's name.
    let found = match want.parse::<usize>() {
        Ok(i) => all.into_iter().nth(i),
        Err(_) => all.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&want)),
    };
    found.ok_or(GpuError::AdapterNotFound { want, available: names })
}

#[cfg(target_arch = "wasm32")]
async fn pick_adapter(_opts: &GpuOptions) -> Result<wgpu::Adapter, GpuError> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|_| GpuError::NoAdapter)
}

/// A pipeline's cache key: `name`, then the value of every pipeline-overridable constant
/// (`matmul_nt4[LANES=64,TRANS_A=0,TRANS_B=1]`).
fn pipeline_key(name: &str, constants: &[(&str, f64)]) -> String {
    if constants.is_empty() {
        return name.to_string();
    }
    let values: Vec<String> = constants.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}[{}]", values.join(","))
}

/// Locks a cache; a poisoned lock still holds a consistent map (inserts are single calls).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn debug_level() -> u32 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::env::var("CDL_DEBUG").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    #[cfg(target_arch = "wasm32")]
    0
}

/// Writes a diagnostic line: stderr natively, the console in a browser.
pub fn log(msg: &str) {
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{msg}");
    #[cfg(target_arch = "wasm32")]
    web_sys::console::log_1(&msg.into());
}
