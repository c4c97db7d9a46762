//! The conformance shim of PROTOCOL.md §13, natively: one JSON request per line in, exactly one JSON answer per
//! line out, in order (docs/protocol.md §8). Background work (polling, refreshing, push, QR rotation) goes on
//! between requests, because the printer runs on its own tasks; `panel` answers at once from the panel's snapshot.
//!
//! Errors (docs/protocol.md §8): `bad_request` for an unparseable line or unknown op, `invalid_state` for an op
//! the panel's state does not allow (or any op before `start`), `timeout` for a `wait` that did not reach its state
//! (with the panel fields), `internal` otherwise; a `detail` member explains. The log goes to stderr and never
//! holds a PIN, token, code or URL (R-SEC-1, R-PWD-1): requests are logged by op and user name only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use roger_proto::shim::{
    JobsAnswer, PinAnswer, RegisterAnswer, ReleaseAnswer, ScanAnswer, ShimAnswer, ShimJob, ShimRequest, StartAnswer,
    CAP_PUSH, CAP_SCREENSHOT, TIMEOUT_ERROR,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::{Mfp, MfpConfig, MfpError, MfpHandle, ReleaseOutcome};
use crate::bus::PushBus;

/// Capability `wait` (PROTOCOL.md §13 `wait`).
pub const CAP_WAIT: &str = "wait";
/// Capabilities of docs/protocol.md §8 this shim has besides `screenshot`, `wait` and `push`.
pub const CAPS: [&str; 4] = ["pin", "release", "scan", "desktop"];
/// Error: an unparseable line or an unknown op (docs/protocol.md §8, PROTOCOL.md §13).
pub const BAD_REQUEST: &str = "bad_request";
/// Error: the op does not fit the state (docs/protocol.md §8).
pub const INVALID_STATE: &str = "invalid_state";
/// Error: anything else (docs/protocol.md §8).
pub const INTERNAL: &str = "internal";

/// Longest request line (PROTOCOL.md §13: one JSON object per line; a `start` with long paths is far below; longer lines are refused, not buffered).
pub const MAX_LINE: usize = 64 * 1024;
/// How long a `release` of a desktop job waits for the hand-over (below the runner's 30 s answer limit).
const HANDOVER_WAIT: Duration = Duration::from_secs(20);
/// Longest `wait` (the runner's own limit is `timeout_ms` + 5 s; this bounds a hostile value).
const MAX_WAIT: Duration = Duration::from_secs(600);

/// What the shim's printer gets besides the `start` request (PROTOCOL.md §13).
#[derive(Clone, Default)]
pub struct ShimOptions {
    /// A push source (PROTOCOL.md §11); `None`: polling only, and no `push` capability.
    pub push: Option<Arc<dyn PushBus>>,
    /// Output folder for printed documents (PROTOCOL.md §9; default `<state_dir>/printed`).
    pub out_dir: Option<PathBuf>,
    /// Printer model (PROTOCOL.md §5.1 `device_model`; empty: the default).
    pub model: String,
    /// Serial number (PROTOCOL.md §5.1 `device_serial`; empty: the default).
    pub serial: String,
    /// **Test-only**: the printer started by `start` is this known-broken variant (see [`super::mutant`]).
    pub mutant: Option<super::MfpMutant>,
}

impl std::fmt::Debug for ShimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimOptions")
            .field("push", &self.push.is_some())
            .field("out_dir", &self.out_dir)
            .field("model", &self.model)
            .field("serial", &self.serial)
            .field("mutant", &self.mutant)
            .finish()
    }
}

/// The shim's state: options, the printer once started, and the task that copies its narration to the log.
struct Shim {
    options: ShimOptions,
    mfp: Option<MfpHandle>,
    narrator: Option<JoinHandle<()>>,
    log: LogFn,
}

/// Where the shim's log lines go (PROTOCOL.md §13: stderr is the log; one line per call, never a secret, R-SEC-1).
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

fn detail(code: &str, detail: impl std::fmt::Display) -> ShimAnswer {
    ShimAnswer::err_with(code, &serde_json::json!({ "detail": detail.to_string() }))
}

fn from_error(e: &MfpError) -> ShimAnswer {
    detail(if e.is_state_error() { INVALID_STATE } else { INTERNAL }, e)
}

impl Shim {
    fn new(options: ShimOptions, log: LogFn) -> Self {
        Self { options, mfp: None, narrator: None, log }
    }

    fn log(&self, line: &str) {
        (self.log)(line);
    }

