//! The transaction cache on real sled, with the software backend and with a TPM (a fresh
//! swtpm per test): nothing readable on disk, tampering and moved records named, restarts,
//! the card-data guard, the size bound, key rotation, and SIGKILL during rotation (driver:
//! `examples/cache_crash_driver.rs`, built on demand by `support/example_driver.rs` when
//! missing or stale; `POSGUARD_CACHE_DRIVER` overrides its path, `POSGUARD_CRASH_SEED` replays a seed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "support/example_driver.rs"]
mod example_driver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use posguard_agent::cache::{Cache, CacheAudit, CacheConfig, CacheError, RecordId};
use posguard_agent::datakey::{Keyring, SEALED_FILE};
use posguard_hal::testing::Swtpm;
use posguard_hal::{SecureElement, SecureElementConfig};
use posguard_proto::event::{CacheRefusal, EventKind, PeerCred};

enum Backend {
    Software(tempfile::TempDir),
    Tpm(Swtpm),
}

struct Fixture {
    backend: Backend,
    state: tempfile::TempDir,
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(EventKind, Option<PeerCred>)>>);

impl CacheAudit for Recorder {
    fn record(&self, kind: EventKind, peer: Option<PeerCred>) -> Result<(), String> {
        self.0.lock().unwrap().push((kind, peer));
        Ok(())
    }
}

