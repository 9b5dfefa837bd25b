//! A PostgreSQL server of the test's own (Debian's `postgresql`): `initdb` into a temporary
//! folder, `pg_ctl start` on a free loopback port, stopped (`-m immediate`) when dropped. As
//! root, the server runs as the `postgres` user, which owns the folder.

use super::http::free_port;
use super::run_ok;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Server settings (`-c name=value`) of every start.
    settings: Vec<String>,
}

impl Postgres {
    /// `None` when PostgreSQL is not installed (skipped loudly; fails when CI is set).
    pub fn start() -> Option<Postgres> {
        Postgres::start_with(false)
    }

    /// A server that takes TLS connections only (`hostssl`), with a self-signed certificate
    /// for 127.0.0.1 whose PEM is [`Postgres::ca_cert`].
    pub fn start_tls_only() -> Option<Postgres> {
        Postgres::start_with(true)
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn start_with(tls: bool) -> Option<Postgres> {
        let Some(bin) = server_bin() else {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL is not installed, and CI is set: .ci/run must install it");
            }
            eprintln!("SKIPPED: PostgreSQL (initdb, pg_ctl) not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if is_root() {
            run_ok(
                Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(dir.path()),
            );
        }
        run_ok(
            as_postgres(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        );
        let mut settings = vec!["fsync=off".to_string()];
        if tls {
            let (cert, key) = super::self_signed_cert(dir.path())?;
            for (from, to) in [(&cert, "server.crt"), (&key, "server.key")] {
                std::fs::copy(from, data.join(to)).unwrap();
                set_mode(&data.join(to), 0o600);
            }
            if is_root() {
                run_ok(Command::new("chown").args(["-R", "postgres:"]).arg(&data));
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            settings.push("ssl=on".into());
        }
        let mut server = Postgres {
            bin,
            dir,
            port: 0,
            settings,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.pg_ctl("start").status.success() {
                return Some(server);
            }
        }
        panic!("PostgreSQL did not start: {}", server.log());
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`, the database created when missing.
    pub fn url(&self, database: &str) -> String {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if database != "postgres" && !self.settings.iter().any(|s| s == "ssl=on") {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
                .unwrap()
                .is_some();
            if !exists {
                client
                    .batch_execute(&format!("CREATE DATABASE \"{database}\""))
                    .unwrap();
            }
        }
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server at once, as a crash would.
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        let started = self.pg_ctl("start");
        assert!(started.status.success(), "{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn pg_ctl(&self, action: &str) -> std::process::Output {
        let data = self.dir.path().join("data");
        let mut command = as_postgres(&self.bin.join("pg_ctl"));
        command
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.dir.path().join("log"));
        match action {
            "start" => command.arg("-o").arg(format!(
                "-k {} -p {} -h 127.0.0.1 {}",
                self.dir.path().display(),
                self.port,
                self.settings
                    .iter()
                    .map(|s| format!("-c {s}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            _ => command.args(["-m", "immediate"]),
        };
        command.args(["-w", action]).output().unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest `/usr/lib/postgresql/<major>/bin`.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
