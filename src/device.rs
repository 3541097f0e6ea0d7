//! Where tensors live: `cpu` (the default), `cuda` or `cuda:N`, from a command's `--device`, a
//! script's `device` option, or the `CHARTRL_DEVICE` variable. Training keeps f32 weights and
//! AdamW moments on every device; sampling and evaluation compute in bf16 on CUDA. The device
//! is never part of a run's identity, so a run started on the CPU may resume on a GPU (its
//! numbers then differ by float noise).

use std::str::FromStr;

/// The environment variable that names the default device.
pub const DEVICE_VAR: &str = "CHARTRL_DEVICE";

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}` (use cpu, cuda or cuda:N)")]
    Unknown(String),
    #[error("device `{0}`: this chartrl was built without CUDA; build one with `cargo build --release --features cuda` where the CUDA compiler is installed (`bash scripts/build-cuda.sh` installs it and builds without a GPU)")]
    NotBuilt(String),
    /// The CUDA build could not open the device (no GPU, no driver): the machine's doing.
    #[error("device `{spec}`: {msg}")]
    Cuda { spec: String, msg: String },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_lowercase();
        match t.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(0) => write!(f, "cuda"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The device asked for, else `CHARTRL_DEVICE`, else the CPU.
    pub fn resolve(asked: Option<DeviceSpec>) -> Result<Self, DeviceError> {
        match asked {
            Some(d) => Ok(d),
            None => match std::env::var(DEVICE_VAR) {
                Ok(s) if !s.trim().is_empty() => s.parse(),
                _ => Ok(DeviceSpec::Cpu),
            },
        }
    }

    /// The candle device; CUDA from a build without the `cuda` feature is an error that says
    /// how to build one.
    pub fn open(self) -> Result<candle_core::Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(DeviceError::NotBuilt(self.to_string()));
                }
                candle_core::Device::new_cuda(n).map_err(|e| DeviceError::Cuda {
                    spec: self.to_string(),
                    msg: e.to_string(),
                })
            }
        }
    }
}

/// `--device`/`device` (or `CHARTRL_DEVICE`) as a candle device.
pub fn device(asked: Option<&str>) -> Result<candle_core::Device, DeviceError> {
    DeviceSpec::resolve(asked.map(str::parse).transpose()?)?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_cuda_is_refused_by_a_cpu_build() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
        if !cfg!(feature = "cuda") {
            let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
