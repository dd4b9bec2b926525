//! What only the software backend has: the explicit opt-in and the file permissions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;

use posguard_hal::{Backend, HalError, KeyMode, SecureElementConfig};

#[test]
fn refused_unless_explicitly_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = SecureElementConfig {
        backend: Backend::Software,
        allow_software_keys: false,
        software_key_dir: dir.path().join("keys"),
        ..SecureElementConfig::default()
    };
    let err = posguard_hal::open(&config).unwrap_err();
    assert!(matches!(err, HalError::SoftwareNotAllowed), "{err}");
    assert!(err.to_string().contains("allow_software_keys = true"));
    assert!(
        !dir.path().join("keys").exists(),
        "nothing created when refused"
    );
}

#[test]
fn key_files_are_private_to_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let se = posguard_hal::open(&SecureElementConfig::software(&keys)).unwrap();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    se.seal(b"x").unwrap();
    se.counter_create().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&keys), 0o700);
    for f in ["identity.key", "storage.key", "counter"] {
        assert_eq!(mode(&keys.join(f)), 0o600, "{f}");
    }
}

#[test]
fn readable_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let se = posguard_hal::open(&SecureElementConfig::software(&keys)).unwrap();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    let key_file = keys.join("identity.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = se.sign_digest(&[0; 32]).unwrap_err();
    assert!(matches!(err, HalError::InsecurePermissions { .. }), "{err}");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = posguard_hal::open(&SecureElementConfig::software(&keys)).unwrap_err();
    assert!(matches!(err, HalError::InsecurePermissions { .. }), "{err}");
}

#[test]
fn a_corrupt_key_file_is_refused_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let se = posguard_hal::open(&SecureElementConfig::software(&keys)).unwrap();
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    let key_file = keys.join("identity.key");
    std::fs::write(&key_file, b"not a key").unwrap();
    let err = se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap_err();
    assert!(matches!(err, HalError::Occupied { .. }), "{err}");
    assert_eq!(std::fs::read(&key_file).unwrap(), b"not a key");
}
