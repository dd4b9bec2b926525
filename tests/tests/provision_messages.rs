//! Issue 16, point 10: what `posguard-provision init` prints. The token from a file, standard
//! input or (with a warning) the command line; dates as RFC 3339; no colour codes and no tss2
//! library noise in piped output; a missing port, an empty token and a missing file each named
//! with what to do. Real binaries, a real collector, one swtpm per terminal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write as _;
use std::process::Stdio;

use posguard_e2e::provision::{Ran, Terminal, central, ran, run};

/// Whether `s` starts with `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_at(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b.iter().take(20).enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn has_posguard_group() -> bool {
    std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("posguard:"))
}

#[derive(Debug, Clone, Copy)]
enum Source {
    File,
    Stdin,
    Argv,
}

#[test]
fn the_token_comes_from_a_file_stdin_or_argv_and_the_output_is_clean() {
    let (c, _collector) = central();
    for (i, source) in [Source::File, Source::Stdin, Source::Argv]
        .into_iter()
        .enumerate()
    {
        let t = Terminal::new(&format!("till-m{i}"));
        let token = c.token(&t.id);
        let mut cmd = t.init(&c);
        // Debug logging on, so that there are log lines whose colour codes could leak.
        cmd.env("RUST_LOG", "debug");
        let out: Ran = match source {
            Source::File => run(cmd.args(t.token_file(&token))),
            Source::Argv => run(cmd.args(["--token", &token])),
            Source::Stdin => {
                let mut child = cmd
                    .args(["--token", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut stdin = child.stdin.take().unwrap();
                writeln!(stdin, "{token}").unwrap();
                drop(stdin);
                ran(child.wait_with_output().unwrap())
            }
        };
        assert!(out.ok(), "{source:?}: {}", out.text());
        assert!(c.token_used(&t.id), "{source:?}");
        let warned = out.stderr.contains("visible to other users");
        assert_eq!(
            warned,
            matches!(source, Source::Argv),
            "{source:?}: {}",
            out.text()
        );
        // Piped output: no colour codes, no libtss2 log lines, dates not Unix seconds.
        assert!(out.stderr.contains(" INFO "), "a log line: {}", out.text());
        assert!(
            !out.text().contains('\u{1b}'),
            "{source:?}: {:?}",
            out.text()
        );
        assert!(!out.stderr.contains("ERROR:"), "{source:?}: {}", out.text());
        let (_, after) = out.stdout.split_once("valid until ").unwrap();
        assert!(rfc3339_at(after), "{source:?}: {}", out.stdout);
        assert!(!out.stdout.contains("unix "), "{source:?}: {}", out.stdout);
        // The group that reads agent.toml: a warning with what to do when it is missing.
        let group_warning = out.stderr.contains("groupadd --system posguard");
        assert_eq!(group_warning, !has_posguard_group(), "{}", out.text());
    }
}

#[test]
fn bad_inputs_exit_64_and_say_what_to_do() {
    let (c, _collector) = central();
    let t = Terminal::new("till-m9");
    let token = c.token(&t.id);
    let file = t.token_file(&token);
    let missing = t.dir.path().join("no-such-token");
    let missing_text = missing.display().to_string();
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (
            vec![("--collector", "collector.example")],
            "--collector collector.example: add the port, e.g. :8443".into(),
        ),
        (
            vec![("--collector", "collector.example:")],
            "is not a port".into(),
        ),
        (
            vec![("--collector", "https://collector.example:8443")],
            "without a scheme".into(),
        ),
        (
            vec![("--token-file", &missing_text)],
            format!("--token-file {missing_text}"),
        ),
        (vec![("--token", "-")], "--token -: no token there".into()),
        (vec![("--token", "0123")], "not 64 hex digits".into()),
    ];
    for (changed, says) in cases {
        let mut cmd = t.init_as(&c, &changed);
        if !changed.iter().any(|(k, _)| k.starts_with("--token")) {
            cmd.args(&file);
        }
        let out = run(&mut cmd);
        assert_eq!(out.code, Some(64), "{changed:?}: {}", out.text());
        assert!(
            out.stderr.contains(&says),
            "{changed:?}: {says:?} in {}",
            out.text()
        );
    }
    assert!(!c.token_used(&t.id));
    // Before the token file is even read: a missing fleet CA names the file.
    let ca = t.dir.path().join("fleet-ca.pem");
    let out = run(t.init_with(&c, &ca).args(&file));
    assert_eq!(out.code, Some(1), "{}", out.text());
    let named = format!("reading {}", ca.display());
    assert!(
        out.stdout.contains(&named) && out.stdout.contains("No such file"),
        "{}",
        out.text()
    );
}

#[test]
fn tss2_library_logging_is_off_unless_the_user_asks_for_it() {
    let (c, _collector) = central();
    let t = Terminal::new("till-m8");
    // Nothing listens there: libtss2 logs its connection errors itself.
    let nowhere = format!("swtpm:host=127.0.0.1,port={}", posguard_e2e::free_port());
    for asked in [None, Some("all+ERROR")] {
        let mut cmd = t.init_as(&c, &[("--tcti", &nowhere)]);
        cmd.args(t.token_file(&c.token(&t.id)));
        if let Some(level) = asked {
            cmd.env("TSS2_LOG", level);
        }
        let out = run(&mut cmd);
        assert!(!out.ok(), "{}", out.text());
        assert!(out.stdout.contains("no secure element"), "{}", out.text());
        assert_eq!(
            out.stderr.contains("ERROR:tcti"),
            asked.is_some(),
            "{asked:?}: {}",
            out.text()
        );
    }
}
