//! The journal's witness: a file beside its directory (`<dir>.anchor`) naming the device and
//! the TPM counter value when the journal was created. A journal directory that is gone (or
//! holds a new, empty database) while the witness is there and the TPM counter has moved past
//! it means checkpoints were made into a journal that no longer exists: `Finding::Missing`.
//! Provisioning increments the counter too (init, self-test), so the counter alone cannot tell
//! a first start from a deleted journal; the witness can. A wipe of the journal *and* its
//! witness looks like a first start here — the collector sees that chain restart.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use posguard_proto::text::DeviceId;

use super::JournalError;

const WITNESS_MAGIC: &str = "posguard-journal-anchor 1";
/// A witness is a few dozen bytes; more is not ours.
const WITNESS_MAX: u64 = 4096;

/// The witness file of the journal at `dir`.
pub(crate) fn witness_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.anchor"))
}

/// What the witness says: `None` when there is none (or it names another device), `Some(None)`
/// when there is one that cannot be read or does not parse (only tampering makes one: it is
/// written atomically), else the TPM counter at the journal's creation.
pub(crate) fn read_witness(dir: &Path, device_id: &DeviceId) -> Option<Option<u64>> {
    let path = witness_path(dir);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        // There but unreadable: counts as a witness that does not parse (a finding only if the
        // journal is gone too), never as a reason not to start.
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the journal's witness");
            return Some(None);
        }
    };
    let mut text = String::new();
    if file.take(WITNESS_MAX).read_to_string(&mut text).is_err() {
        return Some(None);
    }
    let mut lines = text.lines();
    let parsed = (|| {
        (lines.next()? == WITNESS_MAGIC).then_some(())?;
        let device = lines.next()?.strip_prefix("device ")?;
        let counter = lines
            .next()?
            .strip_prefix("counter ")?
            .parse::<u64>()
            .ok()?;
        Some((device.to_owned(), counter))
    })();
    Some(match parsed {
        // Another device's witness says nothing about this device's journal.
        Some((device, _)) if device != device_id.as_str() => return None,
        Some((_, counter)) => Some(counter),
        None => None,
    })
}

/// Writes the witness atomically and durably (temporary file, fsync, rename, fsync of the
/// directory).
pub(crate) fn write_witness(
    dir: &Path,
    device_id: &DeviceId,
    tpm_counter: u64,
) -> Result<(), JournalError> {
    let path = witness_path(dir);
    let tmp = path.with_extension("anchor.tmp");
    let body = format!("{WITNESS_MAGIC}\ndevice {device_id}\ncounter {tpm_counter}\n");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| JournalError::io("write", &path, e))
}

/// The start-up check of a journal that holds nothing yet: `Some(witnessed counter)` when a
/// journal existed here before and checkpoints were made since (the counter moved past the
/// witness). `Some(None)`: the witness was there but unreadable.
pub(crate) fn vanished(witness: Option<Option<u64>>, tpm_counter: u64) -> Option<Option<u64>> {
    match witness? {
        None => Some(None),
        Some(counter) if tpm_counter > counter => Some(Some(counter)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_witness_flags_a_vanished_journal_only_once_the_counter_moved() {
        assert_eq!(vanished(None, 50), None, "no witness: a first start");
        assert_eq!(vanished(Some(Some(50)), 50), None, "no checkpoint yet");
        assert_eq!(vanished(Some(Some(50)), 51), Some(Some(50)));
        assert_eq!(vanished(Some(None), 1), Some(None), "a forged witness");
    }

    #[test]
    fn the_witness_file_round_trips_and_names_its_device() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let me = DeviceId::new("term-1").unwrap();
        let other = DeviceId::new("term-2").unwrap();
        assert_eq!(read_witness(&journal, &me), None);
        write_witness(&journal, &me, 77).unwrap();
        assert_eq!(read_witness(&journal, &me), Some(Some(77)));
        assert_eq!(read_witness(&journal, &other), None);
        std::fs::write(witness_path(&journal), "junk").unwrap();
        assert_eq!(read_witness(&journal, &me), Some(None));
    }
}