    /// Answers one request; the flag says whether to stop after writing the answer.
    async fn handle(&mut self, request: ShimRequest) -> (ShimAnswer, bool) {
        match &request {
            ShimRequest::Pin { username, .. } => self.log(&format!("op pin (user {username})")),
            other => self.log(&format!("op {}", other.op())),
        }
        if let ShimRequest::Start { discovery, ca, client_id, state_dir } = request {
            return (self.start(discovery, ca, client_id, state_dir).await, false);
        }
        if matches!(request, ShimRequest::Stop) {
            self.shutdown().await;
            return (ShimAnswer::ok_empty(), true);
        }
        let Some(mfp) = self.mfp.as_mut() else {
            return (detail(INVALID_STATE, "send start first"), false);
        };
        let answer = match request {
            ShimRequest::Start { .. } | ShimRequest::Stop => ShimAnswer::err(INTERNAL),
            ShimRequest::Register => match mfp.register().await {
                Ok(r) => ShimAnswer::ok(&RegisterAnswer {
                    qr: r.qr,
                    user_code: r.user_code,
                    screenshot: r.screenshot.map(|p| p.display().to_string()),
                }),
                Err(e) => from_error(&e),
            },
            ShimRequest::Panel => ShimAnswer::ok(&mfp.panel().to_answer()),
            ShimRequest::Wait { state, timeout_ms } => {
                let timeout = Duration::from_millis(timeout_ms).min(MAX_WAIT);
                match mfp.wait_for(state, timeout).await {
                    Ok(view) => ShimAnswer::ok(&view.to_answer()),
                    Err(view) => ShimAnswer::err_with(TIMEOUT_ERROR, &view.to_answer()),
                }
            }
            ShimRequest::Pin { username, pin } => match mfp.pin(&username, pin).await {
                Ok(accepted) => ShimAnswer::ok(&PinAnswer { accepted }),
                Err(e) => from_error(&e),
            },
            ShimRequest::Jobs => match mfp.jobs().await {
                Ok(jobs) => ShimAnswer::ok(&JobsAnswer {
                    jobs: jobs.into_iter().map(|j| ShimJob { id: j.id, file_name: j.file_name }).collect(),
                }),
                Err(e) => from_error(&e),
            },
            ShimRequest::Release { job } => match mfp.release(&job).await {
                Ok(ReleaseOutcome::Printed { .. }) => ShimAnswer::ok(&ReleaseAnswer { printed: true }),
                Ok(_) => ShimAnswer::ok(&ReleaseAnswer { printed: false }),
                Err(e) if e.is_state_error() => from_error(&e),
                Err(e) => ShimAnswer::ok(&serde_json::json!({ "printed": false, "detail": e.to_string() })),
            },
            ShimRequest::Scan { profile } => match mfp.scan(&profile).await {
                Ok(_) => ShimAnswer::ok(&ScanAnswer { uploaded: true }),
                Err(e) if e.is_state_error() => from_error(&e),
                Err(e) => ShimAnswer::ok(&serde_json::json!({ "uploaded": false, "detail": e.to_string() })),
            },
            ShimRequest::Logout => match mfp.logout().await {
                Ok(()) => ShimAnswer::ok_empty(),
                Err(e) => from_error(&e),
            },
            ShimRequest::Restart => match mfp.restart().await {
                Ok(()) => ShimAnswer::ok_empty(),
                Err(e) => {
                    // The old printer is off and the new one did not boot: start again with `start`.
                    self.mfp = None;
                    from_error(&e)
                }
            },
        };
        (answer, false)
    }

