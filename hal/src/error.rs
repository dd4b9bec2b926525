//! The one error type of the hardware layer.

use std::path::PathBuf;

/// What went wrong at the hardware boundary. Messages name the thing at fault and what to check;
/// they never contain key material or sealed secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HalError {
    /// Nothing answered at the configured TCTI, or it answered with something other than a TPM.
    #[error(
        "no TPM answered at TCTI `{tcti}`: {detail}. Check that the TPM device exists \
         (`/dev/tpmrm0` on a terminal, `ls -l /dev/tpmrm0`), that this user may open it \
         (group `tss`), or, for a software TPM, that swtpm is running at that address"
    )]
    Unreachable {
        /// The TCTI string that was tried.
        tcti: String,
        /// What the TSS said, or that it timed out.
        detail: String,
    },

    /// The TCTI string in the configuration does not parse.
    #[error("invalid TCTI `{tcti}`: {detail}")]
    BadTcti {
        /// The offending TCTI string.
        tcti: String,
        /// Why it was rejected.
        detail: String,
    },

    /// A persistent handle (or key file) holds something that is not what posguard expects there.
    /// Nothing was evicted or overwritten.
    #[error(
        "{what} at {location} holds a different object ({found}); refusing to use or replace it. \
         Nothing was evicted or overwritten. Remove it yourself if nothing needs it, or choose \
         another place in the agent's `[secure_element]` configuration"
    )]
    Occupied {
        /// What posguard wanted there ("device identity key", "storage root key", "NV counter").
        what: &'static str,
        /// The handle (hex) or path.
        location: String,
        /// A short description of what is there instead.
        found: String,
    },

    /// A persistent handle posguard would use holds an object posguard did not create (its public
    /// area is not posguard's template). It was not used, so no authorisation was tried on it
    /// and no dictionary-attack failure counted, and it was not evicted.
    #[error(
        "{what} handle {handle} holds an object posguard did not create ({found}); posguard did \
         not use it (no password was tried) and did not evict it. Either use a free handle: \
         `posguard-provision init {option} {free}` (init writes it to agent.toml as \
         `[secure_element] {key} = {free}`; csr and selftest take the same option), or, only \
         if you know nothing else needs that object, remove it with \
         `posguard-provision init --evict-foreign {handle}`"
    )]
    Foreign {
        /// What posguard wanted there ("device identity key", "storage root key").
        what: &'static str,
        /// The handle (hex).
        handle: String,
        /// What the object's public area says it is.
        found: String,
        /// The command-line option that chooses another handle.
        option: &'static str,
        /// The `[secure_element]` key of that handle.
        key: &'static str,
        /// A handle that is free on this TPM now, or advice on finding one.
        free: String,
    },

    /// `--evict-foreign` named a handle posguard may not evict.
    #[error("not evicting {handle}: {reason}")]
    EvictRefused {
        /// The handle (hex).
        handle: String,
        /// Why, and what to do instead.
        reason: String,
    },

    /// The device identity key does not exist yet (provisioning has not created it).
    #[error("no device identity key at {location}: provision the terminal first")]
    NoIdentityKey {
        /// The handle (hex) or path that was looked at.
        location: String,
    },

    /// The monotonic counter does not exist yet.
    #[error("no monotonic counter at {location}: provision the terminal first")]
    NoCounter {
        /// The NV index (hex) or path that was looked at.
        location: String,
    },

    /// A secret given to `seal` is empty or larger than [`crate::MAX_SEALED_SECRET`].
    #[error("a sealed secret must be 1 to {max} bytes, got {len}")]
    SecretSize {
        /// The length that was given.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },

    /// A sealed blob is malformed, was tampered with, or belongs to another TPM or backend.
    #[error("sealed blob rejected: {reason}")]
    SealedBlob {
        /// Why it was rejected.
        reason: String,
    },

    /// The software backend was configured but not explicitly allowed.
    #[error(
        "the software secure element keeps keys in files, not in hardware; it is refused unless \
         the config sets `allow_software_keys = true` (development machines only)"
    )]
    SoftwareNotAllowed,

    /// A file of the software backend is readable or writable by others than its owner.
    #[error(
        "{path} has mode {mode:o}; key material must be private to its owner (0600, directory 0700)"
    )]
    InsecurePermissions {
        /// The file or directory.
        path: PathBuf,
        /// Its current permission bits.
        mode: u32,
    },

    /// A file of the software backend could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", "create directory").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },

    /// A TPM command failed.
    #[error("TPM {operation} failed: {source}")]
    Tpm {
        /// The operation that failed.
        operation: &'static str,
        /// The TSS error, with its response code.
        #[source]
        source: tss_esapi::Error,
    },

    /// The TPM answered with a value posguard cannot use (wrong key type, bad signature form).
    #[error("unexpected answer from the secure element during {operation}: {detail}")]
    Unexpected {
        /// The operation.
        operation: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// The thread that owns the TPM context has stopped (it panicked or was shut down).
    #[error("the TPM worker thread has stopped")]
    WorkerGone,
}

impl HalError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        HalError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn tpm(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> Self {
        move |source| HalError::Tpm { operation, source }
    }

    pub(crate) fn blob(reason: impl Into<String>) -> Self {
        HalError::SealedBlob {
            reason: reason.into(),
        }
    }
}
