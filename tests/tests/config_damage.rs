//! Issue 15, point 2 for the configuration: no content of the agent's configuration file makes
//! it panic or hang. Every single-byte flip and a truncation every 7 bytes of a valid file
//! gives exit 0 or 64 naming the file; a huge file and an endless device give 64.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use posguard_e2e::command;

struct Terminal {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Terminal {
    /// A valid configuration; `check-config` does not connect to the TPM it names.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[device]\nid = \"term-dmg\"\n[secure_element]\ntcti = \"swtpm:host=127.0.0.1,port=2321\"\n[journal]\ndir = \"{}\"\n[storage]\ndir = \"{}\"\n[api]\nsocket = \"{}\"\n",
                dir.path().join("journal").display(),
                dir.path().join("state").display(),
                dir.path().join("run/agent.sock").display()
            ),
        )
        .unwrap();
        Terminal { dir, config }
    }
}

#[test]
fn a_damaged_configuration_exits_64_naming_the_file() {
    let t = Terminal::new();
    let good = std::fs::read(&t.config).unwrap();
    let bad = t.dir.path().join("bad.toml");
    let (mut valid, mut refused) = (0, 0);
    let mut variants: Vec<Vec<u8>> = Vec::new();
    for i in 0..good.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = good.clone();
            b[i] ^= mask;
            variants.push(b);
        }
    }
    variants.extend((0..good.len()).step_by(7).map(|n| good[..n].to_vec()));
    variants.push(vec![0u8; good.len()]);
    for bytes in variants {
        std::fs::write(&bad, &bytes).unwrap();
        let out = command("posguard-agent")
            .args(["check-config", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => valid += 1,
            Some(64) => {
                refused += 1;
                assert!(
                    stderr.contains("invalid configuration") && stderr.contains("bad.toml"),
                    "{stderr}"
                );
            }
            other => panic!("check-config exited {other:?}: {stderr}"),
        }
    }
    println!("configuration sweep: {valid} variants valid, {refused} refused with exit 64");
    assert!(refused > valid);
    // A file (or device) without end is refused, not read into memory.
    let mut huge = good.clone();
    huge.resize(2 * 1024 * 1024, b'#');
    std::fs::write(&bad, &huge).unwrap();
    for path in [bad.as_path(), Path::new("/dev/zero")] {
        let out = command("posguard-agent")
            .args(["check-config", "--config"])
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{}: {stderr}", path.display());
        assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
    }
}
