//! Reading a secret at a terminal without echo (for `posguardctl login`). With no terminal
//! (a script piping input) the line is read from standard input instead.

use std::io::{BufRead, Write};

use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
use zeroize::Zeroizing;

/// Prints `prompt` and reads one line without echoing it; the newline is not included.
pub fn read_secret(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty");
    let Ok(mut tty) = tty else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        trim_newline(&mut line);
        return Ok(line);
    };
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&tty, OptionalActions::Now, &quiet)?;
    let mut line = Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    // Restore echo whatever happened.
    let restored = tcsetattr(&tty, OptionalActions::Now, &saved);
    let _ = tty.write_all(b"\n");
    read?;
    restored?;
    trim_newline(&mut line);
    Ok(line)
}

fn trim_newline(line: &mut String) {
    while line.ends_with(['\n', '\r']) {
        line.pop();
    }
}
