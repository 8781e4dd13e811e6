//! The sandbox's error type: problems on the host side or with the request.
//!
//! A guest that misbehaves (traps, loops, exhausts memory) is never an error:
//! it is an [`crate::Outcome`].

/// Why the sandbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The bytes are not a usable WebAssembly module: bad encoding, failed
    /// validation, an import the sandbox does not provide, no `_start`, or too large.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// A configuration value or task limit was rejected before anything ran.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A file or directory the sandbox needed could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What the sandbox was doing, naming the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A host-side resource ran out (instance pool full, thread could not start):
    /// the task did nothing wrong and may be retried, here later or elsewhere.
    #[error("sandbox resources exhausted: {0}")]
    Exhausted(String),
    /// wasmtime failed for a reason that is neither the guest's nor a resource limit.
    #[error("wasmtime host error: {0}")]
    Host(String),
}

impl SandboxError {
    /// True when retrying the same request later (or on another node) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SandboxError::Exhausted(_) | SandboxError::Io { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}