impl Fixture {
    fn new(tpm: bool) -> Self {
        let backend = if tpm {
            Backend::Tpm(Swtpm::start().unwrap())
        } else {
            Backend::Software(tempfile::tempdir().unwrap())
        };
        Fixture {
            backend,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn se_config(&self) -> SecureElementConfig {
        match &self.backend {
            Backend::Software(d) => SecureElementConfig::software(d.path().join("keys")),
            Backend::Tpm(t) => t.config(),
        }
    }

    fn element(&self) -> Arc<dyn SecureElement> {
        posguard_hal::open(&self.se_config()).unwrap()
    }

    fn config(&self) -> CacheConfig {
        CacheConfig::at(self.state.path().join("cache"))
    }

    fn open_with(&self, config: &CacheConfig, audit: Arc<dyn CacheAudit>) -> Cache {
        let keyring = Keyring::open(self.element(), self.state.path()).unwrap();
        Cache::open(config, keyring, audit).unwrap()
    }

    fn open(&self) -> Cache {
        self.open_with(&self.config(), Arc::new(Recorder::default()))
    }
}

fn id(s: &str) -> RecordId {
    RecordId::new(s).unwrap()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The forms a value could leak in: raw, hex (both cases), and base64 at every alignment.
fn leak_forms(canary: &[u8]) -> Vec<Vec<u8>> {
    use data_encoding::{BASE64, BASE64URL, HEXLOWER, HEXUPPER};
    let mut forms = vec![
        canary.to_vec(),
        HEXLOWER.encode(canary).into_bytes(),
        HEXUPPER.encode(canary).into_bytes(),
    ];
    for shift in 0..3 {
        for enc in [&BASE64, &BASE64URL] {
            let text = enc.encode(&canary[shift..]);
            // Drop the last 4 characters: they depend on what follows.
            forms.push(text.as_bytes()[..text.len() - 4].to_vec());
        }
    }
    forms
}

fn nothing_readable_on_disk(tpm: bool) {
    let f = Fixture::new(tpm);
    let canary = b"CANARY-posguard-3f9a1c-this-must-never-reach-the-disk-in-clear";
    {
        let cache = f.open();
        for i in 0..50 {
            cache.put(&id(&format!("sale-{i}")), canary, None).unwrap();
        }
        // Rotation rewrites everything: still nothing readable.
        cache.rotate_key().unwrap();
        cache.reencrypt().unwrap();
        cache.put(&id("last"), canary, None).unwrap();
        assert_eq!(&cache.get(&id("sale-7")).unwrap().value[..], &canary[..]);
    }
    let mut files = Vec::new();
    files_under(f.state.path(), &mut files);
    assert!(files.iter().any(|p| p.ends_with("cache/db")));
    assert!(files.iter().any(|p| p.ends_with(SEALED_FILE)));
    assert!(files.iter().any(|p| p.ends_with("datakey.v2.sealed")));
    let forms = leak_forms(canary);
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        for form in &forms {
            assert!(
                !bytes.windows(form.len()).any(|w| w == &form[..]),
                "{} holds the canary in a readable form ({})",
                path.display(),
                String::from_utf8_lossy(form)
            );
        }
    }
}

#[test]
fn nothing_readable_on_disk_software() {
    nothing_readable_on_disk(false);
}

#[test]
fn nothing_readable_on_disk_tpm() {
    nothing_readable_on_disk(true);
}

#[test]
fn tampered_or_moved_records_are_named_and_others_unaffected() {
    let f = Fixture::new(false);
    let dir = f.state.path().join("cache");
    {
        let cache = f.open();
        for name in ["a", "b", "c", "e"] {
            cache
                .put(&id(name), format!("value {name}").as_bytes(), None)
                .unwrap();
        }
    }
    {
        let db = sled::Config::new()
            .path(&dir)
            .segment_size(128 * 1024)
            .open()
            .unwrap();
        let t = db.open_tree("records").unwrap();
        let mut b = t.get("b").unwrap().unwrap().to_vec();
        let last = b.len() - 1;
        b[last] ^= 1; // the tag
        t.insert("b", b).unwrap();
        let a = t.get("a").unwrap().unwrap();
        t.insert("d", a).unwrap(); // a copy under another id
        let mut e = t.get("e").unwrap().unwrap().to_vec();
        e[12] ^= 1; // the expiry, in the plain header
        t.insert("e", e).unwrap();
        t.insert("f", &b"short"[..]).unwrap();
        db.flush().unwrap();
    }
    let cache = f.open();
    for bad in ["b", "d", "e", "f"] {
        match cache.get(&id(bad)) {
            Err(err @ CacheError::Unreadable { .. }) => {
                assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(&cache.get(&id("a")).unwrap().value[..], b"value a");
    assert_eq!(&cache.get(&id("c")).unwrap().value[..], b"value c");
    // A rotation cannot re-encrypt them; it keeps their key and moves the others on.
    cache.rotate_key().unwrap();
    let report = cache.reencrypt().unwrap();
    assert_eq!(report.reencrypted, 2);
    assert_eq!(&cache.get(&id("c")).unwrap().value[..], b"value c");
    assert!(matches!(cache.get(&id("zz")), Err(CacheError::NotFound(_))));
}

fn restart_and_reopen(tpm: bool) {
    let f = Fixture::new(tpm);
    let expires = {
        let cache = f.open();
        cache.put(&id("one"), b"first", Some(3600)).unwrap();
        cache.rotate_key().unwrap();
        cache.put(&id("two"), b"second", None).unwrap();
        cache.put(&id("one"), b"first", Some(3600)).unwrap()
    };
    // For the TPM, a "reboot": swtpm killed and started again on the same state.
    let f = Fixture {
        backend: match f.backend {
            Backend::Tpm(t) => Backend::Tpm(t.restart().unwrap()),
            other => other,
        },
        state: f.state,
    };
    let cache = f.open();
    assert_eq!(cache.key_versions(), vec![1, 2]);
    let one = cache.get(&id("one")).unwrap();
    assert_eq!(
        (&one.value[..], one.expires_unix_ms),
        (&b"first"[..], expires)
    );
    assert_eq!(&cache.get(&id("two")).unwrap().value[..], b"second");
    let listed = cache.list(None, 100).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].size, 5);
}

#[test]
fn restart_and_reopen_software() {
    restart_and_reopen(false);
}

#[test]
fn restart_and_reopen_tpm() {
    restart_and_reopen(true);
}

const CARDS: &[&str] = &[
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "3782 822463 10005",
    r#"{"sale":12,"pan":"5555555555554444","exp":"12/29"}"#,
    "receipt 7: card 6011-1111-1111-1117 approved",
];

const NOT_CARDS: &[&str] = &[
    "4111111111111112",
    "4111 1111 1111 1112",
    "4111-1111-1111-1112",
    r#"{"sale":12,"ref":"5555555555554445","total_minor":1999}"#,
    "411111111111", // 12 digits
];

#[test]
fn card_data_guard_refuses_and_audits_without_the_number() {
    let f = Fixture::new(false);
    let audit = Arc::new(Recorder::default());
    let cache = f.open_with(&f.config(), audit.clone());
    let peer = PeerCred {
        uid: 1000,
        gid: 1000,
        pid: 4242,
    };
    for (i, value) in CARDS.iter().enumerate() {
        let err = cache
            .put_as(Some(peer), &id(&format!("r{i}")), value.as_bytes(), None)
            .unwrap_err();
        assert!(matches!(err, CacheError::CardData), "{value}: {err}");
        assert!(
            !err.to_string().chars().any(|c| c.is_ascii_digit()),
            "{err}"
        );
    }
    // A card number as the id (ids are stored in the clear) is refused too.
    assert!(matches!(
        cache.put(&id("4111111111111111"), b"x", None),
        Err(CacheError::CardData)
    ));
    assert!(cache.list(None, 100).unwrap().is_empty());
    let events = audit.0.lock().unwrap();
    assert_eq!(events.len(), CARDS.len() + 1);
    for (kind, who) in events.iter().take(CARDS.len()) {
        assert_eq!(
            kind,
            &EventKind::CacheRecordRefused {
                reason: CacheRefusal::CardData
            }
        );
        assert_eq!(who, &Some(peer));
        let text = format!("{kind:?} {}", serde_json::to_string(kind).unwrap());
        for card in CARDS {
            let digits: String = card.chars().filter(char::is_ascii_digit).collect();
            assert!(!text.contains(&digits[..8]), "{text}");
        }
    }
    drop(events);
    for (i, value) in NOT_CARDS.iter().enumerate() {
        let key = id(&format!("ok{i}"));
        cache.put(&key, value.as_bytes(), None).unwrap();
        assert_eq!(&cache.get(&key).unwrap().value[..], value.as_bytes());
    }
    assert_eq!(audit.0.lock().unwrap().len(), CARDS.len() + 1);
}

#[test]
fn card_data_guard_off_only_by_explicit_setting() {
    let f = Fixture::new(false);
    let config: CacheConfig = toml::from_str(&format!(
        "dir = {:?}\ncard_data_guard = false",
        f.state.path().join("cache")
    ))
    .unwrap();
    let cache = f.open_with(&config, Arc::new(Recorder::default()));
    cache.put(&id("pan"), CARDS[0].as_bytes(), None).unwrap();
    assert!(CacheConfig::default().card_data_guard);
}

#[test]
fn size_bound_refuses_with_full_and_frees_on_delete() {
    let f = Fixture::new(false);
    let mut config = f.config();
    config.max_bytes = 64 * 1024;
    let cache = f.open_with(&config, Arc::new(Recorder::default()));
    let value = vec![b'v'; 1024];
    let mut stored = 0;
    let err = loop {
        match cache.put(&id(&format!("r{stored}")), &value, None) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, CacheError::Full { max: 65536, .. }), "{err}");
    assert!((55..64).contains(&stored), "{stored}");
    assert!(cache.used_bytes() <= 65536);
    // Replacing a record with one of the same size still fits; a new one does not.
    cache.put(&id("r0"), &value, None).unwrap();
    assert!(cache.delete(&id("r1")).unwrap());
    assert!(!cache.delete(&id("r1")).unwrap());
    cache.put(&id("new"), &value, None).unwrap();
    assert!(matches!(
        cache.put(&id("r1"), &value, Some(0)),
        Err(CacheError::BadRetention { .. })
    ));
}

fn rotation_destroys_unused_keys(tpm: bool) {
    let f = Fixture::new(tpm);
    let cache = f.open();
    for i in 0..100 {
        cache
            .put(&id(&format!("r{i}")), format!("value {i}").as_bytes(), None)
            .unwrap();
    }
    assert_eq!(cache.rotate_key().unwrap(), 2);
    let first = cache.reencrypt().unwrap();
    assert_eq!(first.reencrypted, 100);
    // Version 1 is the clerks' key too: kept.
    assert!(first.retired.is_empty());
    assert_eq!(cache.rotate_key().unwrap(), 3);
    let second = cache.reencrypt().unwrap();
    assert_eq!((second.reencrypted, second.retired.clone()), (100, vec![2]));
    assert_eq!(cache.key_versions(), vec![1, 3]);
    assert!(!f.state.path().join("datakey.v2.sealed").exists());
    assert!(f.state.path().join("datakey.v3.sealed").exists());
    assert!(f.state.path().join(SEALED_FILE).exists());
    for i in 0..100 {
        let got = cache.get(&id(&format!("r{i}"))).unwrap();
        assert_eq!(&got.value[..], format!("value {i}").as_bytes());
    }
    drop(cache);
    let cache = f.open();
    assert_eq!(cache.key_versions(), vec![1, 3]);
    assert_eq!(&cache.get(&id("r42")).unwrap().value[..], b"value 42");
}

#[test]
fn rotation_destroys_unused_keys_software() {
    rotation_destroys_unused_keys(false);
}

#[test]
fn rotation_destroys_unused_keys_tpm() {
    rotation_destroys_unused_keys(true);
}

// ---- SIGKILL during rotation ----

const CRASH_RECORDS: usize = 200;

/// Must match `expected` in `examples/cache_crash_driver.rs`.
fn expected(i: usize) -> Vec<u8> {
    format!(
        "{{\"sale\":{i},\"items\":[\"coffee\",\"bagel\"],\"total_minor\":{}}}",
        i * 7
    )
    .into_bytes()
}

fn seed() -> u64 {
    if let Ok(s) = std::env::var("POSGUARD_CRASH_SEED") {
        return s.trim().parse().expect("POSGUARD_CRASH_SEED must be a u64");
    }
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

fn driver_path() -> PathBuf {
    example_driver::driver("cache_crash_driver", "POSGUARD_CACHE_DRIVER")
}

/// Starts the driver, waits for `filled` (and, after `extra_lines` more lines, i.e. inside a
/// rotation loop), then for `delay`, and SIGKILLs it.
fn run_and_kill(f: &Fixture, extra_lines: usize, delay: Duration) -> Vec<String> {
    let mut cmd = Command::new(driver_path());
    cmd.arg("--state")
        .arg(f.state.path())
        .arg("--records")
        .arg(CRASH_RECORDS.to_string());
    match &f.backend {
        Backend::Software(d) => cmd.arg("--keys").arg(d.path().join("keys")),
        Backend::Tpm(t) => cmd.arg("--tcti").arg(t.tcti()),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut filled = false;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        assert!(!line.starts_with("error"), "driver: {line}");
        seen.push(line.clone());
        if line == "filled" {
            filled = true;
        }
        if filled && seen.len() > extra_lines {
            break;
        }
    }
    assert!(filled, "the driver never filled the cache: {seen:?}");
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    seen
}

fn check_every_record(f: &Fixture) -> Vec<u32> {
    let cache = f.open();
    for i in 0..CRASH_RECORDS {
        let got = cache
            .get(&id(&format!("rec-{i}")))
            .unwrap_or_else(|e| panic!("rec-{i} after a kill: {e}"));
        assert_eq!(&got.value[..], &expected(i)[..], "rec-{i}");
    }
    cache.key_versions()
}

fn sigkill_during_rotation(tpm: bool, runs: usize) {
    let seed = seed();
    println!("POSGUARD_CRASH_SEED={seed}");
    let mut rng = seed.max(1);
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let f = Fixture::new(tpm);
    let mut rotations = 0;
    for run in 0..runs {
        let extra = (next() % 4) as usize;
        let delay = Duration::from_micros(next() % 150_000);
        let seen = run_and_kill(&f, extra, delay);
        rotations += seen.iter().filter(|l| l.starts_with("rotated")).count();
        let versions = check_every_record(&f);
        assert!(versions.contains(&1), "run {run}: version 1 is kept");
    }
    assert!(rotations > 0, "no rotation happened before any kill");
    // A clean pass afterwards leaves version 1 and the current one only.
    let cache = f.open();
    cache.reencrypt().unwrap();
    let versions = cache.key_versions();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let mut keys: Vec<_> = std::fs::read_dir(f.state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("datakey"))
        .collect();
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[test]
fn sigkill_during_rotation_software() {
    sigkill_during_rotation(false, 20);
}

#[test]
fn sigkill_during_rotation_tpm() {
    sigkill_during_rotation(true, 12);
}
