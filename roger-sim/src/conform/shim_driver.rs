//! Driving a vendor's shim process (PROTOCOL.md §13, docs/protocol.md §8): spawned with `sh -c "<command>"` in its
//! own process group, one JSON request per line on its stdin, exactly one JSON answer per line on its stdout, in
//! order. An answer later than 30 s (`wait`: its `timeout_ms` plus 5 s), a line that is not one JSON object, or an
//! exit before `stop` breaks the protocol and fails the case. The shim's stderr (its log) is kept whole, up to a
//! cap, for the secret scans of R-SEC-1 and R-PWD-1.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roger_proto::shim::{ShimAnswer, ShimRequest};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// docs/protocol.md §8: a shim that answers nothing within 30 s fails the case.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// docs/protocol.md §8: a `wait` may take its `timeout_ms` plus this much.
pub const WAIT_GRACE: Duration = Duration::from_secs(5);
/// Longest answer line read (a hostile shim cannot make the runner buffer without bound).
pub const MAX_ANSWER_LINE: usize = 1024 * 1024;
/// Most stderr bytes kept (the rest is counted, not kept).
pub const MAX_STDERR: usize = 8 * 1024 * 1024;
/// How long `stop` may take before the process group is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the shim could not be driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShimDriverError {
    /// `sh` could not be started.
    #[error("could not start the shim with sh -c: {0}")]
    Spawn(std::io::Error),
    /// No answer in time.
    #[error("no answer to `{op}` within {secs} s")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The limit.
        secs: u64,
    },
    /// The shim closed its stdout or exited.
    #[error("the shim exited or closed stdout before answering `{op}`")]
    Closed {
        /// The operation.
        op: &'static str,
    },
    /// The answer is not one JSON object with a boolean `ok` (the message never quotes it).
    #[error("the answer to `{op}` is not a shim answer: {detail}")]
    BadAnswer {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Writing the request failed.
    #[error("could not write `{op}` to the shim: {source}")]
    Write {
        /// The operation.
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One request and what came back, for the report (the request redacted: a `pin` shows only the user name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// When the request was written.
    pub at: Instant,
    /// The request, redacted.
    pub request: String,
    /// The answer's `error`, or `None` for `"ok":true`.
    pub error: Option<String>,
    /// How long the answer took.
    pub took: Duration,
}

/// A running shim.
pub struct ShimDriver {
    child: Child,
    pid: Option<u32>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    turns: Vec<Turn>,
    broken: bool,
}

impl std::fmt::Debug for ShimDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimDriver").field("pid", &self.pid).field("turns", &self.turns.len()).finish()
    }
}

fn redacted(req: &ShimRequest) -> String {
    match req {
        ShimRequest::Pin { username, .. } => format!("{{\"op\":\"pin\",\"username\":{username:?},\"pin\":\"…\"}}"),
        other => other.to_line(),
    }
}

impl ShimDriver {
    /// Starts `sh -c command` in its own process group with `env` added to its environment.
    pub fn spawn(command: &str, env: &[(&str, String)]) -> Result<Self, ShimDriverError> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that stopping it also stops whatever `sh -c` started.
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(ShimDriverError::Spawn)?;
        let pid = child.id();
        let missing = || ShimDriverError::Spawn(std::io::Error::other("a standard stream was not piped"));
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let mut err = child.stderr.take().ok_or_else(missing)?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let stderr_task = tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            loop {
                match err.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                        let room = MAX_STDERR.saturating_sub(s.len());
                        s.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
        });
        Ok(Self {
            child,
            pid,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            stderr,
            stderr_task: Some(stderr_task),
            turns: Vec::new(),
            broken: false,
        })
    }

    /// Sends one request and reads its answer (docs/protocol.md §8 time limits). After a protocol break every
    /// further request fails at once.
    pub async fn ask(&mut self, request: &ShimRequest) -> Result<ShimAnswer, ShimDriverError> {
        let op = request.op();
        if self.broken {
            return Err(ShimDriverError::Closed { op });
        }
        let limit = match request {
            ShimRequest::Wait { timeout_ms, .. } => Duration::from_millis(*timeout_ms).saturating_add(WAIT_GRACE),
            _ => ANSWER_TIMEOUT,
        };
        let at = Instant::now();
        let mut line = request.to_line();
        line.push('\n');
        let Some(stdin) = self.stdin.as_mut() else {
            self.broken = true;
            return Err(ShimDriverError::Closed { op });
        };
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await;
        if let Err(source) = written {
            self.broken = true;
            return Err(ShimDriverError::Write { op, source });
        }
        let read = tokio::time::timeout(limit, read_answer_line(&mut self.stdout)).await;
        let answer = match read {
            Err(_) => Err(ShimDriverError::Timeout { op, secs: limit.as_secs() }),
            Ok(Ok(None)) => Err(ShimDriverError::Closed { op }),
            Ok(Ok(Some(Err(detail)))) => Err(ShimDriverError::BadAnswer { op, detail: detail.to_owned() }),
            Ok(Err(e)) => Err(ShimDriverError::BadAnswer { op, detail: e.to_string() }),
            Ok(Ok(Some(Ok(text)))) => {
                ShimAnswer::parse_line(&text).map_err(|e| ShimDriverError::BadAnswer { op, detail: e.to_string() })
            }
        };
        match &answer {
            Ok(a) => self.turns.push(Turn {
                at,
                request: redacted(request),
                error: a.error().map(str::to_owned),
                took: at.elapsed(),
            }),
            Err(_) => self.broken = true,
        }
        answer
    }

    /// The shim's stderr so far (lossy UTF-8).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The requests sent and how they were answered.
    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    /// Sends `stop` (if the protocol still holds), waits a little for the exit, then kills the process group.
    /// Returns the whole stderr.
    pub async fn shutdown(mut self) -> String {
        if !self.broken {
            let _ = tokio::time::timeout(STOP_GRACE, self.ask(&ShimRequest::Stop)).await;
        }
        drop(self.stdin.take());
        let exited = tokio::time::timeout(STOP_GRACE, self.child.wait()).await.is_ok();
        if !exited {
            self.kill_group();
            let _ = tokio::time::timeout(STOP_GRACE, self.child.wait()).await;
        } else {
            // `sh` is gone; anything it left behind in the group goes too.
            self.kill_group();
        }
        if let Some(t) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        self.stderr_text()
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.pid {
            if let Ok(pgid) = i32::try_from(pid) {
                // SAFETY: `kill(2)` with a negative pid signals the process group this driver created for the shim
                // (`process_group(0)` made the child its leader); it touches no memory of ours.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for ShimDriver {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill_group();
        }
    }
}

