//! What machine a run measured on, precisely enough to tell two CPUs of "the same kind" apart.
//!
//! `/proc/cpuinfo`'s model name alone ("AMD EPYC" in a VM) does not: two machines that print it can be different
//! generations whose SIMD paths (AVX-512 or not) and caches make the runtimes' libraries choose other kernels, so
//! timing figures recorded on one do not carry to the other. [`CpuIdentity`] records the vendor, family, model and
//! stepping, the SIMD features that inference libraries dispatch on, the cache sizes and the core count;
//! [`CpuIdentity::fingerprint`] names that combination, and the regression gate compares timing figures only
//! between runs with the same fingerprint.

use serde::{Deserialize, Serialize};

/// CPU features inference libraries choose kernels by (ONNX Runtime's MLAS, ggml, gemm): the ones present are
/// recorded, in this order.
const SIMD_FLAGS: [&str; 16] = [
    "sse4_2",
    "avx",
    "f16c",
    "fma",
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "sve",
];

/// The identity of the CPU a run measured on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuIdentity {
    pub vendor: String,
    pub model_name: String,
    pub family: Option<u32>,
    pub model: Option<u32>,
    pub stepping: Option<u32>,
    /// The [`SIMD_FLAGS`] this CPU has.
    pub simd: Vec<String>,
    /// Cache sizes in KiB by name: `L1d`, `L1i`, `L2`, `L3` (of cpu0).
    pub caches_kib: Vec<(String, u64)>,
    /// Logical cores available to this process.
    pub cores: usize,
}

impl CpuIdentity {
    /// This machine's CPU, from `/proc/cpuinfo` and `/sys/devices/system/cpu/cpu0/cache` (fields it cannot read are
    /// left empty, e.g. on another OS).
    pub fn current() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let mut id = Self::from_cpuinfo(&cpuinfo);
        id.caches_kib = read_caches(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"));
        id.cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        id
    }

    /// The fields `/proc/cpuinfo` gives (its first processor).
    pub fn from_cpuinfo(cpuinfo: &str) -> Self {
        let first = cpuinfo.split("\n\n").next().unwrap_or("");
        let field = |name: &str| {
            first.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
        };
        let number = |name: &str| field(name).and_then(|v| v.parse().ok());
        let flags: Vec<String> = field("flags")
            .or_else(|| field("Features"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Self {
            vendor: field("vendor_id").or_else(|| field("CPU implementer")).unwrap_or_default(),
            model_name: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
            family: number("cpu family"),
            model: number("model"),
            stepping: number("stepping"),
            simd: SIMD_FLAGS.iter().filter(|f| flags.iter().any(|x| x == *f)).map(|f| (*f).to_owned()).collect(),
            caches_kib: Vec::new(),
            cores: 0,
        }
    }

    /// A short name for this CPU: vendor, family, model, stepping and a hash of the SIMD features, caches and core
    /// count, e.g. `AuthenticAMD-25-17-1-3f9a2c1d`. Equal fingerprints: timing figures are comparable.
    pub fn fingerprint(&self) -> String {
        let n = |v: Option<u32>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        let detail = format!("{}|{:?}|{}|{}", self.simd.join(","), self.caches_kib, self.cores, self.model_name);
        let hash = xxhash_rust::xxh64::xxh64(detail.as_bytes(), 0);
        format!("{}-{}-{}-{}-{:08x}", self.vendor, n(self.family), n(self.model), n(self.stepping), hash as u32)
    }

    /// One line for reports: model name, family/model/stepping, SIMD, caches, cores.
    pub fn describe(&self) -> String {
        let caches: Vec<String> = self.caches_kib.iter().map(|(k, v)| format!("{k} {v} KiB")).collect();
        format!(
            "{} (family {} model {} stepping {}; {}; {}; {} cores)",
            self.model_name,
            self.family.map_or("?".into(), |v| v.to_string()),
            self.model.map_or("?".into(), |v| v.to_string()),
            self.stepping.map_or("?".into(), |v| v.to_string()),
            if self.simd.is_empty() { "no SIMD flags read".to_owned() } else { self.simd.join(" ") },
            if caches.is_empty() { "caches unknown".to_owned() } else { caches.join(", ") },
            self.cores
        )
    }
}

/// cpu0's caches from sysfs: `indexN/{level,type,size}` -> ("L1d", 48), ("L2", 1024), ...
fn read_caches(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut caches = Vec::new();
    for i in 0..8 {
        let index = dir.join(format!("index{i}"));
        let read = |f: &str| std::fs::read_to_string(index.join(f)).map(|s| s.trim().to_owned()).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
        let kib = size
            .strip_suffix('K')
            .and_then(|k| k.parse().ok())
            .or_else(|| size.strip_suffix('M').and_then(|m| m.parse::<u64>().ok()).map(|m| m * 1024));
        let suffix = match kind.as_str() {
            "Data" => "d",
            "Instruction" => "i",
            _ => "",
        };
        if let Some(kib) = kib {
            caches.push((format!("L{level}{suffix}"), kib));
        }
    }
    caches.sort();
    caches
}

/// The git commit of the working directory, if it is a checkout.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEN4: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n\
        stepping\t: 1\nflags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512bw avx512vl avx512_vnni avx512_bf16\n\n\
        processor\t: 1\nvendor_id\t: AuthenticAMD\n";

    #[test]
    fn cpuinfo_is_read_and_the_fingerprint_tells_generations_apart() {
        let zen4 = CpuIdentity { caches_kib: vec![("L2".into(), 1024)], cores: 2, ..CpuIdentity::from_cpuinfo(ZEN4) };
        assert_eq!(
            (zen4.vendor.as_str(), zen4.family, zen4.model, zen4.stepping),
            ("AuthenticAMD", Some(25), Some(17), Some(1))
        );
        assert_eq!(
            zen4.simd,
            ["sse4_2", "avx", "f16c", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
        );
        assert!(zen4.fingerprint().starts_with("AuthenticAMD-25-17-1-"), "{}", zen4.fingerprint());
        assert_eq!(zen4.fingerprint(), zen4.clone().fingerprint());
        // Same model name, no AVX-512 (another generation): another fingerprint, even with the same family/model.
        let no_avx512 = CpuIdentity { simd: zen4.simd[..5].to_vec(), ..zen4.clone() };
        assert_ne!(no_avx512.fingerprint(), zen4.fingerprint());
        let more_cores = CpuIdentity { cores: 4, ..zen4.clone() };
        assert_ne!(more_cores.fingerprint(), zen4.fingerprint());
        assert!(zen4.describe().contains("family 25 model 17 stepping 1"), "{}", zen4.describe());
    }

    #[test]
    fn this_machine_is_identified() {
        let me = CpuIdentity::current();
        assert!(me.cores >= 1 && !me.model_name.is_empty());
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert!(!me.vendor.is_empty() && me.family.is_some() && me.simd.iter().any(|f| f == "sse4_2"), "{me:?}");
    }
}
