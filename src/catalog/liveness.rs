//! Whether the process that owns a build is still alive. The owner is recorded as
//! `host boot-id pid start-time`, so a reused pid or a reboot is not mistaken for the builder.

use std::fs;

pub fn current_owner() -> String {
    owner_of(std::process::id()).unwrap_or_default()
}

fn owner_of(pid: u32) -> Option<String> {
    Some(format!(
        "{} {} {pid} {}",
        hostname(),
        boot_id(),
        start_time(pid)?
    ))
}

/// `Some(reason)` when the owner is on this machine and certainly gone.
pub fn dead_owner_reason(owner: &str) -> Option<String> {
    let parts: Vec<&str> = owner.split(' ').collect();
    let [host, boot, pid, started] = parts.as_slice() else {
        return None;
    };
    if *host != hostname() {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    let gone = *boot != boot_id() || start_time(pid).as_deref() != Some(*started);
    gone.then(|| format!("the build process (pid {pid}) ended before the build finished (killed, crashed or the machine restarted)"))
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat: the process start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields after the last ')'
    // are plain.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_string)
}

#[cfg(test)]
pub fn owner_for_dead_process() -> String {
    format!("{} {} 999999999 1", hostname(), boot_id())
}