    async fn start(
        &mut self,
        discovery: String,
        ca: Option<String>,
        client_id: String,
        state_dir: String,
    ) -> ShimAnswer {
        if self.mfp.is_some() {
            return detail(INVALID_STATE, "already started");
        }
        if !roger_proto::token::client_id::is_emb(&client_id) {
            return detail(BAD_REQUEST, "client_id must look like emb-<vendor>");
        }
        if state_dir.is_empty() {
            return detail(BAD_REQUEST, "state_dir is empty");
        }
        let mut config = MfpConfig::new(discovery, state_dir);
        config.ca = ca.map(PathBuf::from);
        // The runner drives loopback servers over plain HTTP; elsewhere TLS is still required (R-DISC-2).
        config.allow_loopback_http = true;
        config.client_id = client_id;
        config.push = self.options.push.clone();
        config.out_dir = self.options.out_dir.clone();
        config.mutant = self.options.mutant;
        // docs/protocol.md §8: an answer later than 30 s fails the case, so a desktop release waits less.
        config.handover_wait = HANDOVER_WAIT;
        if !self.options.model.is_empty() {
            config.model = self.options.model.clone();
        }
        if !self.options.serial.is_empty() {
            config.serial = self.options.serial.clone();
        }
        match Mfp::start(config).await {
            Ok(mfp) => {
                let mut events = mfp.subscribe_events();
                for line in mfp.events() {
                    self.log(&format!("mfp: {line}"));
                }
                let log = self.log.clone();
                let log_line = move |l: &str| log(&format!("mfp: {l}"));
                self.narrator = Some(tokio::spawn(async move {
                    loop {
                        match events.recv().await {
                            Ok(line) => log_line(&line),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }));
                self.mfp = Some(mfp);
                let mut capabilities = vec![CAP_SCREENSHOT.to_owned(), CAP_WAIT.to_owned()];
                if self.options.push.is_some() {
                    capabilities.push(CAP_PUSH.to_owned());
                }
                capabilities.extend(CAPS.iter().map(|c| (*c).to_owned()));
                ShimAnswer::ok(&StartAnswer { capabilities })
            }
            Err(e @ MfpError::Config(_)) => detail(BAD_REQUEST, e),
            Err(e) => detail(INTERNAL, e),
        }
    }

    async fn shutdown(&mut self) {
        if let Some(mfp) = self.mfp.take() {
            mfp.stop().await;
        }
        if let Some(n) = self.narrator.take() {
            n.abort();
        }
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes. `Ok(None)` at the end of input; `Ok(Some(Err(())))` for a line
/// that is too long or not UTF-8 (it is skipped up to its end).
async fn read_line<R: AsyncBufRead + Unpin>(input: &mut R) -> std::io::Result<Option<Result<String, &'static str>>> {
    let mut buf = Vec::new();
    let n = (&mut *input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
        // Skip the rest of the over-long line.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            let m = (&mut *input).take(MAX_LINE as u64).read_until(b'\n', &mut rest).await?;
            if m == 0 || rest.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(Err("the line is too long")));
    }
    Ok(Some(String::from_utf8(buf).map_err(|_| "the line is not UTF-8")))
}

/// Runs the shim of PROTOCOL.md §13 over `input` and `output` until `stop` or the end of input (which stops the printer too),
/// logging with `log` (one line per call, never a secret).
pub async fn serve_with_log<R, W>(mut input: R, mut output: W, options: ShimOptions, log: LogFn) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut shim = Shim::new(options, log);
    loop {
        let line = match read_line(&mut input).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                shim.log("end of input; stopping");
                shim.shutdown().await;
                return Ok(());
            }
            Err(e) => {
                shim.shutdown().await;
                return Err(e);
            }
        };
        let (answer, stop) = match line {
            Err(why) => (detail(BAD_REQUEST, why), false),
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => match ShimRequest::parse_line(&line) {
                Ok(request) => shim.handle(request).await,
                Err(e) => {
                    shim.log(&format!("refused a request line: {e}"));
                    (detail(BAD_REQUEST, e), false)
                }
            },
        };
        let mut text = answer.to_line();
        text.push('\n');
        let written = async {
            output.write_all(text.as_bytes()).await?;
            output.flush().await
        }
        .await;
        if let Err(e) = written {
            shim.shutdown().await;
            return Err(e);
        }
        if stop {
            return Ok(());
        }
    }
}

/// [`serve_with_log`] logging to stderr (docs/protocol.md §8: stderr is the shim's log).
pub async fn serve<R, W>(input: R, output: W, options: ShimOptions) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    serve_with_log(input, output, options, Arc::new(|l: &str| eprintln!("shim: {l}"))).await
}

