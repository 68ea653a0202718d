//! The wasmtime settings that edges run modules with and orchestrators compile them for.
//!
//! Both sides build their engine from [`code_config`], so a module an orchestrator compiled
//! ahead of time for an edge's [`Target`] is the code the edge would have compiled itself.
//! An edge reports its target (the triple and the CPU features Cranelift found, exactly as
//! wasmtime finds them) and the [`fingerprint`] of its engine; an orchestrator rebuilds the
//! engine from the target, and compiles only if its fingerprint is the same (same wasmtime,
//! same settings, same flags). Anything else and the edge compiles for itself.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use cranelift_codegen::settings::{Configurable, SetError, SetResult, SettingKind};
use wasmtime::{Config, Engine, OptLevel};

/// The most CPU features a target may name (x86-64 has about 30, aarch64 fewer).
pub const MAX_FEATURES: usize = 64;
/// The longest target triple accepted.
pub const MAX_TRIPLE_LEN: usize = 64;

/// The settings that shape compiled code. Anything here changes what a precompiled module
/// looks like, so edges and orchestrators must share it; what only shapes running (the
/// pooling allocator, stack size) is the edge's own.
pub fn code_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true).cranelift_opt_level(OptLevel::Speed);
    config
}

/// What an engine compiles for: enough for another machine to compile the same code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `x86_64-unknown-linux-gnu`, for example.
    pub triple: String,
    /// The Cranelift ISA flags enabled for this CPU (`has_avx2`, ...), sorted, each once.
    pub features: Vec<String>,
}

/// Why a target cannot be compiled for here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the target triple {0:?} is not one this build of Cranelift compiles for")]
    UnsupportedTriple(String),
    #[error("{0:?} is not a CPU feature of {1}")]
    UnknownFeature(String, String),
    #[error("a target names at most {MAX_FEATURES} CPU features")]
    TooManyFeatures,
    #[error("the wasm engine for {target}: {why}")]
    Engine { target: String, why: String },
}

impl Target {
    /// This machine, as wasmtime compiles for it when given no target.
    pub fn host() -> Result<Target, TargetError> {
        let builder = cranelift_native::builder_with_options(false).map_err(|e| TargetError::UnsupportedTriple(e.to_owned()))?;
        let mut recorder = Recorder::default();
        cranelift_native::infer_native_flags(&mut recorder).map_err(|e| TargetError::UnsupportedTriple(e.to_owned()))?;
        Ok(Target { triple: builder.triple().to_string(), features: recorder.enabled.into_iter().collect() })
    }

    /// Checks a target another machine reported: a triple this build compiles for, and only
    /// that ISA's boolean flags (never a shared Cranelift setting).
    pub fn checked(triple: &str, features: impl IntoIterator<Item = String>) -> Result<Target, TargetError> {
        if triple.len() > MAX_TRIPLE_LEN {
            return Err(TargetError::UnsupportedTriple(triple.chars().take(MAX_TRIPLE_LEN).collect()));
        }
        let unsupported = || TargetError::UnsupportedTriple(triple.to_owned());
        let parsed = target_lexicon::Triple::from_str(triple).map_err(|_| unsupported())?;
        let isa = cranelift_codegen::isa::lookup(parsed).map_err(|_| unsupported())?;
        let flags: BTreeSet<&str> = isa.iter().filter(|s| matches!(s.kind, SettingKind::Bool)).map(|s| s.name).collect();
        let mut wanted = BTreeSet::new();
        for (i, feature) in features.into_iter().enumerate() {
            if i == MAX_FEATURES {
                return Err(TargetError::TooManyFeatures);
            }
            if !flags.contains(feature.as_str()) {
                return Err(TargetError::UnknownFeature(feature, triple.to_owned()));
            }
            wanted.insert(feature);
        }
        Ok(Target { triple: triple.to_owned(), features: wanted.into_iter().collect() })
    }

