//! systemd's notification protocol (`sd_notify`), spoken directly: one datagram per message to
//! the socket named by `$NOTIFY_SOCKET`. No libsystemd and no unsafe code; when the agent is not
//! run by systemd (the variable is unset) every call is a no-op.
//!
//! The unit is `Type=notify` with `WatchdogSec=`: the daemon sends `READY=1` once the identity,
//! the journal and the socket are up, pings `WATCHDOG=1` at half the interval systemd gives in
//! `$WATCHDOG_USEC` (see [`watchdog`]), and sends `STOPPING=1` when it begins to shut down.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The notification socket could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither a path nor an abstract name (`@…`).
    #[error("NOTIFY_SOCKET={0:?} is not a socket path or an abstract socket name")]
    Unsupported(String),
    /// Creating the socket or sending the datagram failed.
    #[error("sending {what} to the systemd notification socket")]
    Io {
        /// The first state in the message (`READY=1`, …).
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// One state change told to systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// `READY=1`: start-up is complete.
    Ready,
    /// `WATCHDOG=1`: still alive.
    Watchdog,
    /// `STOPPING=1`: shutdown has begun.
    Stopping,
    /// `STATUS=…`: a one-line status shown by `systemctl status` (newlines become spaces).
    Status(&'a str),
}

impl State<'_> {
    fn write(&self, out: &mut String) {
        match self {
            State::Ready => out.push_str("READY=1"),
            State::Watchdog => out.push_str("WATCHDOG=1"),
            State::Stopping => out.push_str("STOPPING=1"),
            State::Status(text) => {
                out.push_str("STATUS=");
                // The protocol is newline-separated assignments: a newline would start a new one.
                out.extend(text.chars().map(|c| if c == '\n' { ' ' } else { c }));
            }
        }
        out.push('\n');
    }
}

/// Where notifications go; `None` inside when systemd did not ask for them.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; disabled (every call a no-op) when it is unset or empty.
    pub fn from_env() -> Result<Self, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(value) => Self::new(&value),
            None => Ok(Self::disabled()),
        }
    }

    /// From a `$NOTIFY_SOCKET` value: an absolute path, or `@name` for an abstract socket.
    /// An empty value disables notifications, as with libsystemd.
    pub fn new(socket: &OsStr) -> Result<Self, NotifyError> {
        let bytes = socket.as_bytes();
        let unsupported = || NotifyError::Unsupported(socket.to_string_lossy().into_owned());
        let target = match bytes.first() {
            None => return Ok(Self::disabled()),
            Some(b'/') => SocketAddr::from_pathname(socket).map_err(|_| unsupported())?,
            Some(b'@') => {
                let name = bytes.get(1..).unwrap_or_default();
                SocketAddr::from_abstract_name(name).map_err(|_| unsupported())?
            }
            // Newer systemd also knows `vsock:…`; a terminal's systemd does not use it.
            Some(_) => return Err(unsupported()),
        };
        Ok(Notifier {
            target: Some(target),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier { target: None }
    }

    /// Whether systemd listens for notifications.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends the states as one datagram (a no-op when disabled).
    pub fn notify(&self, states: &[State<'_>]) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let mut message = String::new();
        for state in states {
            state.write(&mut message);
        }
        let io_error = |source| NotifyError::Io {
            what: message.lines().next().unwrap_or_default().to_owned(),
            source,
        };
        // An unbound socket per message: notifications are rare (one per watchdog tick at most),
        // and nothing stays open between them.
        let socket = UnixDatagram::unbound().map_err(io_error)?;
        socket
            .send_to_addr(message.as_bytes(), target)
            .map_err(io_error)?;
        Ok(())
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[State::Ready, State::Status(status)])
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.notify(&[State::Watchdog])
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[State::Stopping, State::Status(status)])
    }

    /// `STATUS=…`.
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&[State::Status(status)])
    }
}

/// The watchdog interval systemd expects, from `$WATCHDOG_USEC` and `$WATCHDOG_PID`; `None`
/// when there is no watchdog (or it is meant for another process).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var_os("WATCHDOG_USEC");
    let pid = std::env::var_os("WATCHDOG_PID");
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] from given values (as `sd_watchdog_enabled` reads them).
pub fn watchdog_interval_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Pings `WATCHDOG=1` every half `interval` (the first at once) until `cancel` fires. Spawn it on
/// the runtime (tracked) once READY=1 is sent: a stalled runtime stops the pings, and systemd then
/// kills and restarts the agent.
pub async fn watchdog(notifier: Notifier, interval: Duration, cancel: CancellationToken) {
    if !notifier.is_enabled() {
        return;
    }
    let period = (interval / 2).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(e) = notifier.watchdog() {
                    tracing::warn!(error = %e, "watchdog ping failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn receiver() -> (tempfile::TempDir, UnixDatagram, OsString) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (dir, socket, path.into_os_string())
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_ready_status_and_stopping_to_a_path_socket() {
        let (_dir, socket, path) = receiver();
        let notifier = Notifier::new(&path).unwrap();
        assert!(notifier.is_enabled());
        notifier
            .ready("serving on /run/posguard/agent.sock")
            .unwrap();
        assert_eq!(
            recv(&socket),
            "READY=1\nSTATUS=serving on /run/posguard/agent.sock\n"
        );
        notifier.watchdog().unwrap();
        assert_eq!(recv(&socket), "WATCHDOG=1\n");
        notifier.stopping("two\nlines").unwrap();
        assert_eq!(recv(&socket), "STOPPING=1\nSTATUS=two lines\n");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("posguard-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.status("starting").unwrap();
        assert_eq!(recv(&socket), "STATUS=starting\n");
    }

    #[test]
    fn unset_or_empty_socket_is_a_no_op_and_others_are_refused() {
        let notifier = Notifier::new(OsStr::new("")).unwrap();
        assert!(!notifier.is_enabled());
        notifier.ready("ok").unwrap();
        Notifier::disabled().watchdog().unwrap();
        let err = Notifier::new(OsStr::new("vsock:2:1234")).unwrap_err();
        assert!(matches!(err, NotifyError::Unsupported(_)), "{err}");
    }

    #[test]
    fn a_missing_listener_is_an_error_naming_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::new(dir.path().join("absent").as_os_str()).unwrap();
        let err = notifier.ready("x").unwrap_err();
        assert!(err.to_string().contains("READY=1"), "{err}");
    }

    #[test]
    fn watchdog_interval_follows_sd_watchdog_enabled() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            watchdog_interval_from(os("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(os("30000000"), os("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_interval_from(os("30000000"), os("8"), 7), None);
        assert_eq!(watchdog_interval_from(os("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(os("soon"), None, 7), None);
        assert_eq!(watchdog_interval_from(None, os("7"), 7), None);
    }

    #[tokio::test]
    async fn watchdog_pings_until_cancelled() {
        let (_dir, socket, path) = receiver();
        let notifier = Notifier::new(&path).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watchdog(
            notifier,
            Duration::from_millis(40),
            cancel.clone(),
        ));
        tokio::task::spawn_blocking(move || {
            for _ in 0..3 {
                assert_eq!(recv(&socket), "WATCHDOG=1\n");
            }
        })
        .await
        .unwrap();
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the watchdog task ends once cancelled")
            .unwrap();
    }

    #[tokio::test]
    async fn watchdog_without_socket_returns_at_once() {
        tokio::time::timeout(
            Duration::from_secs(10),
            watchdog(
                Notifier::disabled(),
                Duration::from_secs(30),
                CancellationToken::new(),
            ),
        )
        .await
        .unwrap();
    }
}
