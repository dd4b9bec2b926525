//! Hardware-layer benchmark: median latency of sign, unseal and counter increment on a real
//! software TPM (swtpm), with the software backend alongside for scale.
//! Run: `cargo bench -p posguard-hal --bench hal` (figures go to docs/PERFORMANCE.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use posguard_hal::testing::Swtpm;
use posguard_hal::{KeyMode, SecureElement, SecureElementConfig, sha256};

const ITERATIONS: usize = 300;

fn measure(mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..10 {
        f(); // warm-up
    }
    let mut samples: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

fn bench(label: &str, se: Arc<dyn SecureElement>) {
    se.ensure_identity_key(KeyMode::OpenOrCreate).unwrap();
    se.counter_create().unwrap();
    let blob = se.seal(&[0x42; 32]).unwrap();
    let digest = sha256(b"posguard checkpoint");
    let rows = [
        (
            "sign (ECDSA P-256)",
            measure(|| {
                se.sign_digest(&digest).unwrap();
            }),
        ),
        (
            "unseal (32-byte secret)",
            measure(|| {
                se.unseal(&blob).unwrap();
            }),
        ),
        (
            "counter increment",
            measure(|| {
                se.counter_increment().unwrap();
            }),
        ),
    ];
    for (op, (median, p99)) in rows {
        println!(
            "{label:<10} {op:<26} median {:>8.3} ms   p99 {:>8.3} ms   ({ITERATIONS} runs)",
            median.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing else we need.
    let swtpm = Swtpm::start().expect("swtpm must be installed (apt-get install swtpm)");
    bench("swtpm", posguard_hal::open(&swtpm.config()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    bench(
        "software",
        posguard_hal::open(&SecureElementConfig::software(dir.path().join("k"))).unwrap(),
    );
}
