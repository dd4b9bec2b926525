//! Reading a password at the terminal without echo; from standard input when there is no
//! terminal (scripts). The agent's `posguardctl` has the same few lines: provisioning does not
//! link the agent.

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
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    let saved = tcgetattr(&tty)?;
    if hidden {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&tty, OptionalActions::Now, &quiet)?;
    }
    let mut line = Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
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
