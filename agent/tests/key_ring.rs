//! The journal's key ring stays bounded (real sled on disk, software backend): every start
//! certifies a new journal key, and certificates whose keys sign no stored record are retired —
//! those of starts that wrote nothing, and those of starts whose records were shipped and
//! pruned. What remains still verifies offline and at the next start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use posguard_agent::clock::Clock;
use posguard_agent::journal::{Journal, JournalConfig, key_ring, verify_dir};
use posguard_hal::{KeyMode, SecureElement, SecureElementConfig};
use posguard_proto::event::{Actor, Event, EventKind};
use posguard_proto::text::{ClerkId, DeviceId};

struct Fixture {
    keys: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let f = Fixture {
            keys: tempfile::tempdir().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        f.element()
            .ensure_identity_key(KeyMode::OpenOrCreate)
            .unwrap();
        f
    }

    fn element(&self) -> Arc<dyn SecureElement> {
        posguard_hal::open(&SecureElementConfig::software(
            self.keys.path().join("keys"),
        ))
        .unwrap()
    }

    fn config(&self) -> JournalConfig {
        JournalConfig {
            max_bytes: 1024 * 1024,
            ..JournalConfig::at(self.dir.path().join("journal"))
        }
    }

    fn open(&self) -> Journal {
        let device = DeviceId::new("term-ring").unwrap();
        let (j, report) =
            Journal::open(&self.config(), device, self.element(), Clock::system()).unwrap();
        assert!(report.finding.is_none(), "{:?}", report.finding);
        j
    }
}

fn logout(i: u64) -> Event {
    Event::new(
        Clock::system().stamp(),
        Actor::System,
        None,
        EventKind::LoggedOut {
            clerk: ClerkId::new(format!("clerk-{i}")).unwrap(),
        },
    )
}

#[test]
fn starts_that_write_nothing_leave_no_certificate_behind() {
    let f = Fixture::new();
    for _ in 0..40 {
        f.open().shutdown_blocking().unwrap();
    }
    let ring = key_ring(&f.config().dir).unwrap();
    assert_eq!((ring.certificates, ring.signing_keys), (1, 0), "{ring:?}");
    let j = f.open();
    j.append_blocking(logout(1)).unwrap();
    j.shutdown_blocking().unwrap();
    let ring = key_ring(&f.config().dir).unwrap();
    assert_eq!((ring.certificates, ring.signing_keys), (1, 1), "{ring:?}");
    assert!(
        verify_dir(&f.config().dir, None)
            .unwrap()
            .first_bad
            .is_none()
    );
}

#[test]
fn keys_of_shipped_and_pruned_records_are_retired_and_the_rest_verifies() {
    let f = Fixture::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let starts = 30u64;
    for s in 0..starts {
        let j = f.open();
        let mut head = 0;
        for i in 0..150 {
            head = j.append_blocking(logout(s * 1000 + i)).unwrap();
        }
        // The collector stored everything: shipped records are the first to be pruned.
        rt.block_on(j.ack(head)).unwrap();
        j.shutdown_blocking().unwrap();
    }
    let ring = key_ring(&f.config().dir).unwrap();
    assert!(ring.certificates <= ring.signing_keys + 1, "{ring:?}");
    assert!(
        (ring.certificates as u64) < starts / 2,
        "pruning retired no certificate: {ring:?}"
    );
    let report = verify_dir(&f.config().dir, None).unwrap();
    assert!(report.first_bad.is_none(), "{:?}", report.first_bad);
    assert!(report.first_seq.unwrap() > 1, "nothing was pruned");
    // The next start checks the whole journal against the remaining certificates.
    f.open().shutdown_blocking().unwrap();
}
