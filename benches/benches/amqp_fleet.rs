//! A fleet on the broker (issue 5, PROTOCOL.md §8 and §11): how long after a user approves a printer's session QR
//! the printer shows the session, push-first beside poll-only, measured in the same run.
//!
//! * roger-sim's server runs in-process with `--amqp` (the broker of `ROGER_AMQP_URL`, default the machine's
//!   RabbitMQ) under a name prefix of its own, deleted at the end.
//! * `--printers N` (default 1000) simulated printers ([`roger_sim::mfp::Mfp`], each talking HTTP to the server)
//!   consume their device queues through one [`BrokerPool`]: one channel each over at most `--connections C`
//!   (default 10) broker connections, so the fleet stays within the file-descriptor limit (printed at the start).
//!   `--poll-printers M` (default 100) printers have no push and poll at the tenant's interval (`--interval`,
//!   default 5 s, PROTOCOL.md §3).
//! * Every printer registers (an admin approves each code), shows its session QR, and a user approves it; the time
//!   from the approval's answer to the panel's session is recorded. Approvals run `--concurrency K` (default 20)
//!   at a time, push-first and poll-only interleaved, so both groups see the same load.
//! * The report: median, p90, p99 and max per group, and the ratio of the medians.
//!
//! `ROGER_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo bench -p roger-benches --bench amqp_fleet -- --printers 200`

use std::sync::Arc;
use std::time::{Duration, Instant};

use roger_proto::api::CodeKind;
use roger_proto::discovery::TransportPolicy;
use roger_proto::secret::Password;
use roger_sim::amqp::{AmqpConfig, BrokerPool, ConsumerOptions, QueueLimits};
use roger_sim::mfp::{BrokerPush, Mfp, MfpConfig, MfpHandle, PanelState};
use roger_sim::phone::{ClientConfig, Phone};
use roger_sim::server::{start, ServerConfig};

/// What one run is asked for (see the module documentation).
#[derive(Debug, Clone)]
struct Args {
    printers: usize,
    poll_printers: usize,
    connections: usize,
    concurrency: usize,
    interval: u64,
    url: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        printers: 1000,
        poll_printers: 100,
        connections: 10,
        concurrency: 20,
        interval: 5,
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
    let code = admin.scan_payload(&shown.qr).map_err(|e| e.to_string())?;
    let review = admin.look_up(&code).await.map_err(|e| e.to_string())?;
    admin.approve(&review, Some(CodeKind::Registration)).await.map_err(|e| e.to_string())?;
    mfp.wait_for(PanelState::Idle, Duration::from_secs(120)).await.map_err(|v| format!("not idle: {:?}", v.state))?;
    Ok(())
}

/// A user approves the printer's session QR; returns the time from the approval's answer to the session.
async fn sign_in(user: &mut Phone, mfp: &MfpHandle) -> Result<Duration, String> {
    let (shown, view) =
        mfp.wait_until(Duration::from_secs(120), |v| v.state == PanelState::Idle && v.qr.is_some()).await;
    if !shown {
        return Err(format!("no session QR: {:?}", view.state));
    }
    let code = user.scan_payload(view.qr.as_deref().unwrap_or_default()).map_err(|e| e.to_string())?;
    let review = user.look_up(&code).await.map_err(|e| e.to_string())?;
    user.approve(&review, Some(CodeKind::Session)).await.map_err(|e| e.to_string())?;
    let approved = Instant::now();
    mfp.wait_for(PanelState::Session, Duration::from_secs(120))
        .await
        .map_err(|v| format!("no session: {:?}", v.state))?;
    Ok(approved.elapsed())
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
    let result = fleet(&args, &server.info.discovery, &server.info.api).await;
    match bus.delete_topology().await {
        Ok(n) => println!("cleaned up: {n} queues and the exchange deleted"),
        Err(e) => println!("clean-up failed (the queues expire on their own): {e}"),
    }
    server.stop().await;
    result
}

async fn fleet(args: &Args, discovery: &str, api: &str) -> Result<(), String> {
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
        config.broker = if push { BrokerPush::Pool(pool.clone()) } else { BrokerPush::Off };
        let mfp = Mfp::start(config).await.map_err(|e| format!("printer {i}: {e}"))?;
        printers.push((push, mfp));
    }
    println!("started {total} printers in {:.1} s; open files {}", started.elapsed().as_secs_f64(), open_fds());

    let printers = Arc::new(printers);
    let registered = Instant::now();
    // Registration codes are polled at the interval (no push before a device exists), so more at a time.
    let registering = Args { concurrency: args.concurrency.max(50), ..args.clone() };
    run_batches(&registering, &client, "admin", "admin-pass", printers.clone(), |phone, mfp| {
        Box::pin(async move { register(phone, mfp).await.map(|()| Duration::ZERO) })
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

    let timings =
        run_batches(args, &client, "alice", "alice-pass", printers.clone(), |phone, mfp| Box::pin(sign_in(phone, mfp)))
            .await?;
    let mut push: Vec<Duration> = Vec::new();
    let mut poll: Vec<Duration> = Vec::new();
    for ((is_push, _), t) in printers.iter().zip(timings) {
        if *is_push {
            push.push(t)
        } else {
            poll.push(t)
        }
    }
    push.sort();
    poll.sort();
    println!("approval → session ({} push-first, {} poll-only):", push.len(), poll.len());
    for (name, v) in [("push-first", &push), ("poll-only", &poll)] {
        println!(
            "  {name:<10}  median {:8.1} ms   p90 {:8.1} ms   p99 {:8.1} ms   max {:8.1} ms",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0)),
            ms(percentile(v, 99.0)),
            ms(v.last().copied().unwrap_or_default())
        );
    }
    if !push.is_empty() && !poll.is_empty() {
        println!(
            "  ratio poll-only / push-first (medians): {:.1}",
            percentile(&poll, 50.0).as_secs_f64() / percentile(&push, 50.0).as_secs_f64().max(1e-6)
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

type Job<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Duration, String>> + Send + 'a>>;

/// Runs `job` for every printer, `--concurrency` at a time, each worker with its own signed-in phone; returns the
/// durations in printer order.
async fn run_batches(
    args: &Args,
    client: &ClientConfig,
    user: &str,
    password: &str,
    printers: Arc<Vec<(bool, MfpHandle)>>,
    job: for<'a> fn(&'a mut Phone, &'a MfpHandle) -> Job<'a>,
) -> Result<Vec<Duration>, String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(printers.len()).max(1) {
        let mut phone = Phone::connect(client).await.map_err(|e| e.to_string())?;
        phone.login("acme", user, Password::new(password)).await.map_err(|e| e.to_string())?;
        let (printers, next) = (printers.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((_, mfp)) = printers.get(i) else { break };
                out.push((i, job(&mut phone, mfp).await.map_err(|e| format!("printer {i}: {e}"))?));
            }
            Ok::<_, String>(out)
        }));
    }
    let mut all = vec![Duration::ZERO; printers.len()];
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
