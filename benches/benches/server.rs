//! Token-endpoint throughput (DESIGN.md "Benchmarks"): roger-sim's server in-process on loopback, driven by many
//! keep-alive connections at once, beside an axum hello-world served the same way, measured in the same run; the
//! reporter prints requests per second and the ratio ours / hello-world at the end, then the same ratio from paired
//! rounds that measure all three back to back ([`paired_rounds`]), which the machine's drift disturbs less.
//!
//! * `refresh_grant`: `grant_type=refresh_token`, every request a valid rotation. Printers are registered
//!   straight through the core beforehand; each connection owns a pool of them and always presents a printer's
//!   newest refresh token (taken from the previous answer). A connection moves the virtual clock one access-token
//!   lifetime / [`CONNECTIONS`] forward (the server's own setting) each time it has refreshed all of its printers,
//!   so every printer refreshes about once per access-token lifetime, as real printers do: the server then holds
//!   about one live access token per printer, dropping expired ones as it mints new ones, instead of every token
//!   minted during the run.
//! * `device_code_pending`: `grant_type=urn:ietf:params:oauth:grant-type:device_code` for pending registration codes,
//!   each answered `authorization_pending`, never `slow_down`: the codes are spread over the connections, the
//!   interval is 1 s, and a connection moves the virtual clock 1 s forward (in-process, no sweep) each time it has
//!   polled all of its codes, so no code is ever polled within its interval.
//! * `axum_hello_world` (the baseline): `POST /hello` with a body of the same size, answered `Hello, World!` by a
//!   bare axum router on the same hyper/hyper-util connection setup as roger-sim's `serve`.
//!
//! A refresh costs the same however old its family is: refresh tokens carry their family's handle
//! (docs/protocol.md C12), so reuse detection keeps no history. The end-of-run line prints how many rotations were
//! made. (How much memory a growing access table costs is `tests/server_memory.rs`'s question, not this one's.)
//!
//! Every answer is checked (status and body); an unexpected one panics, so a number is only ever reported for
//! valid rotations and genuinely pending polls.
//!
//! The servers run on one multi-threaded tokio runtime with 2 workers (the CI machine's cores); the clients run on
//! a current-thread runtime on the bench's own thread, so where tokio places a client task cannot change what the
//! servers get (with clients and servers on one runtime, the hello-world's rate varied between runs by up to 2×).
//! [`CONNECTIONS`] connections per benchmark, each sending its requests one after another (keep-alive, one in
//! flight per connection), opened once and kept across criterion's samples. Criterion times a batch of [`BATCH`]
//! requests (`Throughput::Elements(BATCH)`).
//!
//! `cargo bench -p roger-benches --bench server -- --warm-up-time 1 --measurement-time 3`

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::routing::post;
use axum::Router;
use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use roger_benches::core_setup::{app_principal, drain, register_printer, registration_code, MFP};
use roger_benches::ThroughputComparison;
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::metadata::GRANT_DEVICE_CODE;
use roger_sim::server::app::Shared;
use roger_sim::server::clock::SharedClock;
use roger_sim::server::{start, RunningServer, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// Concurrent keep-alive connections per benchmark.
const CONNECTIONS: usize = 32;
/// Requests per criterion iteration (8 per connection).
const BATCH: u64 = CONNECTIONS as u64 * 8;
/// Printers registered for the refresh benchmark (128 per connection).
const PRINTERS: usize = 4096;
/// Pending registration codes for the polling benchmark (312 or 313 per connection).
const CODES: usize = 10_000;

const GROUP: &str = "token_endpoint";
const FORM: &str = "application/x-www-form-urlencoded";

/// The rows of the report: `(group, function)` ids as registered below.
const COMPARISONS: [ThroughputComparison; 2] = [
    ThroughputComparison {
        name: "POST /oauth/token refresh_token (rotation)",
        elements: BATCH,
        ours: (GROUP, "refresh_grant"),
        baseline: (GROUP, "axum_hello_world"),
    },
    ThroughputComparison {
        name: "POST /oauth/token device_code (authorization_pending)",
        elements: BATCH,
        ours: (GROUP, "device_code_pending"),
        baseline: (GROUP, "axum_hello_world"),
    },
];

// ---------------------------------------------------------------------------------------------------------------
// Client: one hyper HTTP/1.1 connection per task, requests one after another
// ---------------------------------------------------------------------------------------------------------------

/// What one connection sends and how it checks the answers.
trait Workload: Send + 'static {
    /// The next request.
    fn request(&mut self, host: &HeaderValue) -> Request<Full<Bytes>>;
    /// Checks the answer to the request just sent (panics on anything unexpected).
    fn answer(&mut self, status: StatusCode, body: &[u8]);
    /// Answers checked so far.
    fn answered(&self) -> u64;
}