/// Reads one answer line of at most [`MAX_ANSWER_LINE`] bytes: `Ok(None)` at end of input, `Ok(Some(Err(_)))` for a
/// line that is too long or not UTF-8.
async fn read_answer_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
) -> std::io::Result<Option<Result<String, &'static str>>> {
    let mut buf = Vec::new();
    let n = (&mut *input).take(MAX_ANSWER_LINE as u64 + 1).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_ANSWER_LINE {
        return Ok(Some(Err("the answer line is longer than 1 MiB")));
    }
    Ok(Some(String::from_utf8(buf).map_err(|_| "the answer line is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shim written in `sh`: answers each line, logs to stderr, exits on stop.
    const ECHO_SHIM: &str = r#"while IFS= read -r line; do
  echo "got: $line" >&2
  case "$line" in
    *'"op":"stop"'*) echo '{"ok":true}'; exit 0 ;;
    *'"op":"panel"'*) echo '{"ok":true,"state":"unregistered","scopes":[]}' ;;
    *'"op":"jobs"'*) echo 'not json' ;;
    *) echo '{"ok":false,"error":"unsupported"}' ;;
  esac
done"#;

    #[tokio::test]
    async fn one_answer_per_request_and_stderr_is_kept() {
        let mut shim = ShimDriver::spawn(ECHO_SHIM, &[]).expect("spawn");
        let panel = shim.ask(&ShimRequest::Panel).await.expect("panel");
        assert!(panel.is_ok());
        assert_eq!(panel.fields()["state"], "unregistered");
        let reg = shim.ask(&ShimRequest::Register).await.expect("register");
        assert_eq!(reg.error(), Some("unsupported"));
        let stderr = shim.shutdown().await;
        assert!(stderr.contains("got: {\"op\":\"panel\"}"), "{stderr}");
        assert!(stderr.contains("\"op\":\"stop\""), "stop was sent: {stderr}");
    }

    #[tokio::test]
    async fn a_non_json_answer_breaks_the_protocol() {
        let mut shim = ShimDriver::spawn(ECHO_SHIM, &[]).expect("spawn");
        let err = shim.ask(&ShimRequest::Jobs).await.expect_err("not json");
        assert!(matches!(err, ShimDriverError::BadAnswer { op: "jobs", .. }), "{err}");
        assert!(matches!(shim.ask(&ShimRequest::Panel).await, Err(ShimDriverError::Closed { .. })));
        shim.shutdown().await;
    }

    #[tokio::test]
    async fn silence_and_exit_are_errors() {
        let mut silent = ShimDriver::spawn("sleep 30", &[]).expect("spawn");
        let req = ShimRequest::Wait { state: roger_proto::shim::PanelState::Idle, timeout_ms: 10 };
        // The wait's limit is 10 ms + 5 s.
        let started = Instant::now();
        let err = silent.ask(&req).await.expect_err("silent");
        assert!(matches!(err, ShimDriverError::Timeout { op: "wait", .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        silent.shutdown().await;
        let mut gone = ShimDriver::spawn("exit 0", &[]).expect("spawn");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = gone.ask(&ShimRequest::Panel).await.expect_err("exited");
        assert!(matches!(err, ShimDriverError::Closed { .. } | ShimDriverError::Write { .. }), "{err}");
        gone.shutdown().await;
    }

    #[test]
    fn pins_are_redacted_in_the_transcript() {
        let r =
            redacted(&ShimRequest::Pin { username: "alice".into(), pin: roger_proto::secret::Pin::new("84736251") });
        assert!(!r.contains("84736251") && r.contains("alice"), "{r}");
    }
}
