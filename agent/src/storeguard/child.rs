//! The probe's own side: open a store and read every tree, then exit with a code the parent
//! reads (see the module above). Runs in a child process with limits, or in-process as a
//! fallback.

use std::path::Path;
use std::process::ExitCode;

use super::{PROBE_ARG, PROBE_OK, PROBE_REFUSED, StoreKind};

/// If the process was started as a store probe (`<binary> __posguard-probe-store KIND DIR
/// LIMIT`), runs it and returns the exit code; otherwise `None`. The binaries call this first
/// thing in `main`.
pub fn run_probe_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != PROBE_ARG {
        return None;
    }
    let (Some(kind), Some(dir), Some(limit)) = (args.next(), args.next(), args.next()) else {
        eprintln!("store probe: expected KIND DIR ADDRESS_SPACE_BYTES");
        return Some(ExitCode::from(crate::EXIT_USAGE));
    };
    let Some(kind) = kind.to_str().and_then(StoreKind::from_code) else {
        eprintln!("store probe: unknown store kind {kind:?}");
        return Some(ExitCode::from(crate::EXIT_USAGE));
    };
    let Some(limit) = limit.to_str().and_then(|l| l.parse::<u64>().ok()) else {
        eprintln!("store probe: bad address-space limit {limit:?}");
        return Some(ExitCode::from(crate::EXIT_USAGE));
    };
    use rustix::process::{Resource, Rlimit, setrlimit};
    // A damaged length field then fails an allocation (an abort the parent sees) instead of
    // exhausting the terminal's memory; no core file of that abort.
    let limits = [(Resource::As, limit), (Resource::Core, 0)];
    for (resource, value) in limits {
        let new = Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        // prlimit64 is in systemd's @system-service set, which the unit allows. Should a
        // tighter sandbox refuse it, probe without the limit rather than fail (which would
        // count every store as unreadable): the deadline still holds, and the kernel's OOM
        // killer picks the largest process, this one.
        if let Err(e) = setrlimit(resource, new) {
            eprintln!("store probe: cannot limit {resource:?} ({e}); probing without it");
        }
    }
    // A probe outlives nothing: when the agent that started it is killed (SIGKILL during
    // start-up), the probe goes too, instead of sled rewriting a scratch copy the next start
    // may be reading. (Death of the spawning thread also counts; that thread waits for us.)
    let parent = rustix::process::getppid();
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("store probe: cannot follow its parent ({e}); probing anyway");
    }
    if rustix::process::getppid() != parent {
        eprintln!("store probe: the agent that started it is gone");
        return Some(ExitCode::from(crate::EXIT_USAGE));
    }
    // From here on, what happens is the store's doing (the parent tells the two apart).
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", super::PROBE_READY);
        let _ = out.flush();
    }
    let code = match open_and_read(Path::new(&dir), kind) {
        Ok(()) => PROBE_OK,
        Err(reason) => {
            eprintln!("{reason}");
            PROBE_REFUSED
        }
    };
    Some(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// The fallback when no binary to re-execute is known: contains panics in builds that unwind.
pub(super) fn probe_in_process(dir: &Path, kind: StoreKind) -> Result<(), String> {
    std::panic::catch_unwind(|| open_and_read(dir, kind)).unwrap_or_else(|_| {
        Err(format!(
            "reading the {} database crashed its reader (a panic in sled)",
            kind.code()
        ))
    })
}

/// Opens the store and reads every entry of every tree, so that whatever sled would stumble
/// over later is met here.
fn open_and_read(dir: &Path, kind: StoreKind) -> Result<(), String> {
    let err = |what: &str, e: sled::Error| format!("{} database: {what}: {e}", kind.code());
    let db = kind
        .sled_config(dir)
        .open()
        .map_err(|e| err("cannot open", e))?;
    for name in db.tree_names() {
        let tree = db
            .open_tree(&name)
            .map_err(|e| err("cannot open a tree", e))?;
        for item in crate::walk::walk_all(&tree) {
            item.map_err(|e| err("cannot read", e))?;
        }
    }
    Ok(())
}
