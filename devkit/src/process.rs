//! `umsd` processes on this machine: starting one on an existing `node.toml`, and finding
//! running ones by their `--config` argument in /proc (drills restart nodes that a test
//! harness or `umsd dev` started, so a node is known by its config file, not its parent).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Starts `exe --config config_path`, appending its output to `umsd.log` beside the
/// config file. Returns the child and the log's path.
pub fn start_umsd(exe: &Path, config_path: &Path) -> anyhow::Result<(Child, PathBuf)> {
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let log_path = dir.join("umsd.log");
    let log = fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let child = Command::new(exe)
        .arg("--config")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok((child, log_path))
}

/// The process running `umsd --config <config_path>`, if any (found in /proc).
pub fn pid_of(config_path: &Path) -> Option<u32> {
    let wanted = config_path.canonicalize().ok()?;
    umsd_processes().into_iter().find(|(_, config)| *config == wanted).map(|(pid, _)| pid)
}

/// Every `umsd --config FILE` process on this machine, with its config file's canonical
/// path (relative paths resolved against the process's working directory).
pub fn umsd_processes() -> Vec<(u32, PathBuf)> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let Some(config) = config_argument(&cmdline) else { continue };
        let config = if config.is_relative() { PathBuf::from(format!("/proc/{pid}/cwd")).join(config) } else { config };
        if let Ok(canonical) = config.canonicalize() {
            found.push((pid, canonical));
        }
    }
    found
}

/// The `--config` argument of a `umsd` command line (NUL-separated, as in /proc).
fn config_argument(cmdline: &[u8]) -> Option<PathBuf> {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    if !args.first().is_some_and(|a| a.ends_with(b"umsd")) {
        return None;
    }
    args.windows(2).find(|w| w[0] == b"--config").map(|w| PathBuf::from(String::from_utf8_lossy(w[1]).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_umsd_command_lines_name_a_config() {
        let cases: [(&[u8], Option<&str>); 4] = [
            (b"/var/tmp/ums-target/debug/umsd\0--config\0data/node-1/node.toml\0", Some("data/node-1/node.toml")),
            (b"umsd\0dev\0", None),
            (b"/usr/bin/vim\0--config\0node.toml\0", None),
            (b"", None),
        ];
        for (cmdline, expected) in cases {
            assert_eq!(config_argument(cmdline), expected.map(PathBuf::from), "{}", String::from_utf8_lossy(cmdline));
        }
    }
}
