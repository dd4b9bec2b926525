//! Reading a password at the terminal without echo; from standard input when there is no
//! terminal (scripts). The agent's `posguardctl` has the same few lines: provisioning does not
//! link the agent. Also: a new password typed twice or read from an owner-only file, and the
//! technician's side of the first admin ([`Console`]: the seed shown, codes read).

use std::io::{BufRead, Write};

use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
use zeroize::Zeroizing;

/// Prints `prompt` and reads a line; without echo when `hidden` and a terminal is there.
pub fn read_line(prompt: &str, hidden: bool) -> std::io::Result<Zeroizing<String>> {
    let Ok(mut tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(trimmed);
        return Ok(line);
    };
    // Echo goes off before the prompt appears: what is typed as soon as it shows is not echoed.
    let saved = tcgetattr(&tty)?;
    if hidden {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&tty, OptionalActions::Now, &quiet)?;
    }
    let shown = tty.write_all(prompt.as_bytes()).and_then(|()| tty.flush());
    let mut line = Zeroizing::new(String::new());
    // In canonical mode one read returns at most one line: nothing typed ahead is lost here.
    let read = shown.and_then(|()| std::io::BufReader::new(&tty).read_line(&mut line));
    let restored = tcsetattr(&tty, OptionalActions::Now, &saved);
    if hidden {
        let _ = tty.write_all(b"\n");
    }
    read?;
    restored?;
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Ok(line)
}

/// Whether a terminal is there to ask (otherwise answers come from standard input).
pub fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Asks for a new password twice until both match (at most three times).
pub fn confirmed(
    prompt: &str,
    read: &mut dyn FnMut(&str) -> std::io::Result<Zeroizing<String>>,
) -> anyhow::Result<Zeroizing<String>> {
    for _ in 0..3 {
        let first = read(prompt)?;
        if first.is_empty() {
            anyhow::bail!("no password was typed; nothing was created");
        }
        let again = read("Type it again: ")?;
        if *first == *again {
            return Ok(first);
        }
        let _ = writeln!(std::io::stderr(), "the two passwords differ; try again");
    }
    anyhow::bail!("the passwords did not match three times; nothing was created: run again")
}

/// A new password: the first line of `file` (which must be readable by its owner only), else
/// typed twice at the terminal, else one line of standard input (a script).
pub fn new_password(
    prompt: &str,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Zeroizing<String>> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    if let Some(path) = file {
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} is readable by others (mode {:o}): `chmod 600 {}` and run again",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let line = Zeroizing::new(text.lines().next().unwrap_or_default().to_owned());
        if line.is_empty() {
            anyhow::bail!("{} holds no password on its first line", path.display());
        }
        return Ok(line);
    }
    if has_terminal() {
        return confirmed(prompt, &mut |p| read_line(p, true));
    }
    let line = read_line(prompt, true)?;
    if line.is_empty() {
        anyhow::bail!(
            "no password on standard input; type it at a terminal or give --password-file"
        );
    }
    Ok(line)
}

/// The technician at this terminal (or a script on standard input): the seed as a QR code, the
/// URI and the base32 seed, or with `json` as one JSON line on stdout (so that a script can
/// compute the code before it is asked for).
#[derive(Debug)]
pub struct Console {
    /// Machine-readable output.
    pub json: bool,
}

impl crate::admin::Technician for Console {
    fn show_seed(&mut self, seed: &crate::admin::ShownSeed) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let line = Zeroizing::new(
                serde_json::json!({"event": "totp_seed", "clerk": seed.clerk,
                    "otpauth_uri": seed.otpauth_uri, "totp_secret": seed.totp_secret})
                .to_string(),
            );
            let _ = writeln!(out, "{}", line.as_str());
        } else {
            let _ = writeln!(out, "{}", crate::qr::render(&seed.otpauth_uri));
            let _ = writeln!(out, "  {}", seed.otpauth_uri);
            let _ = writeln!(
                out,
                "  seed (to type by hand, base32, TOTP SHA-1, 6 digits, 30 s): {}",
                seed.totp_secret
            );
        }
        let _ = out.flush();
    }

    fn code(&mut self, attempt: u32, of: u32) -> anyhow::Result<Option<Zeroizing<String>>> {
        let line = read_line(
            &format!("Scan the QR code, then type the current 6-digit code ({attempt} of {of}): "),
            false,
        )?;
        Ok((!line.trim().is_empty()).then_some(line))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answers(list: &[&str]) -> impl FnMut(&str) -> std::io::Result<Zeroizing<String>> {
        let mut items: Vec<String> = list.iter().rev().map(|s| (*s).to_owned()).collect();
        move |_| Ok(Zeroizing::new(items.pop().unwrap_or_default()))
    }

    #[test]
    fn a_password_counts_only_when_typed_twice_alike() {
        let mut read = answers(&[
            "secret-one-1",
            "secret-one-2",
            "secret-two-2",
            "secret-two-2",
        ]);
        assert_eq!(confirmed("p", &mut read).unwrap().as_str(), "secret-two-2");
        let mut read = answers(&["a1", "b1", "a2", "b2", "a3", "b3", "a4", "a4"]);
        assert!(
            confirmed("p", &mut read).is_err(),
            "three mismatches end it"
        );
        let mut read = answers(&[""]);
        assert!(confirmed("p", &mut read).is_err(), "nothing typed");
    }

    #[test]
    fn a_password_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "correct-horse-42\nignored\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = new_password("p", Some(&path)).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            new_password("p", Some(&path)).unwrap().as_str(),
            "correct-horse-42"
        );
    }
}