/// `roger-sim mfp --shim`: the shim of PROTOCOL.md §13 on the process's stdin and stdout; exit code 0 after `stop` or end of input.
pub async fn run_stdio(options: ShimOptions) -> ExitCode {
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let stdout = tokio::io::stdout();
    match serve(stdin, stdout, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shim: I/O error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::BufReader;

    /// Runs the shim over `input` and returns the answer lines and the log lines.
    async fn run(input: &[u8]) -> (Vec<ShimAnswer>, Vec<String>) {
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = log.clone();
        let mut out = Vec::new();
        serve_with_log(
            BufReader::new(input),
            &mut out,
            ShimOptions::default(),
            Arc::new(move |l: &str| sink.lock().expect("log").push(l.to_owned())),
        )
        .await
        .expect("serve");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.is_empty() || text.ends_with('\n'), "every answer is a whole line");
        let answers = text.lines().map(|l| ShimAnswer::parse_line(l).expect("answer")).collect();
        let lines = log.lock().expect("log").clone();
        (answers, lines)
    }

    /// One answer per request line, in order; blank lines are not requests (PROTOCOL.md §13).
    #[tokio::test]
    async fn one_answer_per_line_in_order() {
        let input = b"{\"op\":\"panel\"}\n\nnot json\n{\"op\":\"dance\"}\n{\"op\":\"jobs\"}\n{\"op\":\"stop\"}\n{\"op\":\"panel\"}\n";
        let (answers, _) = run(input).await;
        let errors: Vec<Option<&str>> = answers.iter().map(ShimAnswer::error).collect();
        assert_eq!(
            errors,
            vec![Some(INVALID_STATE), Some(BAD_REQUEST), Some(BAD_REQUEST), Some(INVALID_STATE), None],
            "nothing is answered after stop"
        );
        assert!(answers[1].fields()["detail"].is_string());
        assert_eq!(answers[4].to_line(), "{\"ok\":true}");
    }

    /// Every op but `start` and `stop` needs a started printer.
    #[tokio::test]
    async fn ops_before_start_are_invalid_state() {
        let ops = [
            r#"{"op":"register"}"#,
            r#"{"op":"panel"}"#,
            r#"{"op":"wait","state":"idle","timeout_ms":10}"#,
            r#"{"op":"pin","username":"alice","pin":"1234"}"#,
            r#"{"op":"jobs"}"#,
            r#"{"op":"release","job":"job_1"}"#,
            r#"{"op":"scan","profile":"pdf300"}"#,
            r#"{"op":"logout"}"#,
            r#"{"op":"restart"}"#,
        ];
        let input = ops.join("\n") + "\n";
        let (answers, _) = run(input.as_bytes()).await;
        assert_eq!(answers.len(), ops.len(), "the end of input stops the shim");
        for (a, op) in answers.iter().zip(ops) {
            assert_eq!(a.error(), Some(INVALID_STATE), "{op}");
        }
    }

    /// A malformed `start` is refused with `bad_request`; the PIN of a request never reaches the log (R-PWD-1).
    #[tokio::test]
    async fn bad_start_and_pin_redaction() {
        let input = concat!(
            r#"{"op":"start","discovery":"http://127.0.0.1:9","ca":null,"client_id":"roger-mobile","state_dir":"/tmp/x"}"#,
            "\n",
            r#"{"op":"wait","state":"idle","timeout_ms":"soon"}"#,
            "\n",
            r#"{"op":"pin","username":"alice","pin":"SECRET-PIN-8472"}"#,
            "\n",
            r#"{"op":"pin","username":"alice","pin":"SECRET-PIN-8472","#,
            "\n",
        );
        let (answers, log) = run(input.as_bytes()).await;
        assert_eq!(answers[0].error(), Some(BAD_REQUEST), "not an emb- client id");
        assert_eq!(answers[1].error(), Some(BAD_REQUEST), "a string for a number");
        assert_eq!(answers[2].error(), Some(INVALID_STATE));
        assert_eq!(answers[3].error(), Some(BAD_REQUEST), "truncated JSON");
        let all = format!("{log:?} {}", answers.iter().map(ShimAnswer::to_line).collect::<Vec<_>>().join(" "));
        assert!(!all.contains("SECRET-PIN-8472"), "{all}");
        assert!(log.iter().any(|l| l == "op pin (user alice)"), "{log:?}");
    }

    /// A `start` against a discovery service that is not there is an `internal` error, and the shim goes on.
    #[tokio::test]
    async fn start_without_a_server_is_internal() {
        // Port 9 (discard) on loopback: nothing listens there in the test environment.
        let dir = std::env::temp_dir().join(format!("roger-shim-unit-{}", std::process::id()));
        let start = serde_json::json!({
            "op": "start", "discovery": "http://127.0.0.1:9", "ca": null, "client_id": "emb-x",
            "state_dir": dir.display().to_string()
        });
        let input = format!("{start}\n{{\"op\":\"stop\"}}\n");
        let (answers, _) = run(input.as_bytes()).await;
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].error(), Some(INTERNAL), "{}", answers[0].to_line());
        assert!(answers[1].is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Over-long and non-UTF-8 lines are refused without buffering them whole, and the next line is read.
    #[tokio::test]
    async fn long_and_binary_lines() {
        let mut input = vec![b'x'; MAX_LINE * 3];
        input.push(b'\n');
        input.extend_from_slice(b"\xff\xfe\n{\"op\":\"stop\"}\n");
        let (answers, _) = run(&input).await;
        let errors: Vec<Option<&str>> = answers.iter().map(ShimAnswer::error).collect();
        assert_eq!(errors, vec![Some(BAD_REQUEST), Some(BAD_REQUEST), None]);
    }
}
