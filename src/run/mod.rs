//! `mlambda run`: a version served from the local store with no daemon. Its image is unpacked
//! once into a folder of the home (one per manifest digest), and its entrypoint runs there
//! with the image's environment, in an isolated root: bubblewrap when it is installed (a
//! read-only root of its own, its own /proc, /dev and /tmp, the host's network), else chroot
//! as root, else podman (`podman run --rootfs` of the unpacked folder: its own namespaces and
//! cgroup, as configured in the user's containers.conf). `--isolation` picks one. The
//! runtime's `--host`/`--port` are set from the address asked for.

pub mod unpack;

use crate::image::walk::read_config;
use crate::image::{ImageError, resolve};
use crate::oci::WantedPlatform;
use crate::store::Layout;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use unpack::{UnpackError, unpack_layers};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the image has no entrypoint or command to run")]
    NothingToRun,
    #[error(
        "the image's program is not mlambda's model server (no MLAMBDA_LOADER in its environment): there is nothing to check"
    )]
    NotCheckable,
    #[error("the model does not load in its image: {0}")]
    Check(String),
    #[error("the check did not finish within {0} s")]
    CheckTimeout(u64),
    #[error(
        "cannot isolate the image here: bubblewrap is not installed (Debian: apt-get install bubblewrap), chroot needs root, and podman is not installed (Debian: apt-get install podman)"
    )]
    NoIsolation,
    #[error("--isolation {0}: {1}")]
    IsolationUnavailable(&'static str, &'static str),
}

/// How the image's program is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Isolation {
    /// The first that works here: bubblewrap, chroot (as root), podman.
    #[default]
    Auto,
    Bubblewrap,
    Chroot,
    Podman,
}

/// The program to exec, with what it needs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `bubblewrap`, `chroot` or `podman`, for the user.
    pub isolation: &'static str,
    pub rootfs: PathBuf,
}

/// What the image's program is started for.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// Serving on this address.
    Serve(SocketAddr),
    /// Loading the model and saying what it found (`serve.py --check`).
    Check,
}

/// Unpacks (once) the image `tag` of `layout` under `cache` and says how to start it.
pub fn prepare(
    layout: &Layout,
    tag: &str,
    cache: &Path,
    purpose: Purpose,
    isolation: Isolation,
) -> Result<Launch, RunError> {
    let resolved = resolve(layout, Some(tag), &WantedPlatform::host())?;
    let config = read_config(layout, &resolved.parsed)?;
    let digest = resolved.manifest.descriptor.digest.replace(':', "-");
    let rootfs = unpacked(layout, &resolved.parsed.layers, &cache.join(digest))?;
    let process = &config["config"];
    let strings = |key: &str| -> Vec<String> {
        process[key]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut env: Vec<(String, String)> = strings("Env")
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut command = strings("Entrypoint");
    match purpose {
        Purpose::Serve(addr) => {
            command.extend(with_address(strings("Cmd"), addr));
            env.push(("HOST".into(), addr.ip().to_string()));
            env.push(("PORT".into(), addr.port().to_string()));
            // gRPC, where the runtime has it, on the next port (8080 and 8081, as KServe).
            env.push(("GRPC_PORT".into(), grpc_port(addr).to_string()));
        }
        Purpose::Check if env.iter().any(|(k, _)| k == "MLAMBDA_LOADER") => {
            command.push("--check".into());
        }
        Purpose::Check => return Err(RunError::NotCheckable),
    }
    if command.is_empty() {
        return Err(RunError::NothingToRun);
    }
    let workdir = process["WorkingDir"]
        .as_str()
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    isolate(&rootfs, command, env, workdir, isolation)
}

/// How long a model may take to load for a check.
const CHECK_TIMEOUT_S: u64 = 600;

/// Starts the image's runtime with `--check`: Ok with what it found (its JSON line), or the
/// runtime's own error when the model does not load or a signature has no implementation.
pub fn check(layout: &Layout, tag: &str, cache: &Path) -> Result<String, RunError> {
    let launch = prepare(layout, tag, cache, Purpose::Check, Isolation::Auto)?;
    let mut child = std::process::Command::new(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| RunError::Io {
            path: launch.program.display().to_string(),
            source,
        })?;
    // Both pipes are read while the runtime runs, so a chatty one never blocks on a full pipe.
    let pipe = |reader: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut reader) = reader {
                let _ = reader.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = pipe(child.stdout.take().map(|r| Box::new(r) as _));
    let stderr = pipe(child.stderr.take().map(|r| Box::new(r) as _));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|source| RunError::Io {
            path: launch.program.display().to_string(),
            source,
        })? {
            break status;
        }
        if started.elapsed().as_secs() >= CHECK_TIMEOUT_S {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::CheckTimeout(CHECK_TIMEOUT_S));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let found: Option<serde_json::Value> = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok());
    match found {
        Some(found) if status.success() && found["loaded"] == true => Ok(stdout.trim().to_string()),
        Some(found) if found["error"].is_string() => Err(RunError::Check(
            found["error"].as_str().unwrap_or_default().to_string(),
        )),
        _ => {
            let last = stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            Err(RunError::Check(format!(
                "the runtime exited with {status}: {last}"
            )))
        }
    }
}

/// A runtime's `--host H --port P` set to `addr` (other commands are left as they are; they
/// get HOST and PORT in their environment).
/// The port of the protocol's gRPC service when HTTP is on `addr` (0: none).
pub fn grpc_port(addr: SocketAddr) -> u16 {
    addr.port().checked_add(1).unwrap_or(0)
}

