//! What the technician types, checked before anything is touched: the one-time token (from a
//! file, standard input or, with a warning, the command line), the collector's `host:port`, and
//! the process environment (the tss2 libraries' own logging off, so piped output stays clean).

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

/// The one-time enrollment token. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// The token text (for the enrollment request only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Longest token file read: a token is 64 hex digits; anything far larger is the wrong file.
const TOKEN_FILE_MAX: u64 = 4096;

/// Where the token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token TOKEN`: visible in `ps` and shell history.
    Argv(String),
    /// `--token -`: one line on standard input.
    Stdin,
    /// `--token-file PATH`.
    File(std::path::PathBuf),
}

/// A token input that cannot be used, with what to do (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The token file cannot be read.
    #[error("--token-file {path}: {source}; give the file the token was saved to")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Standard input could not be read.
    #[error("--token -: reading standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// Empty or far too long.
    #[error(
        "{from}: {what}; the token is the 64 hex digits `posguard-collector enroll-token create` printed"
    )]
    BadToken {
        /// `--token-file PATH`, `--token -` or `--token`.
        from: String,
        /// What is wrong.
        what: &'static str,
    },
    /// `--collector` without a port, or with a bad one.
    #[error("--collector {given}: {what}")]
    Collector {
        /// What was given.
        given: String,
        /// What is wrong and what to do.
        what: String,
    },
}

fn token_text(from: String, mut text: String) -> Result<Token, InputError> {
    let token = Zeroizing::new(text.trim().to_owned());
    zeroize::Zeroize::zeroize(&mut text);
    if token.is_empty() {
        return Err(InputError::BadToken {
            from,
            what: "no token there (empty)",
        });
    }
    if token.len() != 64 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(InputError::BadToken {
            from,
            what: "this is not a token (not 64 hex digits)",
        });
    }
    Ok(Token(token))
}

/// Reads the token from `source` (`stdin` is standard input, a parameter for tests).
pub fn read_token(source: &TokenSource, stdin: &mut dyn Read) -> Result<Token, InputError> {
    match source {
        TokenSource::Argv(t) => token_text("--token".into(), t.clone()),
        TokenSource::Stdin => {
            let mut text = String::new();
            stdin
                .take(TOKEN_FILE_MAX)
                .read_to_string(&mut text)
                .map_err(InputError::Stdin)?;
            token_text("--token -".into(), text)
        }
        TokenSource::File(path) => {
            let text = read_small(path).map_err(|source| InputError::TokenFile {
                path: path.display().to_string(),
                source,
            })?;
            token_text(format!("--token-file {}", path.display()), text)
        }
    }
}

fn read_small(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(TOKEN_FILE_MAX)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Checks `--collector` is `host:port` with a port; returns the host (the default server name).
pub fn collector_host(given: &str) -> Result<String, InputError> {
    let err = |what: String| InputError::Collector {
        given: given.to_owned(),
        what,
    };
    let example = "e.g. collector.example:8443";
    if given.contains("://") || given.contains('/') {
        return Err(err(format!(
            "give host:port only, without a scheme or path, {example}"
        )));
    }
    // `[::1]:8443` for IPv6; a bare IPv6 address has colons but no port.
    let (host, port) = if let Some(rest) = given.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) => (h, p),
            None => return Err(err("add the port, e.g. [::1]:8443".to_owned())),
        }
    } else {
        match given.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            _ => return Err(err("add the port, e.g. :8443".to_owned())),
        }
    };
    if host.is_empty() {
        return Err(err(format!("the host is missing, {example}")));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(host.to_owned()),
        _ => Err(err(format!("{port:?} is not a port (1–65535), {example}"))),
    }
}

/// The tss2 libraries log their own errors to stderr (`ERROR:esys:…`) when a probe finds nothing,
/// which is expected during provisioning and frightening to a technician. They read `TSS2_LOG`
/// once, from the environment, and setting it from Rust needs `unsafe` (edition 2024): so the
/// program re-executes itself once with `TSS2_LOG=all+NONE`, unless the user set `TSS2_LOG`
/// (to debug). Returns only if no re-exec happened (or it failed: then logging stays on).
pub fn quiet_tss2_logging() {
    use std::os::unix::process::CommandExt as _;
    if std::env::var_os("TSS2_LOG").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // exec() only returns on failure; the program then runs on with the libraries' logging.
    let _ = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env("TSS2_LOG", "all+NONE")
        .exec();
}

/// `unix` seconds as an RFC 3339 date (UTC), or the number when out of range.
pub fn date(unix: u64) -> String {
    use time::format_description::well_known::Rfc3339;
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix {unix}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn collector_needs_a_port() {
        for ok in ["collector.example:8443", "10.0.0.1:443", "[::1]:8443"] {
            assert!(collector_host(ok).is_ok(), "{ok}");
        }
        assert_eq!(collector_host("c.example:8443").unwrap(), "c.example");
        for (bad, says) in [
            ("collector.example", "add the port, e.g. :8443"),
            ("::1", "add the port"),
            ("[::1]", "add the port"),
            ("c.example:", "is not a port"),
            ("c.example:0", "is not a port"),
            ("c.example:99999", "is not a port"),
            (":8443", "the host is missing"),
            ("https://c.example:8443", "without a scheme"),
        ] {
            let e = collector_host(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--collector {bad}: ")), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn tokens_from_every_source_are_trimmed_and_checked() {
        let t = "ab".repeat(32);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{t}\n")).unwrap();
        let sources = [
            TokenSource::Argv(t.clone()),
            TokenSource::Stdin,
            TokenSource::File(file),
        ];
        for s in &sources {
            let mut input = format!("  {t}\n").into_bytes();
            let got = read_token(s, &mut input.as_slice()).unwrap();
            assert_eq!(got.expose(), t);
            assert!(!format!("{got:?}").contains(&t));
            input.clear();
            let empty = read_token(s, &mut input.as_slice());
            assert_eq!(empty.is_err(), *s == TokenSource::Stdin);
        }
        let missing = dir.path().join("nope");
        let e = read_token(&TokenSource::File(missing.clone()), &mut [].as_slice())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        for bad in ["a b", "abc", &"g".repeat(64), &"a".repeat(65)] {
            let e = read_token(&TokenSource::Argv(bad.into()), &mut [].as_slice())
                .unwrap_err()
                .to_string();
            assert!(e.contains("not 64 hex digits"), "{bad}: {e}");
        }
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(date(0), "1970-01-01T00:00:00Z");
        assert_eq!(date(1_790_000_000), "2026-09-21T14:13:20Z");
        assert_eq!(date(u64::MAX), format!("unix {}", u64::MAX));
    }
}
