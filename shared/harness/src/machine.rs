//! What a benchmark report says about the machine and the components it ran on.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};

use crate::cache_dir;

/// The CPU's model name (from /proc/cpuinfo), or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The machine's memory (from /proc/meminfo) as "<n.n> GiB", or "unknown".
pub fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kb: u64 = info
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `daprd --version` of the binary the harness starts (see [`crate::Daprd`]).
pub async fn daprd_version() -> anyhow::Result<String> {
    let bin = std::env::var("DAPRD")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache_dir().join("bin/daprd"));
    let out = tokio::process::Command::new(&bin)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", bin.display()))?;
    ensure!(
        out.status.success(),
        "{} --version failed: {}",
        bin.display(),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The Kafka version bootstrap installed (from the broker jar's name), or "unknown".
pub fn kafka_version() -> String {
    let jar_version = |libs: &Path| -> Option<String> {
        std::fs::read_dir(libs).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("kafka_2.13-")?
                .strip_suffix(".jar")
                .map(str::to_owned)
        })
    };
    std::fs::read_dir(cache_dir())
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kafka-"))
        .find_map(|e| jar_version(&e.path().join("libs")))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Warning, error and fatal lines of a daprd log (logfmt `level=…`), except those that
/// contain one of `expected`.
pub fn log_complaints(path: &Path, expected: &[&str]) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|log| {
            log.lines()
                .filter(|l| {
                    (l.contains("level=warning")
                        || l.contains("level=error")
                        || l.contains("level=fatal"))
                        && !expected.iter().any(|w| l.contains(w))
                })
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