fn with_address(mut cmd: Vec<String>, addr: SocketAddr) -> Vec<String> {
    for i in 0..cmd.len().saturating_sub(1) {
        match cmd[i].as_str() {
            "--host" => cmd[i + 1] = addr.ip().to_string(),
            "--port" => cmd[i + 1] = addr.port().to_string(),
            _ => {}
        }
    }
    cmd
}

/// The rootfs of an image, unpacked into `dir` unless an earlier run did: into a folder of
/// its own first, renamed into place when whole, so a run that dies midway leaves no half
/// rootfs to be taken for a whole one.
fn unpacked(
    layout: &Layout,
    layers: &[crate::oci::Descriptor],
    dir: &Path,
) -> Result<PathBuf, RunError> {
    let rootfs = dir.join("rootfs");
    if rootfs.is_dir() {
        return Ok(rootfs);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| RunError::Io { path, source }
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let work = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    let fresh = work.path().join("rootfs");
    std::fs::create_dir(&fresh).map_err(io(&fresh))?;
    unpack_layers(layout, layers, &fresh)?;
    // Where an isolated root mounts its own /proc, /dev and /tmp (a read-only root cannot
    // grow them later; images rarely carry them).
    for mount_point in ["proc", "dev", "tmp"] {
        let path = fresh.join(mount_point);
        if !path.exists() {
            std::fs::create_dir(&path).map_err(io(&path))?;
        }
    }
    match std::fs::rename(work.path(), dir) {
        Ok(()) => {
            // The temporary folder is the unpacked image now: nothing to remove.
            std::mem::forget(work);
            Ok(rootfs)
        }
        // Another run unpacked the same image first.
        Err(_) if rootfs.is_dir() => Ok(rootfs),
        Err(e) => Err(io(dir)(e)),
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn isolate(
    rootfs: &Path,
    command: Vec<String>,
    env: Vec<(String, String)>,
    workdir: &str,
    isolation: Isolation,
) -> Result<Launch, RunError> {
    let missing =
        |what: (&'static str, &'static str)| Err(RunError::IsolationUnavailable(what.0, what.1));
    match isolation {
        Isolation::Bubblewrap => match on_path("bwrap") {
            Some(bwrap) => Ok(bubblewrap(bwrap, rootfs, command, env, workdir)),
            None => missing((
                "bubblewrap",
                "bwrap is not installed (Debian: apt-get install bubblewrap)",
            )),
        },
        Isolation::Chroot => match on_path("chroot").filter(|_| is_root()) {
            Some(chroot) => Ok(chrooted(chroot, rootfs, command, env)),
            None => missing(("chroot", "chroot needs root")),
        },
        Isolation::Podman => match on_path("podman") {
            Some(podman) => Ok(podman_run(podman, rootfs, command, env, workdir)),
            None => missing((
                "podman",
                "podman is not installed (Debian: apt-get install podman)",
            )),
        },
        Isolation::Auto => {
            if let Some(bwrap) = on_path("bwrap") {
                Ok(bubblewrap(bwrap, rootfs, command, env, workdir))
            } else if let Some(chroot) = on_path("chroot").filter(|_| is_root()) {
                Ok(chrooted(chroot, rootfs, command, env))
            } else if let Some(podman) = on_path("podman") {
                Ok(podman_run(podman, rootfs, command, env, workdir))
            } else {
                Err(RunError::NoIsolation)
            }
        }
    }
}

fn bubblewrap(
    bwrap: PathBuf,
    rootfs: &Path,
    command: Vec<String>,
    env: Vec<(String, String)>,
    workdir: &str,
) -> Launch {
    let rootfs_text = rootfs.display().to_string();
    let mut args: Vec<String> = [
        "--ro-bind",
        &rootfs_text,
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--unshare-all",
        "--share-net",
        "--die-with-parent",
        "--clearenv",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (key, value) in &env {
        args.extend(["--setenv".to_string(), key.clone(), value.clone()]);
    }
    args.extend(["--chdir".to_string(), workdir.to_string(), "--".to_string()]);
    args.extend(command);
    Launch {
        program: bwrap,
        args,
        env: Vec::new(),
        isolation: "bubblewrap",
        rootfs: rootfs.to_path_buf(),
    }
}

fn chrooted(
    chroot: PathBuf,
    rootfs: &Path,
    command: Vec<String>,
    env: Vec<(String, String)>,
) -> Launch {
    let mut args = vec![rootfs.display().to_string()];
    args.extend(command);
    Launch {
        program: chroot,
        args,
        env,
        isolation: "chroot",
        rootfs: rootfs.to_path_buf(),
    }
}

/// `podman run --rootfs`: the unpacked folder as the container's root, read-only (podman
/// adds its tmpfs on /tmp, /run and /var/tmp), the host's network as the other isolations
/// have it. The rest — OCI runtime, rlimits, storage — is the user's containers.conf. podman
/// is exec'd in mlambda's place, so Ctrl-C reaches it and it stops and removes the container.
fn podman_run(
    podman: PathBuf,
    rootfs: &Path,
    command: Vec<String>,
    env: Vec<(String, String)>,
    workdir: &str,
) -> Launch {
    let mut args: Vec<String> = ["run", "--rm", "--network", "host", "--read-only"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--workdir".to_string(), workdir.to_string()]);
    for (key, value) in &env {
        args.extend(["--env".to_string(), format!("{key}={value}")]);
    }
    // With --rootfs, the first argument is the folder, not an image.
    args.extend(["--rootfs".to_string(), rootfs.display().to_string()]);
    args.extend(command);
    // podman itself needs the caller's environment (HOME, XDG_RUNTIME_DIR, CONTAINERS_CONF).
    let inherited = std::env::vars().collect();
    Launch {
        program: podman,
        args,
        env: inherited,
        isolation: "podman",
        rootfs: rootfs.to_path_buf(),
    }
}
