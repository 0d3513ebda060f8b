//! Opens the configured compute device. `auto` decides by actually opening a
//! GPU (a CPU-only build, or a host without a usable GPU, falls back to the CPU
//! with a log line), never by compile-time flags alone.

use crate::config::DeviceSpec;
use candle_core::Device;

/// The opened device and how to name it to callers (`cpu`, `cuda:0`).
pub fn open(spec: DeviceSpec) -> anyhow::Result<(Device, String)> {
    match spec {
        DeviceSpec::Cpu => Ok((Device::Cpu, "cpu".into())),
        DeviceSpec::Cuda(ordinal) => match Device::new_cuda(ordinal) {
            Ok(device) => Ok((device, format!("cuda:{ordinal}"))),
            Err(error) if !cfg!(feature = "cuda") => {
                anyhow::bail!(
                    "--device cuda:{ordinal}: this build has no CUDA support ({error}); rebuild with `--features cuda` or use --device cpu"
                )
            }
            Err(error) => anyhow::bail!("--device cuda:{ordinal}: cannot open the GPU: {error}"),
        },
        DeviceSpec::Auto => match Device::new_cuda(0) {
            Ok(device) => {
                tracing::info!("device auto: using cuda:0");
                Ok((device, "cuda:0".into()))
            }
            Err(error) => {
                tracing::info!(reason = %error, "device auto: no usable GPU, using the CPU");
                Ok((Device::Cpu, "cpu".into()))
            }
        },
    }
}