fn post_form(path: &'static str, host: &HeaderValue, body: Bytes) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(HOST, host.clone())
        .header(CONTENT_TYPE, FORM)
        .body(Full::new(body))
        .expect("a valid request")
}

struct Connection<W> {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    work: W,
}

impl<W: Workload> Connection<W> {
    async fn open(addr: SocketAddr, work: W) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = HeaderValue::from_str(&addr.to_string()).expect("host header");
        Self { sender, host, work }
    }

    async fn run(mut self, requests: u64) -> Self {
        for _ in 0..requests {
            let req = self.work.request(&self.host);
            self.sender.ready().await.expect("the connection stays open");
            let resp = self.sender.send_request(req).await.expect("an answer");
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("the body").to_bytes();
            self.work.answer(status, &body);
        }
        self
    }
}

/// The connections of one benchmark, kept open across criterion's samples.
struct Pool<W> {
    conns: Vec<Connection<W>>,
    /// Requests sent through [`Pool::run`] and the server threads' CPU time they took, all samples together.
    cpu: CpuTally,
}

/// Requests and the CPU time the server threads spent on them.
#[derive(Debug, Default, Clone, Copy)]
struct CpuTally {
    requests: u64,
    server_cpu: Duration,
}

impl CpuTally {
    fn per_cpu_second(&self) -> Option<f64> {
        let secs = self.server_cpu.as_secs_f64();
        (secs > 0.0).then(|| self.requests as f64 / secs)
    }
}

/// The name of the server runtime's threads, so their CPU time can be told from the clients' and other processes'.
const SERVER_THREAD: &str = "roger-bench-srv";

