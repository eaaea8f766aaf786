//! Choosing and creating the compute device. burn 0.22 picks backends at run time, so one binary
//! holds both: WebGPU (wgpu; in the browser or natively on Vulkan/Metal) and the pure-Rust CPU
//! backend `flex` (chosen over the deprecated `ndarray`; both run inside wasm).

use burn::tensor::Device;
use serde::Serialize;

use crate::error::{Code, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Webgpu,
    Cpu,
}

impl BackendKind {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "webgpu" | "wgpu" | "gpu" => Ok(Self::Webgpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(Error::config(format!(
                "unknown backend {other:?}: choose \"webgpu\" or \"cpu\""
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webgpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    pub device_type: String,
    pub driver: String,
    pub backend: String,
}

/// Limits the device was actually created with (cubecl requests the adapter's own limits,
/// not wgpu's 128 MiB defaults — embeddings of real models need more).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceLimits {
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendInfo {
    pub backend: BackendKind,
    /// Threads the CPU backend computes on (its rayon pool); null on WebGPU.
    pub cpu_threads: Option<usize>,
    pub adapter: Option<AdapterInfo>,
    pub device_limits: Option<DeviceLimits>,
}

/// Threads burn-flex's matmuls and reductions run on: the rayon pool natively and in the
/// threaded wasm build (started by the page, see `web::threads`), one in the plain wasm build.
pub fn cpu_threads() -> usize {
    #[cfg(any(not(target_arch = "wasm32"), feature = "wasm-threads"))]
    {
        rayon::current_num_threads()
    }
    #[cfg(all(target_arch = "wasm32", not(feature = "wasm-threads")))]
    {
        1
    }
}

/// A device ready for training (autodiff enabled) and what we know about it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub device: Device,
    /// The same device without autodiff, for inference (no graph is recorded).
    pub inference: Device,
    pub info: BackendInfo,
}

impl Backend {
    pub fn cpu() -> Self {
        Self {
            device: Device::flex().autodiff(),
            inference: Device::flex(),
            info: BackendInfo {
                backend: BackendKind::Cpu,
                cpu_threads: Some(cpu_threads()),
                adapter: None,
                device_limits: None,
            },
        }
    }

    /// Create the WebGPU device once per process (burn's wgpu runtime cannot be initialised
    /// twice) and hand out clones afterwards.
    #[cfg(feature = "webgpu")]
    pub async fn webgpu() -> Result<Self> {
        use std::sync::Mutex;
        static WGPU: Mutex<Option<Backend>> = Mutex::new(None);
        if let Some(existing) = WGPU.lock().ok().and_then(|g| g.clone()) {
            return Ok(existing);
        }
        let (device, setup) = Device::wgpu_options()
            .init_with_setup_async()
            .await
            .map_err(|e| {
                Error::new(
                    Code::DeviceUnavailable,
                    format!("could not create a WebGPU device: {e}"),
                )
            })?;
        let info = setup.adapter.get_info();
        let limits = setup.device.limits();
        let backend = Self {
            inference: device.clone(),
            device: device.autodiff(),
            info: BackendInfo {
                backend: BackendKind::Webgpu,
                cpu_threads: None,
                adapter: Some(AdapterInfo {
                    name: info.name,
                    vendor: info.vendor,
                    device: info.device,
                    device_type: format!("{:?}", info.device_type),
                    driver: info.driver,
                    backend: format!("{:?}", info.backend),
                }),
                device_limits: Some(DeviceLimits {
                    max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                    max_buffer_size: limits.max_buffer_size,
                }),
            },
        };
        if let Ok(mut guard) = WGPU.lock() {
            *guard = Some(backend.clone());
        }
        Ok(backend)
    }

    /// Builds without the `webgpu` feature (the threaded CPU-only wasm module) have no WebGPU.
    #[cfg(not(feature = "webgpu"))]
    pub async fn webgpu() -> Result<Self> {
        Err(Error::new(
            Code::DeviceUnavailable,
            "this build of webtune has no WebGPU backend (it is the CPU-only build); use the CPU \
             backend, or the default build for WebGPU",
        ))
    }

    pub async fn create(kind: BackendKind) -> Result<Self> {
        match kind {
            BackendKind::Cpu => Ok(Self::cpu()),
            BackendKind::Webgpu => Self::webgpu().await,
        }
    }

    /// Bytes the device's allocator has in use, where the backend reports it.
    pub fn memory_in_use(&self) -> Option<u64> {
        match self.device.memory_pool_usage() {
            Some(u) => Some(u.bytes_in_use),
            None => process_memory(),
        }
    }
}

/// What this process holds in memory: the wasm module's linear memory (it never shrinks, so
/// this is the peak so far), natively on Linux the resident set.
pub fn process_memory() -> Option<u64> {
    #[cfg(target_arch = "wasm32")]
    {
        Some(core::arch::wasm32::memory_size(0) as u64 * 65536)
    }
    #[cfg(all(not(target_arch = "wasm32"), target_os = "linux"))]
    {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
    #[cfg(all(not(target_arch = "wasm32"), not(target_os = "linux")))]
    {
        None
    }
}