    /// An engine that compiles for this target with [`code_config`]'s settings. It compiles
    /// only: the code it makes may use CPU features this machine lacks.
    #[allow(unsafe_code)]
    pub fn compiling_engine(&self) -> Result<Engine, TargetError> {
        let mut config = code_config();
        let engine_error = |why: String| TargetError::Engine { target: self.to_string(), why };
        config.target(&self.triple).map_err(|e| engine_error(format!("{e:#}")))?;
        for feature in &self.features {
            // SAFETY: wrong CPU flags make code that faults on a CPU without those features.
            // This engine never runs what it compiles; the engine that loads it checks every
            // enabled flag against its own CPU first (wasmtime's `Module::deserialize`).
            unsafe {
                config.cranelift_flag_enable(feature);
            }
        }
        Engine::new(&config).map_err(|e| engine_error(format!("{e:#}")))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.triple)?;
        if !self.features.is_empty() {
            write!(f, "+{}", self.features.join(","))?;
        }
        Ok(())
    }
}

/// A short fingerprint of everything that makes an engine's compiled code what it is: the
/// wasmtime version, its settings, the target and its flags. Two engines with the same
/// fingerprint load each other's precompiled modules.
pub fn fingerprint(engine: &Engine) -> String {
    // Fixed keys: the same for the same inputs in every process built with this toolchain
    // (another toolchain may disagree, and then the edge compiles for itself).
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Collects the flags `infer_native_flags` enables.
#[derive(Default)]
struct Recorder {
    enabled: BTreeSet<String>,
}

impl Configurable for Recorder {
    fn set(&mut self, name: &str, _value: &str) -> SetResult<()> {
        // Only boolean CPU features are reported; a non-boolean setting would not round-trip.
        Err(SetError::BadName(name.to_owned()))
    }

    fn enable(&mut self, name: &str) -> SetResult<()> {
        self.enabled.insert(name.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_target_rebuilds_the_host_engine() {
        let host = Target::host().expect("this machine has a target");
        assert!(!host.triple.is_empty());
        let native = Engine::new(&code_config()).expect("an engine");
        let rebuilt = host.compiling_engine().expect("an engine for the target");
        assert_eq!(fingerprint(&native), fingerprint(&rebuilt), "a compile for {host} would not load here");
    }

    #[test]
    #[allow(unsafe_code)]
    fn a_precompiled_module_loads_in_the_engine_it_was_compiled_for() {
        let host = Target::host().expect("this machine has a target");
        let wasm = wat::parse_str(r#"(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))"#)
            .expect("valid WAT");
        let artifact = host.compiling_engine().expect("an engine for the target").precompile_module(&wasm).expect("compiles");
        let native = Engine::new(&code_config()).expect("an engine");
        // SAFETY: compiled just above, by this wasmtime, for this CPU.
        let module = unsafe { wasmtime::Module::deserialize(&native, &artifact) }.expect("loads");
        assert!(module.get_export("add").is_some());
    }

    #[test]
    fn fewer_features_mean_another_fingerprint() {
        let host = Target::host().expect("this machine has a target");
        if host.features.is_empty() {
            return;
        }
        let fewer = Target { features: host.features[1..].to_vec(), ..host.clone() };
        let a = fingerprint(&host.compiling_engine().expect("an engine for the target"));
        let b = fingerprint(&fewer.compiling_engine().expect("an engine for the target"));
        assert_ne!(a, b, "dropping {} did not change the fingerprint", host.features[0]);
    }

    #[test]
    fn a_reported_target_names_only_that_isa_s_flags() {
        let host = Target::host().expect("this machine has a target");
        let checked = Target::checked(&host.triple, host.features.iter().rev().cloned()).expect("its own flags");
        assert_eq!(checked, host, "order and duplicates do not matter");
        for bad in ["opt_level", "enable_verifier", "unwind_info", "has_nothing_like_this"] {
            let err = Target::checked(&host.triple, [bad.to_owned()]).expect_err("not a flag of this ISA");
            assert_eq!(err, TargetError::UnknownFeature(bad.to_owned(), host.triple.clone()));
        }
        assert!(matches!(Target::checked("not-a-triple", []), Err(TargetError::UnsupportedTriple(_))));
        assert!(matches!(Target::checked(&"x".repeat(500), []), Err(TargetError::UnsupportedTriple(_))));
        let many = (0..MAX_FEATURES + 1).map(|_| host.features.first().cloned().unwrap_or_default());
        if !host.features.is_empty() {
            assert_eq!(Target::checked(&host.triple, many), Err(TargetError::TooManyFeatures));
        }
    }
}
