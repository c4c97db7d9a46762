//! A fleet on the broker (issue 5, PROTOCOL.md §8 and §11): how long after a user approves a printer's session QR
//! the printer shows the session, push-first beside poll-only, measured in the same run.
//!
//! * roger-sim's server runs in-process with `--amqp` (the broker of `ROGER_AMQP_URL`, default the machine's
//!   RabbitMQ) under a name prefix of its own, deleted at the end.
//! * `--printers N` (default 1000) simulated printers ([`roger_sim::mfp::Mfp`], each talking HTTP to the server)
//!   consume their device queues through one [`BrokerPool`]: one channel each over at most `--connections C`
//!   (default 10) broker connections, so the fleet stays within the file-descriptor limit (printed at the start).
//!   `--poll-printers M` (default 100) printers have no push and poll at the tenant's interval (`--interval`,
//!   default 5 s, PROTOCOL.md §3). The two groups register under their own client ids, so the server's request log
//!   tells their polls apart.
//! * Every printer registers (an admin approves each code), shows its session QR, and a user approves it; the time
//!   from the approval's answer to the panel's session is recorded. Approvals run `--concurrency K` (default 20)
//!   at a time, push-first and poll-only mixed, in a random order and each after a random look at the QR of less
//!   than one interval (`--seed S`), so both groups see the same load and an approval falls at a random moment of
//!   its printer's polling cycle.
//! * The report: median, p90, p99 and max per group, the ratio of the medians, and where the time goes: the
//!   approval's round trip, approval → doorbell at the printer, doorbell → session, and from the server's request
//!   log how many granting polls the interval held back (R-POLL-1: a doorbell that comes less than an interval
//!   after a poll of its code waits for the interval, so push-first's tail is bounded by the interval, not zero).
//!
//! `ROGER_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo bench -p roger-benches --bench amqp_fleet`
//! (`-- --printers 200 --poll-printers 20` for a quick run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use roger_proto::api::CodeKind;
use roger_proto::discovery::TransportPolicy;
use roger_proto::secret::Password;
use roger_sim::amqp::{AmqpConfig, BrokerPool, ConsumerOptions, QueueLimits};
use roger_sim::mfp::{BrokerPush, Mfp, MfpConfig, MfpHandle, PanelState};
use roger_sim::phone::{ClientConfig, Phone};
use roger_sim::server::{start, RunningServer, ServerConfig};

