//! A private PostgreSQL server for the tests: `initdb` in a temporary
//! directory, a free port on loopback, the unix socket in the same
//! directory, run as the `postgres` user when the tests run as root (the
//! server refuses root). One server per test binary, a fresh database per
//! test. Without server binaries the PostgreSQL tests are skipped, with the
//! reason printed; under `CI=true` that is a failure instead.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A running server; dropping it (or the test binary exiting) stops it.
pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    /// Off on the shared server (speed); on for a private one, whose tests
    /// stop it the hard way and expect every acknowledged commit to remain.
    synchronous_commit: bool,
    next_db: AtomicU32,
    _dir: tempfile::TempDir,
}

impl PgServer {
    /// The URL of the server's maintenance database.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        use sqlx::Connection;
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("test_{n}");
        let mut conn = sqlx::PgConnection::connect(&self.admin_url())
            .await
            .expect("connect to the test server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-s"])
            .status();
    }

    /// Stops the server at once, as a crash or a network cut would look to
    /// its clients. For a private server only (see [`start_private`]).
    pub fn halt(&self) {
        self.stop();
    }

    /// Starts the server again on the same port and data.
    pub fn resume(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        // fsync off: a test server's data need not survive the machine,
        // only its own process.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit={} -c full_page_writes=off -c max_connections=300",
            self.port,
            self._dir.path().display(),
            if self.synchronous_commit { "on" } else { "off" },
        );
        let output = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self._dir.path().join("server.log"))
            .args(["-w", "-s", "-o", &options])
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{log}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        command(&self.bin, program, self.as_postgres)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn command(bin: &Path, program: &str, as_postgres: bool) -> Command {
    let program = bin.join(program);
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Where `initdb` and `pg_ctl` live: PATH first, then Debian's versioned
/// directories (not on PATH).
fn find_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    on_path
        .into_iter()
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn start(synchronous_commit: bool) -> Result<PgServer, String> {
    let bin = find_bin().ok_or("no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")?;
    let as_postgres = unsafe { libc::geteuid() } == 0;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    if as_postgres {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err("cannot hand the temp dir to the postgres user".into());
        }
    }
    let data = dir.path().join("data");
    let port = free_port();
    let output = command(&bin, "initdb", as_postgres)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let server = PgServer {
        port,
        bin,
        data: data.clone(),
        as_postgres,
        synchronous_commit,
        next_db: AtomicU32::new(0),
        _dir: dir,
    };
    server.pg_ctl_start()?;
    Ok(server)
}

/// A server of the test's own, that it may stop and start again; stopped
/// when dropped. `None` (with the reason printed) when it cannot start
/// outside CI; under `CI=true` it panics.
pub fn start_private() -> Option<PgServer> {
    start(true).map_err(|reason| skip(&reason)).ok()
}

/// Says why a PostgreSQL test is skipped; under `CI=true`, fails instead.
fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("PostgreSQL tests cannot run under CI=true: {reason}");
    }
    eprintln!("skipping a PostgreSQL test: {reason}");
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if let Some(Ok(server)) = SERVER.get() {
        server.stop();
        let _ = std::fs::remove_dir_all(server._dir.path());
    }
}

/// The binary's shared server, started on first use; `None` (with the reason
/// printed) when it cannot start outside CI. Under `CI=true` it panics.
pub fn server() -> Option<&'static PgServer> {
    let server = SERVER.get_or_init(|| {
        let server = start(false);
        if server.is_ok() {
            // Statics are never dropped: stop the server when the binary
            // exits, or it would outlive the tests.
            unsafe { libc::atexit(stop_at_exit) };
        }
        server
    });
    match server {
        Ok(server) => Some(server),
        Err(reason) => {
            skip(reason);
            None
        }
    }
}

/// A fresh database on the shared server, or `None` when skipped.
pub async fn fresh_database() -> Option<String> {
    match server() {
        Some(server) => Some(server.fresh_database().await),
        None => None,
    }
}
