//! Time for audit events: UTC wall time for people, the boot clock (CLOCK_BOOTTIME, which keeps
//! counting through suspend and cannot be set) for ordering and timeouts, and the boot id that
//! says which boot a monotonic time belongs to.

use std::time::{SystemTime, UNIX_EPOCH};

use posguard_proto::event::Stamp;

/// Where stamps come from. Cheap to clone.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    boot_id: [u8; 16],
}

impl Clock {
    /// The system clock, with the kernel's boot id (random per boot).
    pub fn system() -> Self {
        Clock {
            boot_id: read_boot_id().unwrap_or_default(),
        }
    }

    /// This boot's id.
    pub fn boot_id(&self) -> [u8; 16] {
        self.boot_id
    }

    /// Nanoseconds on the boot clock.
    pub fn mono_ns() -> u64 {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    }

    /// Milliseconds since the Unix epoch (UTC); 0 if the wall clock is before 1970.
    pub fn wall_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// A stamp for an event happening now.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            wall_ms: Self::wall_ms(),
            mono_ns: Self::mono_ns(),
            boot_id: self.boot_id,
        }
    }
}

/// `/proc/sys/kernel/random/boot_id` is a UUID in text; we keep its 16 bytes.
fn read_boot_id() -> Option<[u8; 16]> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(i.checked_mul(2)?..i.checked_mul(2)?.checked_add(2)?)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_moves_forward_and_boot_id_is_read() {
        let a = Clock::mono_ns();
        let b = Clock::mono_ns();
        assert!(b >= a);
        assert_ne!(Clock::system().boot_id(), [0u8; 16]);
        assert!(Clock::wall_ms() > 1_700_000_000_000);
    }
}