/// What one run is asked for (see the module documentation).
#[derive(Debug, Clone)]
struct Args {
    printers: usize,
    poll_printers: usize,
    connections: usize,
    concurrency: usize,
    interval: u64,
    seed: u64,
    url: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        printers: 1000,
        poll_printers: 100,
        connections: 10,
        concurrency: 20,
        interval: 5,
        seed: 1,
        url: std::env::var("ROGER_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--printers" => a.printers = num("--printers")?,
            "--poll-printers" => a.poll_printers = num("--poll-printers")?,
            "--connections" => a.connections = num("--connections")?.max(1),
            "--concurrency" => a.concurrency = num("--concurrency")?.max(1),
            "--interval" => a.interval = num("--interval")? as u64,
            "--seed" => a.seed = num("--seed")? as u64,
            // cargo bench passes `--bench`; criterion-style flags are not ours.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn fd_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .map(|x| x.split_whitespace().nth(3).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Registers one printer: the admin approves its registration code (PROTOCOL.md §5).
async fn register(admin: &mut Phone, mfp: &MfpHandle) -> Result<(), String> {
    let shown = mfp.register().await.map_err(|e| format!("registration code: {e}"))?;
    let qr = shown.qr.as_deref().ok_or("the simulated server always sends a QR payload")?;
    let code = admin.scan_payload(qr).map_err(|e| e.to_string())?;
    let review = admin.look_up(&code).await.map_err(|e| e.to_string())?;
    admin.approve(&review, Some(CodeKind::Registration)).await.map_err(|e| e.to_string())?;
    mfp.wait_for(PanelState::Idle, Duration::from_secs(120)).await.map_err(|v| format!("not idle: {:?}", v.state))?;
    Ok(())
}

/// The narration line of the simulated MFP when a `code.approved` doorbell arrives (roger_sim::mfp push input).
const DOORBELL_LINE: &str = "code.approved doorbell";

/// What one sign-in measured (all from the client side of this process).
#[derive(Debug, Clone, Copy, Default)]
struct SignIn {
    /// `POST /api/v1/codes/approve`: request sent → answer received.
    approve_rtt: Duration,
    /// Approval's answer → the MFP holds the session (the headline figure).
    to_session: Duration,
    /// Approval's answer → the doorbell reached the MFP (push-first only; zero if it came before the answer).
    to_doorbell: Option<Duration>,
}

/// A user approves the printer's session QR; measures the approval, the doorbell and the session.
async fn sign_in(user: &mut Phone, mfp: &MfpHandle) -> Result<SignIn, String> {
    let (shown, view) =
        mfp.wait_until(Duration::from_secs(120), |v| v.state == PanelState::Idle && v.qr.is_some()).await;
    if !shown {
        return Err(format!("no session QR: {:?}", view.state));
    }
    let code = user.scan_payload(view.qr.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
    let review = user.look_up(&code).await.map_err(|e| e.to_string())?;
    // Time-stamps the doorbell as the printer narrates it (a task of its own, so that a doorbell arriving while
    // the approval's answer is still on its way is stamped when it arrives).
    let mut events = mfp.subscribe_events();
    let mut doorbell = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(line) if line.contains(DOORBELL_LINE) => return Some(Instant::now()),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let sent = Instant::now();
    let approved = user.approve(&review, Some(CodeKind::Session)).await.map_err(|e| e.to_string());
    let answered = Instant::now();
    if let Err(e) = approved {
        doorbell.abort();
        return Err(e);
    }
    let reached = mfp.wait_for(PanelState::Session, Duration::from_secs(120)).await;
    let to_session = answered.elapsed();
    // A poll-only printer gets no doorbell; a push-first one has narrated it before the session at the latest.
    let rang = match tokio::time::timeout(Duration::from_millis(50), &mut doorbell).await {
        Ok(Ok(at)) => at,
        _ => None,
    };
    doorbell.abort();
    reached.map_err(|v| format!("no session: {:?}", v.state))?;
    Ok(SignIn {
        approve_rtt: answered - sent,
        to_session,
        to_doorbell: rang.map(|at| at.saturating_duration_since(answered)),
    })
}

async fn run(args: Args) -> Result<(), String> {
    let prefix = format!("bench-{}-{}.", std::process::id(), Instant::now().elapsed().as_nanos());
    println!(
        "amqp_fleet: {} push-first + {} poll-only printers, {} broker connections at most, interval {} s, \
         {} approvals at a time; open-file limit {}",
        args.printers,
        args.poll_printers,
        args.connections,
        args.interval,
        args.concurrency,
        fd_limit()
    );
    let amqp = AmqpConfig {
        prefix,
        auto_delete_exchange: true,
        limits: QueueLimits { expires: Duration::from_secs(600), ..QueueLimits::default() },
        ..AmqpConfig::new(args.url.clone())
    };
    let server = start(ServerConfig { plain_http: true, amqp: Some(amqp), ..ServerConfig::default() })
        .await
        .map_err(|e| format!("server: {e}"))?;
    let bus = server.amqp.clone().ok_or("no broker bus")?;
    let result = fleet(&args, &server).await;
    match bus.delete_topology().await {
        Ok(n) => println!("cleaned up: {n} queues and the exchange deleted"),
        Err(e) => println!("clean-up failed (the queues expire on their own): {e}"),
    }
    server.stop().await;
    result
}

/// Push-first and poll-only printers register under their own client ids, so the server's request log tells their
/// polls apart (any `emb-<vendor>` is accepted, PROTOCOL.md §3).
const PUSH_CLIENT: &str = "emb-benchpush";
const POLL_CLIENT: &str = "emb-benchpoll";
/// How much later than one interval after the previous poll a granting poll may arrive and still count as held back by
/// the interval (R-POLL-1) rather than sent at once on its doorbell.
const HELD_SLACK: Duration = Duration::from_millis(250);
/// RFC 8628 §3.4 `grant_type` of a code poll.
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn fleet(args: &Args, server: &RunningServer) -> Result<(), String> {
    let (discovery, api) = (server.info.discovery.as_str(), server.info.api.as_str());
    let client = ClientConfig::loopback(discovery);
    let mut control = Phone::connect(&client).await.map_err(|e| e.to_string())?;
    control.login("acme", "admin", Password::new("admin-pass")).await.map_err(|e| e.to_string())?;
    // The tenant's polling interval (PROTOCOL.md §3), through the control API.
    set_interval(api, args.interval).await?;

    let pool = BrokerPool::new(
        ConsumerOptions::new(TransportPolicy::AllowLoopbackPlain, None, "bench-fleet"),
        args.connections,
    );
    let root = std::env::temp_dir().join(format!("roger-bench-fleet-{}", std::process::id()));
    let total = args.printers + args.poll_printers;
    let started = Instant::now();
    let mut printers: Vec<(bool, MfpHandle)> = Vec::with_capacity(total);
    let stride = total.checked_div(args.poll_printers).unwrap_or(usize::MAX).max(1);
    let mut polling = 0;
    for i in 0..total {
        // Interleaved: every stride-th printer polls only, until there are `--poll-printers` of them.
        let push = !(i % stride == 0 && polling < args.poll_printers);
        polling += usize::from(!push);
        let mut config = MfpConfig::new(discovery.to_owned(), root.join(format!("p{i}")));
        config.allow_loopback_http = true;
        config.serial = format!("BENCH-{i:05}");
        config.client_id = if push { PUSH_CLIENT } else { POLL_CLIENT }.to_owned();
        config.broker = if push { BrokerPush::Pool(pool.clone()) } else { BrokerPush::Off };
        let mfp = Mfp::start(config).await.map_err(|e| format!("printer {i}: {e}"))?;
        printers.push((push, mfp));
    }
    println!("started {total} printers in {:.1} s; open files {}", started.elapsed().as_secs_f64(), open_fds());

    let printers = Arc::new(printers);
    let registered = Instant::now();
    // Registration codes are polled at the interval (no push before a device exists), so more at a time.
    let registering = Args { concurrency: args.concurrency.max(50), ..args.clone() };
    let in_order: Vec<(usize, Duration)> = (0..total).map(|i| (i, Duration::ZERO)).collect();
    run_batches(&registering, &client, "admin", "admin-pass", printers.clone(), &in_order, |phone, mfp| {
        Box::pin(register(phone, mfp))
    })
    .await?;
    println!(
        "registered {total} printers in {:.1} s; broker connections open {} (opened {}), open files {}",
        registered.elapsed().as_secs_f64(),
        pool.live_connections().await,
        pool.connections_opened(),
        open_fds()
    );
    // Let every push-first printer report push healthy before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let healthy = printers
        .iter()
        .filter(|(push, mfp)| *push && mfp.events().iter().any(|l| l.contains("push: connected to the device queue")))
        .count();
    println!("push-first printers consuming their queue: {healthy} of {}", args.printers);

    let log_from = server.shared.log_since(0).last().map_or(0, |e| e.seq + 1);
    let measured = Instant::now();
    // An approval must fall at a random moment of its printer's polling cycle, or the figures measure the harness:
    // * users approve in a seeded random order: in registration order, with both phases about as long as a QR lives
    //   (120 s), every approval fell just before a QR rotation and a poll of the old code;
    // * each user looks at the QR for a random time below one interval before approving (not measured): the
    //   printers registered in waves of one interval, so their polls share a phase, and a worker that approves as
    //   soon as its previous printer signed in (right after a poll) would approve just after the next poll too.
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut order: Vec<(usize, Duration)> =
        (0..total).map(|i| (i, Duration::from_millis(rng.gen_range(0..args.interval.max(1) * 1000)))).collect();
    order.shuffle(&mut rng);
    let timings = run_batches(args, &client, "alice", "alice-pass", printers.clone(), &order, |phone, mfp| {
        Box::pin(sign_in(phone, mfp))
    })
    .await?;
    let measured = measured.elapsed();
    let log = server.shared.log_since(log_from);
    let (mut push, mut poll): (Vec<SignIn>, Vec<SignIn>) = (Vec::new(), Vec::new());
    for ((is_push, _), t) in printers.iter().zip(timings) {
        if *is_push {
            push.push(t)
        } else {
            poll.push(t)
        }
    }
    let interval = Duration::from_secs(args.interval);
    let relaxed = MfpConfig::new(String::new(), root.clone()).push_relaxed_interval;
    println!(
        "approval → session, {} push-first and {} poll-only printers signed in within {:.1} s (poll interval {} s; \
         with push healthy a code is polled every {} s, PROTOCOL.md §8):",
        push.len(),
        poll.len(),
        measured.as_secs_f64(),
        args.interval,
        relaxed.as_secs()
    );
    for (name, v) in [("push-first", &push), ("poll-only", &poll)] {
        print_row(name, "answer → session", v.iter().map(|s| s.to_session).collect());
    }
    if let (Some(a), Some(b)) = (median(push.iter().map(|s| s.to_session)), median(poll.iter().map(|s| s.to_session))) {
        println!("  ratio poll-only / push-first (medians): {:.1}", b.as_secs_f64() / a.as_secs_f64().max(1e-6));
    }
    println!("where the time goes:");
    for (name, v) in [("push-first", &push), ("poll-only", &poll)] {
        print_row(name, "approve round trip", v.iter().map(|s| s.approve_rtt).collect());
    }
    let rang: Vec<&SignIn> = push.iter().filter(|s| s.to_doorbell.is_some()).collect();
    print_row("push-first", "answer → doorbell", rang.iter().filter_map(|s| s.to_doorbell).collect());
    let after_doorbell: Vec<Duration> =
        rang.iter().filter_map(|s| s.to_doorbell.map(|d| s.to_session.saturating_sub(d))).collect();
    print_row("push-first", "doorbell → session", after_doorbell.clone());
    if rang.len() < push.len() {
        println!("  push-first  {} session(s) came before their doorbell", push.len() - rang.len());
    }
    // The server's request log: each group's code polls, and for the granting poll of each session the gap since
    // the previous poll of that code. A granting poll one interval after the previous one was held back by R-POLL-1
    // (a doorbell that came less than an interval after a poll waits for the interval, PROTOCOL.md §8, §12).
    let held = |gaps: &[Duration]| gaps.iter().filter(|g| **g >= interval && **g < interval + HELD_SLACK).count();
    for (name, client_id, sessions) in [("push-first", PUSH_CLIENT, push.len()), ("poll-only", POLL_CLIENT, poll.len())]
    {
        let polls: Vec<_> = log
            .iter()
            .filter(|e| e.client_id.as_deref() == Some(client_id) && e.grant_type.as_deref() == Some(DEVICE_CODE_GRANT))
            .collect();
        let gaps: Vec<Duration> = polls
            .iter()
            .filter(|e| e.status == 200)
            .filter_map(|e| e.gap_ms.and_then(|g| u64::try_from(g).ok()).map(Duration::from_millis))
            .collect();
        let slow_down = polls.iter().filter(|e| e.outcome.as_deref() == Some("slow_down")).count();
        println!(
            "  {name:<10}  {} code polls ({slow_down} slow_down); {} of {sessions} granting polls came one interval \
             after the previous poll of their code (held back by R-POLL-1)",
            polls.len(),
            held(&gaps)
        );
    }
    let waited = after_doorbell.iter().filter(|d| **d >= HELD_SLACK).count();
    let beyond = after_doorbell.iter().filter(|d| **d >= interval + HELD_SLACK).count();
    println!(
        "  push-first  {waited} of {} doorbells were followed by a wait of {} ms or more, the longest {:.0} ms; \
         {beyond} waited longer than one interval",
        rang.len(),
        HELD_SLACK.as_millis(),
        ms(after_doorbell.iter().max().copied().unwrap_or_default())
    );
    if beyond > 0 {
        println!(
            "  push-first  a wait longer than one interval is more than R-POLL-1 asks: the poll before the doorbell \
             failed and the wait doubled (PROTOCOL.md §12), or the printer was slow to act"
        );
    }
    println!(
        "broker connections open {} for {} push-first printers (opened {} in all); open files {}",
        pool.live_connections().await,
        push.len(),
        pool.connections_opened(),
        open_fds()
    );
    for (_, mfp) in Arc::try_unwrap(printers).map_err(|_| "printers still shared")? {
        mfp.stop().await;
    }
    pool.close().await;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn median(v: impl Iterator<Item = Duration>) -> Option<Duration> {
    let mut v: Vec<Duration> = v.collect();
    v.sort();
    (!v.is_empty()).then(|| percentile(&v, 50.0))
}

fn print_row(group: &str, what: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "  {group:<10}  {what:<20} n {:>5}  median {:8.1} ms  p90 {:8.1} ms  p99 {:8.1} ms  max {:8.1} ms",
        v.len(),
        ms(percentile(&v, 50.0)),
        ms(percentile(&v, 90.0)),
        ms(percentile(&v, 99.0)),
        ms(v.last().copied().unwrap_or_default())
    );
}

type Job<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

/// Runs `job` for every printer, in `order` and each after its think time, `--concurrency` at a time, each worker
/// with its own signed-in phone; returns the results in printer order.
async fn run_batches<T: Send + Default + Clone + 'static>(
    args: &Args,
    client: &ClientConfig,
    user: &str,
    password: &str,
    printers: Arc<Vec<(bool, MfpHandle)>>,
    order: &[(usize, Duration)],
    job: for<'a> fn(&'a mut Phone, &'a MfpHandle) -> Job<'a, T>,
) -> Result<Vec<T>, String> {
    let order: Arc<Vec<(usize, Duration)>> = Arc::new(order.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(printers.len()).max(1) {
        let mut phone = Phone::connect(client).await.map_err(|e| e.to_string())?;
        phone.login("acme", user, Password::new(password)).await.map_err(|e| e.to_string())?;
        let (printers, next, order) = (printers.clone(), next.clone(), order.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(i, think)) = order.get(n) else { break };
                let Some((_, mfp)) = printers.get(i) else { break };
                tokio::time::sleep(think).await;
                out.push((i, job(&mut phone, mfp).await.map_err(|e| format!("printer {i}: {e}"))?));
            }
            Ok::<_, String>(out)
        }));
    }
    let mut all = vec![T::default(); printers.len()];
    for w in workers {
        for (i, d) in w.await.map_err(|e| e.to_string())?? {
            all[i] = d;
        }
    }
    Ok(all)
}

/// `PUT /sim/settings {"interval_secs"}` on the server's control API (loopback).
async fn set_interval(api: &str, interval: u64) -> Result<(), String> {
    use roger_proto::driver::reqwest_transport::ReqwestTransport;
    use roger_proto::driver::Driver;
    let driver = Driver::new(ReqwestTransport::new(None).map_err(|e| e.to_string())?);
    let body = serde_json::to_vec(&serde_json::json!({ "interval_secs": interval })).map_err(|e| e.to_string())?;
    let req = http::Request::put(format!("{api}/sim/settings"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| e.to_string())?;
    let answer = driver.send(req).await.map_err(|e| e.to_string())?;
    if !answer.status().is_success() {
        return Err(format!("settings: HTTP {}", answer.status()));
    }
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("amqp_fleet: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("amqp_fleet: runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("amqp_fleet: {e}");
        std::process::exit(1);
    }
}
