//! The process-wide registry behind the C ABI, made on first use from the
//! environment's options; making it also installs the fork handlers
//! (`fork.rs`), so that no fork can find its lock held by another thread.

use crate::config::Config;
use crate::registry::Registry;

/// The process-wide registry behind the C ABI, configured from the
/// environment on first use.
pub fn global() -> &'static Registry {
    static GLOBAL: once_cell::sync::Lazy<Registry> = once_cell::sync::Lazy::new(|| {
        let config = Config::from_env();
        // The fault-injection build reads OM_CONSTANT_FAULTS, for C hosts.
        #[cfg(feature = "fault-injection")]
        if let Some(problem) = crate::fault::from_env() {
            crate::log::emit(config.log, crate::log::Level::Error, &problem);
        }
        Registry::new(config)
    });
    let registry: &'static Registry = &GLOBAL;
    #[cfg(not(loom))]
    {
        // One atomic load once done; global() is on no per-inference path.
        static FORK: std::sync::Once = std::sync::Once::new();
        FORK.call_once(|| crate::fork::install(registry));
    }
    registry
}
