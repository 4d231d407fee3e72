//! The real `roomcast` binary as a child process.

use super::*;

/// The real `roomcast` binary, started on a free port in its own directory
/// (for what only a process can show: a `kill -9`, its exit code, its
/// output).
pub struct Binary {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Binary {
    /// Starts the binary in `dir` with `args` (after `--port 0`) and waits
    /// for its `listening on` line.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["--port", "0"])
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the roomcast binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .expect("an address");
        Self { child, addr }
    }

    /// Runs the binary in `dir` with `args` to its end; returns its exit
    /// code, what it wrote to stdout and to stderr (for start-up errors).
    pub fn run_to_end(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
        Self::run_to_end_with_env(dir, args, &[])
    }

    /// [`Binary::run_to_end`] with `env` added to its environment.
    pub fn run_to_end_with_env(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Option<i32>, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["--port", "0"])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .output()
            .expect("run the roomcast binary");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGKILL, as a crash or an OOM kill would: nothing runs after it.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    pub async fn join(&self, room: &str, user: &str) -> (Client, Value) {
        let path = with_claim(&format!("/ws/{room}/{user}"));
        let mut c = Client::connect(&format!("ws://{}{path}", self.addr)).await;
        let welcome = c.expect("welcome").await;
        (c, welcome)
    }

    pub async fn get(&self, path: &str) -> HttpResponse {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        http_raw(self.addr, req.as_bytes(), false).await
    }

    pub async fn metric(&self, name: &str) -> u64 {
        metric_value(&self.get("/metrics").await.text(), name)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
