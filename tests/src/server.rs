//! Real server processes for tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which server binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// `krest-server`, on tokio.
    Tokio,
    /// `krest-server-smol`, on smol.
    Smol,
}

impl ServerKind {
    /// Every server binary; black-box tests run against each.
    pub const ALL: [ServerKind; 2] = [ServerKind::Tokio, ServerKind::Smol];

    fn binary_name(self) -> &'static str {
        match self {
            ServerKind::Tokio => "krest-server",
            ServerKind::Smol => "krest-server-smol",
        }
    }

    fn package(self) -> &'static str {
        match self {
            ServerKind::Tokio => "krest-runtime-tokio",
            ServerKind::Smol => "krest-runtime-smol",
        }
    }
}

/// A running server with its own data directory (removed on drop).
pub struct Server {
    kind: ServerKind,
    child: Option<Child>,
    data_dir: PathBuf,
    extra_arguments: Vec<String>,
    /// Whether the listeners come from the arguments (port 0) rather than a config file.
    listen_anywhere: bool,
    /// The client listener of the current process.
    pub client: SocketAddr,
    /// The admin listener of the current process.
    pub admin: SocketAddr,
    /// Standard error of the current process, collected in the background.
    stderr_path: PathBuf,
}

static NEXT_DIRECTORY: AtomicU64 = AtomicU64::new(0);

impl Server {
    /// Starts a server of `kind` with defaults.
    pub fn start(kind: ServerKind) -> Server {
        Server::start_with(kind, &[])
    }

    /// Starts a server with extra command-line arguments (e.g. `--set limits.max_queues=2`).
    pub fn start_with(kind: ServerKind, arguments: &[&str]) -> Server {
        Server::start_inner(kind, arguments, true)
    }

    /// Starts a server whose listeners `config_text` (a `krest.toml`, written to the server's
    /// directory) fixes, as a cluster's nodes must be: its peers know where to find it.
    pub fn start_configured(kind: ServerKind, config_text: &str) -> Server {
        static NEXT_CONFIG: AtomicU64 = AtomicU64::new(0);
        let number = NEXT_CONFIG.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "krest-test-{}-config-{number}.toml",
            std::process::id()
        ));
        std::fs::write(&path, config_text).expect("a config file");
        let config = path.to_string_lossy().to_string();
        Server::start_inner(kind, &["--config", &config], false)
    }

    fn start_inner(kind: ServerKind, arguments: &[&str], listen_anywhere: bool) -> Server {
        let number = NEXT_DIRECTORY.fetch_add(1, Ordering::Relaxed);
        let data_dir =
            std::env::temp_dir().join(format!("krest-test-{}-{number}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("temporary directory");
        let mut server = Server {
            kind,
            child: None,
            stderr_path: data_dir.with_extension("stderr"),
            data_dir,
            extra_arguments: arguments
                .iter()
                .map(|argument| argument.to_string())
                .collect(),
            listen_anywhere,
            client: "127.0.0.1:0".parse().expect("address"),
            admin: "127.0.0.1:0".parse().expect("address"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let stderr = std::fs::File::create(&self.stderr_path).expect("stderr file");
        let listen: &[&str] = match self.listen_anywhere {
            true => &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            false => &[],
        };
        let mut child = Command::new(binary(self.kind))
            .arg("--data-dir")
            .arg(self.data_dir.join("data"))
            .args(listen)
            .args(&self.extra_arguments)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().expect("piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not report its ports; stderr:\n{}",
                    self.stderr()
                );
            }
        };
        let address = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(key))
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in ready line {line:?}"))
        };
        self.client = address("client=");
        self.admin = address("admin=");
        self.child = Some(child);
    }

    /// The server's standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `host:port` of the client listener.
    pub fn address(&self) -> String {
        self.client.to_string()
    }

    /// Kills the process with SIGKILL (no cleanup, no final sync).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory (new ports).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().expect("server running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        self.wait_for_exit(Duration::from_secs(20))
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits (at most `bound`, then kills it and panics) for the process to exit by itself.
    pub fn wait_for_exit(&mut self, bound: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within {bound:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// One admin HTTP request; returns (status, body).
    pub fn admin_request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.admin).expect("admin connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("admin write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("admin read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("status line");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// The path of the `krest` command-line tool, built like the servers.
pub fn cli_binary() -> PathBuf {
    binary(ServerKind::Tokio).with_file_name("krest")
}

/// The path of a server binary, built (once per test process) with the profile and target
/// directory of the running test.
pub fn binary(kind: ServerKind) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let profile_dir = BUILT.get_or_init(|| {
        let executable = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = executable
            .parent()
            .and_then(Path::parent)
            .expect("target layout")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir
            .file_name()
            .is_some_and(|name| name == "release");
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--bins"])
            .env("CARGO_TARGET_DIR", &target_dir);
        for kind in ServerKind::ALL {
            build.args(["-p", kind.package()]);
        }
        build.args(["-p", "krest-client"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the server binaries failed");
        profile_dir
    });
    profile_dir.join(kind.binary_name())
}
