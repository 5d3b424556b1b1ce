//! Native adapters from instances that ask for compute only: on Linux the Vulkan backend gets an
//! instance without window-system surface extensions, so nothing connects to a display or prints
//! to stderr; other backends keep wgpu's usual instance. Environment variables are left alone.

use wgpu::{Adapter, Backends, DeviceType, InstanceDescriptor};

/// Every adapter of `desc.backends` (set by `WGPU_BACKEND`), Vulkan first, then wgpu's order of
/// the other backends.
pub async fn adapters() -> Vec<Adapter> {
    let desc = InstanceDescriptor::new_without_display_handle_from_env();
    let mut all = Vec::new();
    let mut rest = desc.backends;
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    if desc.backends.contains(Backends::VULKAN) {
        if let Some(vulkan) = compute_only::vulkan(&desc) {
            all.extend(vulkan.enumerate_adapters(Backends::VULKAN).await);
            rest.remove(Backends::VULKAN);
        }
    }
    if !rest.is_empty() {
        let backends = rest;
        let instance = wgpu::Instance::new(InstanceDescriptor { backends, ..desc });
        all.extend(instance.enumerate_adapters(backends).await);
    }
    all
}

/// The adapter `request_adapter` would choose with `PowerPreference::HighPerformance`: the first
/// discrete GPU, else integrated, else the first of the other kinds (CPU last).
pub fn high_performance(adapters: Vec<Adapter>) -> Option<Adapter> {
    let rank = |a: &Adapter| match a.get_info().device_type {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::Other => 2,
        DeviceType::VirtualGpu => 3,
        DeviceType::Cpu => 4,
    };
    adapters.into_iter().min_by_key(rank)
}

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
#[allow(unsafe_code)] // Creating a raw Vulkan instance and handing it to wgpu; see each block.
mod compute_only {
    use std::ffi::CStr;

    use ash::vk;
    use wgpu::hal::vulkan;
    use wgpu::{InstanceDescriptor, InstanceFlags};

    /// wgpu's desired instance extensions that exist for presenting to a window or display.
    const WINDOW_SYSTEM: [&CStr; 9] = [
        ash::khr::surface::NAME,
        ash::khr::xlib_surface::NAME,
        ash::khr::xcb_surface::NAME,
        ash::khr::wayland_surface::NAME,
        ash::ext::swapchain_colorspace::NAME,
        ash::khr::display::NAME,
        ash::khr::get_display_properties2::NAME,
        ash::ext::direct_mode_display::NAME,
        ash::ext::acquire_drm_display::NAME,
    ];

    /// A wgpu instance over a Vulkan instance with wgpu's extensions minus the window-system
    /// ones, or `None` where Vulkan is missing (the adapters then come from the other backends,
    /// as when wgpu skips a backend that fails to start).
    ///
    /// Why: cdl never presents to a window, yet wgpu's Vulkan instance enables every
    /// window-system surface extension the loader offers. On Linux, Mesa's implicit
    /// device-selection layer sees `VK_KHR_wayland_surface` or `VK_KHR_xcb_surface` among them and
    /// connects to the display server to rank the adapters; in a shell without one (a container,
    /// SSH, CI) libwayland then prints `error: XDG_RUNTIME_DIR is invalid or not set in the
    /// environment.` on stderr, twice per instance, before any output of ours.
    pub fn vulkan(desc: &InstanceDescriptor) -> Option<wgpu::Instance> {
        // SAFETY: loads the system's Vulkan loader; its entry points are only called below.
        let entry = unsafe { ash::Entry::load() }.ok()?;
        // SAFETY: a global command of a loaded entry.
        let version = match unsafe { entry.try_enumerate_instance_version() }.ok()? {
            Some(v) => v,
            None => vk::API_VERSION_1_0,
        };
        let mut extensions = vulkan::Instance::desired_extensions(&entry, version, desc.flags).ok()?;
        extensions.retain(|e| !WINDOW_SYSTEM.contains(e));
        // SAFETY: a global command of a loaded entry.
        let layers = unsafe { entry.enumerate_instance_layer_properties() }.ok()?;
        let has_layer = |name: &CStr| layers.iter().any(|l| l.layer_name_as_c_str() == Ok(name));
        let validation = c"VK_LAYER_KHRONOS_validation";
        let enabled_layers: Vec<*const std::ffi::c_char> =
            if desc.flags.contains(InstanceFlags::VALIDATION) && has_layer(validation) {
                vec![validation.as_ptr()]
            } else {
                Vec::new()
            };
        // wgpu-hal's own ceiling: it has audited the API up to 1.3.
        let api = if version < vk::API_VERSION_1_1 { vk::API_VERSION_1_0 } else { version.min(vk::API_VERSION_1_3) };
        let app = vk::ApplicationInfo::default()
            .application_name(c"cdl")
            .application_version(1)
            .engine_name(c"wgpu-hal")
            .engine_version(2)
            .api_version(api);
        let names: Vec<*const std::ffi::c_char> = extensions.iter().map(|e| e.as_ptr()).collect();
        let info = vk::InstanceCreateInfo::default()
            .application_info(&app)
            .enabled_extension_names(&names)
            .enabled_layer_names(&enabled_layers);
        // SAFETY: `info` and everything it points to outlive the call; the extensions and layer
        // were reported by this loader.
        let raw = unsafe { entry.create_instance(&info, None) }.ok()?;
        let has_nv_optimus = has_layer(c"VK_LAYER_NV_optimus");
        // SAFETY: `raw` was created from `entry` with `api`, `extensions` and `desc.flags`, and
        // wgpu-hal takes ownership of it (no drop callback). `extensions` is the list it asks for
        // less the window-system ones: wgpu-hal 30 reads this list only through `contains`
        // before creating a surface or a debug messenger, so without them it refuses surfaces
        // (which cdl never creates natively) instead of calling into extensions that are off.
        let hal = unsafe {
            vulkan::Instance::from_raw(
                entry,
                raw,
                api,
                0,
                None,
                extensions,
                desc.flags,
                desc.memory_budget_thresholds,
                has_nv_optimus,
                None,
            )
        }
        .ok()?;
        // SAFETY: `hal` is a valid Vulkan instance that nothing else owns.
        Some(unsafe { wgpu::Instance::from_hal::<wgpu::hal::api::Vulkan>(hal) })
    }
}
