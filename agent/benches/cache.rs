//! Transaction cache figures: put (single producer, and concurrent producers sharing fsyncs)
//! and get of 1 KiB records through the library on real disk, and AES-256-GCM of the data key
//! against ring's own ceiling, measured in the same run.
//! `cargo bench -p posguard-agent --bench cache`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Instant;

use posguard_agent::cache::{Cache, CacheConfig, NoAudit, RecordId};
use posguard_agent::datakey::{DataKey, Keyring};
use posguard_hal::SecureElementConfig;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

const SIZE: usize = 1024;

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{{\"sale\":{i},\"lines\":\"").into_bytes();
    v.resize(SIZE - 2, b'x');
    v.extend_from_slice(b"\"}");
    v
}

fn report(name: &str, n: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<48} {n:>7} in {secs:>6.3} s = {:>9.0}/s",
        n as f64 / secs
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let se = posguard_hal::open(&SecureElementConfig::software(dir.path().join("keys"))).unwrap();
    let keyring = Keyring::open(se.clone(), dir.path()).unwrap();
    let mut config = CacheConfig::at(dir.path().join("cache"));
    config.max_bytes = 256 * 1024 * 1024;
    let cache = Cache::open(&config, keyring, Arc::new(NoAudit)).unwrap();
    let ids: Vec<RecordId> = (0..40_000)
        .map(|i| RecordId::new(format!("sale-{i:06}")).unwrap())
        .collect();

    let n = 2_000;
    let start = Instant::now();
    for (i, id) in ids.iter().take(n).enumerate() {
        cache.put(id, &value(i), None).unwrap();
    }
    report("put 1 KiB, 1 producer (fsync each)", n, start);

    for producers in [16, 64, 128] {
        let per = 20_000 / producers;
        let start = Instant::now();
        std::thread::scope(|s| {
            for p in 0..producers {
                let (cache, ids) = (&cache, &ids);
                s.spawn(move || {
                    for k in 0..per {
                        let i = p * per + k;
                        cache.put(&ids[i], &value(i), None).unwrap();
                    }
                });
            }
        });
        report(
            &format!("put 1 KiB, {producers} producers (group sync)"),
            per * producers,
            start,
        );
    }

    let n = 40_000;
    let start = Instant::now();
    for k in 0..n {
        let got = cache.get(&ids[k % 20_000]).unwrap();
        assert_eq!(got.value.len(), SIZE);
    }
    report("get 1 KiB, 1 reader", n, start);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let (cache, ids) = (&cache, &ids);
            s.spawn(move || {
                for k in 0..n / 2 {
                    cache.get(&ids[(k * 2 + t) % 20_000]).unwrap();
                }
            });
        }
    });
    report("get 1 KiB, 2 readers", n, start);

    // AES-256-GCM: the data key's seal/open (random nonce, copies) vs ring in place.
    let key = DataKey::from_raw(&[7u8; 32]).unwrap();
    let plain = value(0);
    let n = 200_000;
    let start = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..n {
        sealed = key
            .seal_value(b"posguard/cache\0records\0sale-1\0hdr", &plain)
            .unwrap();
    }
    report("DataKey::seal_value 1 KiB", n, start);
    let start = Instant::now();
    for _ in 0..n {
        key.open_value(b"posguard/cache\0records\0sale-1\0hdr", &sealed)
            .unwrap();
    }
    report("DataKey::open_value 1 KiB", n, start);
    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let mut buf = plain.clone();
    let start = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = ring_key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"aad"),
                &mut buf,
            )
            .unwrap();
        let _ = std::hint::black_box(tag);
    }
    report("ring seal_in_place 1 KiB (ceiling)", n, start);
    let mut sealed = plain.clone();
    let tag = ring_key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([1; 12]),
            Aad::from(b"aad"),
            &mut sealed,
        )
        .unwrap();
    sealed.extend_from_slice(tag.as_ref());
    let start = Instant::now();
    for _ in 0..n {
        let mut b = sealed.clone();
        ring_key
            .open_in_place(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::from(b"aad"),
                &mut b,
            )
            .unwrap();
    }
    report("ring open_in_place 1 KiB (ceiling, + a copy)", n, start);
    println!(
        "cache bytes used: {} ({} MiB)",
        cache.used_bytes(),
        cache.used_bytes() >> 20
    );
}
