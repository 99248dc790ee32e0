//! A PostgreSQL server started by a test: a cluster in a temporary directory (initdb, then
//! pg_ctl on a free loopback port; as the `postgres` user when the test runs as root), stopped
//! on drop. Shared by this crate's tests and the binary's (`cli/tests`, by `#[path]`).

// Each including crate uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A PostgreSQL server in a temporary directory, stopped on drop.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    as_user: bool,
    /// `postgres://shadowtap@127.0.0.1:PORT/postgres`.
    pub url: String,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|b| b.join("initdb").exists());
    found.sort();
    found.pop().expect(
        "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): scripts/test.sh installs the postgresql package",
    )
}

impl Postgres {
    fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let status = if self.as_user {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .stdout(Stdio::null())
                .status()
        } else {
            Command::new(&exe).args(args).stdout(Stdio::null()).status()
        }
        .unwrap();
        assert!(status.success(), "{program} {args:?}: {status}");
    }

    /// Starts one on a free port.
    pub fn start() -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let root = is_root();
        if root {
            let st = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            bin,
            data: data.clone(),
            as_user: root,
            url: format!("postgres://shadowtap@127.0.0.1:{port}/postgres"),
            _dir: dir,
        };
        let d = data.to_str().unwrap();
        pg.run(
            "initdb",
            &["-D", d, "-A", "trust", "-U", "shadowtap", "--no-sync"],
        );
        pg.start_again();
        pg
    }
}

impl Postgres {
    /// Stops the server at once (connections are cut, as when it crashes).
    pub fn stop(&self) {
        let d = self.data.to_str().unwrap().to_owned();
        self.run("pg_ctl", &["-D", &d, "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the server (again, after [`Postgres::stop`]) on its port.
    pub fn start_again(&self) {
        let d = self.data.to_str().unwrap().to_owned();
        let port = self
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let sock = self.data.parent().unwrap().to_str().unwrap().to_owned();
        let opts = format!("-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off");
        let log = self.data.parent().unwrap().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &d,
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast: connections are closed) and starts it again on the same port.
    pub fn restart(&self) {
        let d = self.data.to_str().unwrap().to_owned();
        self.run("pg_ctl", &["-D", &d, "-m", "fast", "-w", "restart"]);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let d = self.data.to_str().unwrap().to_owned();
        // Stopped already by the test, maybe: pg_ctl's failure is then no failure.
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", d.as_str(), "-m", "immediate", "stop"];
        let _ = if self.as_user {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        } else {
            Command::new(&exe)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
    }
}