/// CPU time (on CPU, nanoseconds) of this process's server threads so far, from `/proc/self/task/*/schedstat`
/// (Linux). `None` where that is not readable.
fn server_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != SERVER_THREAD {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

impl<W: Workload> Pool<W> {
    async fn open(addr: SocketAddr, work: Vec<W>) -> Self {
        let mut conns = Vec::with_capacity(work.len());
        for w in work {
            conns.push(Connection::open(addr, w).await);
        }
        Self { conns, cpu: CpuTally::default() }
    }

    /// Sends `total` requests spread evenly over the connections, all connections at once; returns the wall time.
    async fn run(&mut self, total: u64) -> Duration {
        let conns = std::mem::take(&mut self.conns);
        let n = conns.len() as u64;
        let cpu_before = server_cpu();
        let start = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| tokio::spawn(c.run(total / n + u64::from((i as u64) < total % n))))
            .collect();
        for t in tasks {
            self.conns.push(t.await.expect("a connection task panicked: an unexpected answer"));
        }
        let wall = start.elapsed();
        if let (Some(before), Some(after)) = (cpu_before, server_cpu()) {
            self.cpu.requests += total;
            self.cpu.server_cpu += after.saturating_sub(before);
        }
        wall
    }

    fn answered(&self) -> u64 {
        self.conns.iter().map(|c| c.work.answered()).sum()
    }

    /// One turn of a paired round ([`paired_rounds`]): [`PAIRED_WARM_UP`] requests unmeasured, then the rates of
    /// [`PAIRED_REQUESTS`].
    async fn paired_turn(&mut self) -> Rates {
        let per_second = |d: Duration| PAIRED_REQUESTS as f64 / d.as_secs_f64();
        self.run(PAIRED_WARM_UP).await;
        let before = self.cpu;
        let wall = self.run(PAIRED_REQUESTS).await;
        let cpu = self.cpu.server_cpu - before.server_cpu;
        Rates {
            wall: per_second(wall),
            cpu: (self.cpu.requests > before.requests && !cpu.is_zero()).then(|| per_second(cpu)),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------------------------

/// The baseline: the same request size as a refresh, a 13-byte answer.
struct Hello {
    body: Bytes,
    answered: u64,
}

impl Workload for Hello {
    fn request(&mut self, host: &HeaderValue) -> Request<Full<Bytes>> {
        post_form("/hello", host, self.body.clone())
    }

    fn answer(&mut self, status: StatusCode, body: &[u8]) {
        assert!(status == StatusCode::OK && body == b"Hello, World!", "hello-world answered {status}");
        self.answered += 1;
    }

    fn answered(&self) -> u64 {
        self.answered
    }
}

/// Refresh rotations over a pool of printers, round robin, each with its newest refresh token.
struct Refresh {
    tokens: Vec<String>,
    next: usize,
    clock: SharedClock,
    /// How far the clock moves each time this connection has refreshed all of its printers: with every connection
    /// doing so, each printer refreshes about once per access-token lifetime, as printers do.
    round_step: Duration,
    answered: u64,
}

/// The value after `key` (`"name":"`, quotes included) in a flat JSON answer: the client's side of the benchmark
/// stays cheap (no allocation, no JSON parser) and equal for every request.
fn json_string<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find(key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

impl Workload for Refresh {
    fn request(&mut self, host: &HeaderValue) -> Request<Full<Bytes>> {
        // Refresh tokens are `rrt_` + base64url: nothing to percent-encode.
        let body = format!("grant_type=refresh_token&refresh_token={}&client_id={MFP}", self.tokens[self.next]);
        post_form("/oauth/token", host, Bytes::from(body))
    }

    fn answer(&mut self, status: StatusCode, body: &[u8]) {
        let rotated = json_string(body, r#""refresh_token":""#).filter(|_| status == StatusCode::OK);
        let Some(rotated) = rotated else {
            panic!("refresh answered {status}: {}", String::from_utf8_lossy(body));
        };
        self.tokens[self.next] = rotated.to_owned();
        self.next = (self.next + 1) % self.tokens.len();
        if self.next == 0 {
            // Straight on the clock, as `Poll` does (no sweep): the server drops expired access tokens as it mints.
            self.clock.advance(self.round_step).expect("the virtual clock advances");
        }
        self.answered += 1;
    }

    fn answered(&self) -> u64 {
        self.answered
    }
}

/// Polls of pending device codes, round robin; one virtual second passes after each round.
struct Poll {
    bodies: Vec<Bytes>,
    next: usize,
    clock: SharedClock,
    answered: u64,
}

impl Workload for Poll {
    fn request(&mut self, host: &HeaderValue) -> Request<Full<Bytes>> {
        post_form("/oauth/token", host, self.bodies[self.next].clone())
    }

    fn answer(&mut self, status: StatusCode, body: &[u8]) {
        let pending =
            status == StatusCode::BAD_REQUEST && json_string(body, r#""error":""#) == Some("authorization_pending");
        assert!(pending, "poll answered {status}: {}", String::from_utf8_lossy(body));
        self.answered += 1;
        self.next += 1;
        if self.next == self.bodies.len() {
            self.next = 0;
            // Every code of this connection was polled once since the last step: the next poll of each comes at
            // least one (virtual) interval later. Straight on the clock: `POST /sim/clock/advance` would also
            // sweep the whole store, which is not what is measured here.
            self.clock.advance(Duration::from_secs(1)).expect("the virtual clock advances");
        }
    }

    fn answered(&self) -> u64 {
        self.answered
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------------------------

async fn hello(_body: Bytes) -> &'static str {
    "Hello, World!"
}

/// An axum hello-world on a fresh loopback port, each connection served as roger-sim's `server::run::serve` serves
/// its plain-HTTP connections (peer address extension, `TowerToHyperService`, hyper-util's auto builder restricted
/// to HTTP/1 with the same buffer size, timer and header timeout), without roger-sim's own layers (fault injection,
/// `no-store` headers, body limit): those are part of what is measured.
async fn start_hello_world() -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let app = Router::new().route("/hello", post(hello));
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let app = app.clone();
            tokio::spawn(async move {
                let service = app.map_request(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
                let service = TowerToHyperService::new(service);
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .max_buf_size(64 * 1024)
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30));
                let _ = builder.http1_only().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// roger-sim's server in this process: plain HTTP on loopback, virtual clock, default tenant, in-memory store.
async fn start_roger(seed: u64) -> (RunningServer, SocketAddr) {
    let server = start(ServerConfig { plain_http: true, seed: Some(seed), ..ServerConfig::default() })
        .await
        .expect("roger-sim starts");
    let addr = server.info.api.trim_start_matches("http://").parse().expect("a loopback address");
    (server, addr)
}

fn registration_request(i: usize) -> DeviceAuthorizationRequest {
    DeviceAuthorizationRequest::registration(MFP, "MX-4050", &format!("SN-{i:06}"))
}

/// Registers `n` printers straight through the core (approved by the fixture's admin); their refresh tokens.
fn register_printers(shared: &Shared, n: usize) -> Vec<String> {
    let now = shared.now();
    let mut core = shared.core.lock().expect("core lock");
    let admin = app_principal(&mut core, now, "acme", "admin", "admin-pass");
    (0..n)
        .map(|i| {
            let tokens = register_printer(&mut core, now, &admin, &registration_request(i));
            tokens.refresh_token.expect("a registration has a refresh token").secret().to_owned()
        })
        .collect()
}

/// Creates `n` pending registration codes (interval 1 s, lifetime ten years); their poll bodies.
fn pending_codes(shared: &Shared, n: usize) -> Vec<Bytes> {
    let now = shared.now();
    let mut core = shared.core.lock().expect("core lock");
    let mut settings = *core.defaults();
    settings.interval_secs = 1;
    settings.registration_code_secs = 10 * 365 * 24 * 3600;
    core.set_settings(settings);
    drain(&mut core);
    (0..n)
        .map(|i| {
            let code = registration_code(&mut core, now, &registration_request(i));
            let body = roger_proto::wire::encode_form([
                ("grant_type", Some(GRANT_DEVICE_CODE)),
                ("device_code", Some(code.device_code.secret())),
                ("client_id", Some(MFP)),
            ]);
            Bytes::from(body)
        })
        .collect()
}

/// Deals `items` to `CONNECTIONS` hands, round robin.
fn deal<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut hands: Vec<Vec<T>> = (0..CONNECTIONS).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        hands[i % CONNECTIONS].push(item);
    }
    hands
}

/// The servers' runtime: multi-threaded, 2 workers.
fn server_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The clients' runtime: the bench's own thread (connections progress only while a batch runs).
fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn token_endpoint(c: &mut Criterion) {
    let (srv, cli) = (server_runtime(), client_runtime());

    // Baseline: the same request size as a refresh request.
    let hello_addr = srv.block_on(start_hello_world());
    let sample = format!("grant_type=refresh_token&refresh_token=rrt_{}&client_id={MFP}", "A".repeat(43));
    let hello_work = (0..CONNECTIONS).map(|_| Hello { body: Bytes::from(sample.clone()), answered: 0 }).collect();
    let mut hello_pool = cli.block_on(Pool::open(hello_addr, hello_work));

    let (refresh_server, refresh_addr) = srv.block_on(start_roger(1));
    let tokens = register_printers(&refresh_server.shared, PRINTERS);
    let lifetime = refresh_server.shared.read(|core, _| core.settings("acme").access_token_secs);
    let round_step = Duration::from_secs(lifetime) / CONNECTIONS as u32;
    let refresh_work = deal(tokens)
        .into_iter()
        .map(|tokens| Refresh { tokens, next: 0, clock: refresh_server.shared.clock.clone(), round_step, answered: 0 })
        .collect();
    let mut refresh_pool = cli.block_on(Pool::open(refresh_addr, refresh_work));

    let (poll_server, poll_addr) = srv.block_on(start_roger(2));
    let bodies = pending_codes(&poll_server.shared, CODES);
    let clock = poll_server.shared.clock.clone();
    let poll_work =
        deal(bodies).into_iter().map(|bodies| Poll { bodies, next: 0, clock: clock.clone(), answered: 0 }).collect();
    let mut poll_pool = cli.block_on(Pool::open(poll_addr, poll_work));

    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Elements(BATCH));
    // Iterations of milliseconds: flat sampling keeps the run near the requested measurement time.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(30);
    g.bench_function("axum_hello_world", |b| b.iter_custom(|iters| cli.block_on(hello_pool.run(iters * BATCH))));
    g.bench_function("refresh_grant", |b| b.iter_custom(|iters| cli.block_on(refresh_pool.run(iters * BATCH))));
    g.bench_function("device_code_pending", |b| b.iter_custom(|iters| cli.block_on(poll_pool.run(iters * BATCH))));
    g.finish();

    println!(
        "\nchecked answers: {} hello-world, {} refresh rotations ({PRINTERS} printers), {} authorization_pending \
         ({CODES} codes, no slow_down) over {CONNECTIONS} connections",
        hello_pool.answered(),
        refresh_pool.answered(),
        poll_pool.answered()
    );
    print_cpu_efficiency(
        hello_pool.cpu,
        &[("refresh_token (rotation)", refresh_pool.cpu), ("device_code (pending)", poll_pool.cpu)],
    );
    // Only in a measuring run (`--bench`): `cargo test --benches` runs each benchmark once, to see that it works.
    if std::env::args().any(|a| a == "--bench") {
        let rates = paired_rounds([
            &mut || cli.block_on(hello_pool.paired_turn()),
            &mut || cli.block_on(refresh_pool.paired_turn()),
            &mut || cli.block_on(poll_pool.paired_turn()),
        ]);
        print_paired(&rates);
    }
    drop((hello_pool, refresh_pool, poll_pool));
    srv.block_on(async {
        refresh_server.stop().await;
        poll_server.stop().await;
    });
}

/// Rates of one turn: requests per second of wall time, and per CPU-second of the server's threads.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    wall: f64,
    cpu: Option<f64>,
}

/// Rounds of the paired measurement ([`paired_rounds`]).
const PAIRED_ROUNDS: usize = 15;
/// Requests measured per workload and round (40 batches: about a fifth of a second).
const PAIRED_REQUESTS: u64 = 40 * BATCH;
/// Requests sent, unmeasured, before each measured run of a round: the first answers after switching from another
/// workload's connections are slower (idle connections, cold caches) and would charge that to whichever workload
/// comes next.
const PAIRED_WARM_UP: u64 = 4 * BATCH;

/// The paired measurement: [`PAIRED_ROUNDS`] rounds, each giving hello-world, the refresh grant and the pending poll
/// one turn back to back ([`Pool::paired_turn`]), in an order that rotates from round to round. Returns the rates of
/// each round, in the order of `runs` (hello-world first).
///
/// Criterion measures each benchmark in its own window, tens of seconds apart, and this shared 2-core machine's
/// speed drifts between windows: in eight runs on one morning (two builds) the criterion ratio of the refresh grant
/// ranged from 0.58 to 0.93, as hello-world and the refresh grant happened to be measured at different speeds.
/// Within a round the three rates are measured within a second of each other, so a round's ratio compares like
/// with like; the median over the rounds is the figure to judge, and the range shows how far single rounds stray.
fn paired_rounds(mut runs: [&mut dyn FnMut() -> Rates; 3]) -> Vec<[Rates; 3]> {
    (0..PAIRED_ROUNDS)
        .map(|round| {
            let mut rates = [Rates::default(); 3];
            for k in 0..runs.len() {
                let i = (round + k) % runs.len();
                rates[i] = runs[i]();
            }
            rates
        })
        .collect()
}

/// Prints the paired measurement: hello-world's median rate; for ours, the median rate and the median, lowest and
/// highest per-round ratio to hello-world, by wall time (with the verdict) and per server CPU-second.
fn print_paired(rounds: &[[Rates; 3]]) {
    /// Median, lowest and highest.
    fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
        v.sort_by(f64::total_cmp);
        Some((*v.get(v.len() / 2)?, *v.first()?, *v.last()?))
    }
    let target = roger_benches::SERVER_TARGET_RATIO;
    println!(
        "\npaired rounds ({} rounds of {PAIRED_REQUESTS} requests per workload, measured back to back in rotating \
         order; ratio = ours / hello-world within each round, median [lowest, highest]):",
        rounds.len()
    );
    if let Some((hello, _, _)) = spread(rounds.iter().map(|r| r[0].wall).collect()) {
        println!("  axum hello-world                 {hello:>9.0}/s");
    }
    for (i, name) in [(1, "refresh_token (rotation)"), (2, "device_code (pending)")] {
        let wall = spread(rounds.iter().map(|r| r[i].wall / r[0].wall).collect());
        let rate = spread(rounds.iter().map(|r| r[i].wall).collect());
        let (Some((ratio, lo, hi)), Some((rate, _, _))) = (wall, rate) else { continue };
        let verdict = if ratio >= target { "WITHIN TARGET" } else { "UNDER TARGET" };
        println!("  {name:<32} {rate:>9.0}/s   ratio {ratio:.2} [{lo:.2}, {hi:.2}] (target {target:.1}) {verdict}");
        let cpu: Option<Vec<f64>> = rounds.iter().map(|r| Some(r[i].cpu? / r[0].cpu?)).collect();
        if let Some((ratio, lo, hi)) = cpu.and_then(spread) {
            println!("  {:<32} {:>11}   ratio {ratio:.2} [{lo:.2}, {hi:.2}] per server CPU-second", "", "");
        }
    }
}

/// The same comparison by the server threads' CPU time instead of wall time: requests per CPU-second of the two
/// server workers, ours beside hello-world. Other processes on the machine slow both wall-clock rates unevenly
/// (the ratio printed by criterion's report moves with the machine's load); the CPU each request costs the server
/// moves far less, so this line is the one to compare across runs on a shared machine.
fn print_cpu_efficiency(hello: CpuTally, ours: &[(&str, CpuTally)]) {
    println!("\nserver CPU efficiency (requests per CPU-second of the server's two workers, all samples of this run):");
    let Some(base) = hello.per_cpu_second() else {
        println!("  not measured (no /proc/self/task/*/schedstat)");
        return;
    };
    println!("  axum hello-world                 {base:>9.0}/s");
    for (name, tally) in ours {
        match tally.per_cpu_second() {
            Some(rate) => println!(
                "  {name:<32} {rate:>9.0}/s   ratio {:.2} (target {:.1})",
                rate / base,
                roger_benches::SERVER_TARGET_RATIO
            ),
            None => println!("  {name:<32} not measured"),
        }
    }
}

criterion_group!(server, token_endpoint);

fn main() {
    // Estimates written by this run only (2 s of slack for file systems with coarse timestamps).
    let started = SystemTime::now() - Duration::from_secs(2);
    server();
    Criterion::default().configure_from_args().final_summary();
    roger_benches::report_throughput(
        "server benchmarks (token endpoint vs axum hello-world, 32 keep-alive connections, server on 2 tokio workers)",
        &COMPARISONS,
        started,
        roger_benches::SERVER_TARGET_RATIO,
    );
}
