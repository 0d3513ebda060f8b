//! Opens the configured compute device. `auto` decides by actually opening a
//! GPU (a CPU-only build, or a host without a usable GPU, falls back to the CPU
//! with a log line), never by compile-time flags alone.

use candle_core::Device;
use std::str::FromStr;

/// The compute device setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Auto,
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "auto" => Ok(DeviceSpec::Auto),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("`{s}` is not a device: use cpu, cuda:N (e.g. cuda:0) or auto")),
        }
    }
}

/// The opened device and how to name it to callers (`cpu`, `cuda:0`).
pub fn open(spec: DeviceSpec) -> anyhow::Result<(Device, String)> {
    match spec {
        DeviceSpec::Cpu => Ok((Device::Cpu, "cpu".into())),
        DeviceSpec::Cuda(ordinal) => match Device::new_cuda(ordinal) {
            Ok(device) => Ok((device, format!("cuda:{ordinal}"))),
            Err(error) if !cfg!(feature = "cuda") => {
                anyhow::bail!(
                    "--device cuda:{ordinal}: this build has no CUDA support ({}); rebuild with `--features cuda` or use --device cpu",
                    reason(&error)
                )
            }
            Err(error) => anyhow::bail!(
                "--device cuda:{ordinal}: cannot open the GPU: {}; check that the NVIDIA driver is loaded and the GPU is visible here (nvidia-smi), or use --device auto to fall back to the CPU",
                reason(&error)
            ),
        },
        DeviceSpec::Auto => match Device::new_cuda(0) {
            Ok(device) => {
                tracing::info!("device auto: using cuda:0");
                Ok((device, "cuda:0".into()))
            }
            Err(error) => {
                tracing::info!(reason = reason(&error), "device auto: no usable GPU, using the CPU");
                Ok((Device::Cpu, "cpu".into()))
            }
        },
    }
}

/// The first line of candle's error: it appends a backtrace when
/// `RUST_BACKTRACE` is set, which belongs in neither the log line nor the
/// start-up error.
fn reason(error: &candle_core::Error) -> String {
    error.to_string().lines().next().unwrap_or_default().to_string()
}
