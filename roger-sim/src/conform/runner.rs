//! Running cases: each in its own world (server, proxy, shim, phone; [`super::env`]), several at a time up to a
//! bound, each under a time limit, each with a seed derived from the run's seed and its ID (so the same seed
//! replays the same fixture secrets, server randomness and fault draws).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::case::{Case, Evidence, EvidenceSource, Finding, Verdict};
use super::env::{non_loopback_ip, ClientEnv, ClientSetup, KitContext, Transport};
use super::server_env::{ServerContext, ServerEnv};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cases at a time.
    pub jobs: usize,
    /// Time limit of one case.
    pub case_timeout: Duration,
    /// The run's seed.
    pub seed: u64,
    /// Keep each case's directory (state_dir, fixture) after the run.
    pub keep_work_dir: bool,
}

/// Hears of each case's result as it comes: `(result, finished so far, total)`.
pub type Progress = Arc<dyn Fn(&CaseResult, usize, usize) + Send + Sync>;

/// What one case came to.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// The verdict.
    pub verdict: Verdict,
    /// Why (empty for PASS).
    pub reason: String,
    /// How long it took.
    pub duration: Duration,
    /// The case's seed.
    pub seed: u64,
    /// The evidence, redacted.
    pub evidence: Vec<Evidence>,
    /// The last lines of the shim's stderr, redacted.
    pub stderr_tail: String,
}

/// The seed of one case: the run's seed mixed with a hash of the case ID (FNV-1a), so every case draws its own
/// stream and the same run seed replays each.
pub fn case_seed(run_seed: u64, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    run_seed ^ h
}

/// Plays one client-mode case from start to verdict.
pub async fn run_client_case(kit: Arc<KitContext>, case: Case, opts: &RunOptions) -> CaseResult {
    let started = Instant::now();
    let seed = case_seed(opts.seed, case.id);
    let done = |finding: Finding, evidence: Vec<Evidence>, stderr_tail: String| CaseResult {
        case,
        verdict: finding.verdict(case.level),
        reason: finding.reason().to_owned(),
        duration: started.elapsed(),
        seed,
        evidence,
        stderr_tail,
    };
    let Some(client) = case.client else {
        return done(Finding::Skip("the case has no client mode".into()), Vec::new(), String::new());
    };
    let mut setup = ClientSetup::default();
    (client.setup)(&mut setup);
    if setup.push.needs_broker() && kit.amqp.is_none() {
        return done(Finding::Skip(super::broker::NEEDS_BROKER.into()), Vec::new(), String::new());
    }
    if setup.transport == Transport::PlainNonLoopback && non_loopback_ip().is_none() {
        let why = "this machine has no non-loopback address to offer plain HTTP on (R-DISC-2)";
        return done(Finding::Skip(why.into()), Vec::new(), String::new());
    }
    let mut env = match ClientEnv::create(kit, case.id, seed, setup).await {
        Ok(env) => env,
        Err(e) => {
            let ev = Evidence { source: EvidenceSource::Kit, at_ms: 0, text: e.to_string() };
            return done(e.finding(), vec![ev], String::new());
        }
    };
    let finding = match tokio::time::timeout(opts.case_timeout, (client.run)(&mut env)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => e.finding(),
        Err(_) => Finding::Broken(format!("the case did not finish within {} s", opts.case_timeout.as_secs())),
    };
    if !matches!(finding, Finding::Holds) {
        // The whole conversation, so a reader sees what led there.
        let all = env.exchanges();
        env.note_exchanges(all.iter(), 60);
    }
    let left = env.finish(opts.keep_work_dir).await;
    let mut evidence = left.evidence;
    evidence.sort_by_key(|e| e.at_ms);
    done(finding, evidence, left.stderr_tail)
}

/// Runs `cases` in client mode, at most `opts.jobs` at a time; `progress` hears of each result as it comes.
/// Results come back in catalogue order.
pub async fn run_client(
    kit: Arc<KitContext>,
    cases: Vec<Case>,
    opts: RunOptions,
    progress: Progress,
) -> Vec<CaseResult> {
    let total = cases.len();
    let permits = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let opts = Arc::new(opts);
    let mut tasks = Vec::new();
    for case in cases {
        let (kit, permits, opts, progress, finished) =
            (kit.clone(), permits.clone(), opts.clone(), progress.clone(), finished.clone());
        let handle = tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            let result = run_client_case(kit, case, &opts).await;
            let n = finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            progress(&result, n, total);
            result
        });
        tasks.push((case, handle));
    }
    let mut results = Vec::new();
    for (case, t) in tasks {
        match t.await {
            Ok(r) => results.push(r),
            // A panic is the kit's bug; the case does not pass for it.
            Err(e) => results.push(CaseResult {
                case,
                verdict: Verdict::Fail,
                reason: format!("kit error: the case's task failed: {e}"),
                duration: Duration::ZERO,
                seed: case_seed(opts.seed, case.id),
                evidence: Vec::new(),
                stderr_tail: String::new(),
            }),
        }
    }
    results
}

/// Plays one server-mode case from start to verdict.
pub async fn run_server_case(ctx: Arc<ServerContext>, case: Case, opts: &RunOptions) -> CaseResult {
    let started = Instant::now();
    let seed = case_seed(opts.seed, case.id);
    let done = |finding: Finding, evidence: Vec<Evidence>| CaseResult {
        case,
        verdict: finding.verdict(case.level),
        reason: finding.reason().to_owned(),
        duration: started.elapsed(),
        seed,
        evidence,
        stderr_tail: String::new(),
    };
    let Some(server) = case.server else {
        return done(Finding::Skip("the case has no server mode".into()), Vec::new());
    };
    if !case.runs_in_profile(ctx.profile) {
        let why = "not a Roger server: the oauth profile judges only what the RFCs ask of any OAuth server \
                   (--profile roger judges a Roger server)";
        return done(Finding::Skip(why.into()), Vec::new());
    }
    let mut env = match ServerEnv::create(ctx, case.id, seed).await {
        Ok(env) => env,
        Err(e) => {
            let ev = Evidence { source: EvidenceSource::Kit, at_ms: 0, text: e.to_string() };
            return done(e.finding(), vec![ev]);
        }
    };
    let finding = match tokio::time::timeout(opts.case_timeout, (server.run)(&mut env)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => e.finding(),
        Err(_) => Finding::Broken(format!("the case did not finish within {} s", opts.case_timeout.as_secs())),
    };
    done(finding, env.into_evidence())
}

/// Runs `cases` in server mode: the shared ones at most `opts.jobs` at a time, then the exclusive ones (they move
/// the server's clock or lock an account) one after another. Results come back in catalogue order.
pub async fn run_server(
    ctx: Arc<ServerContext>,
    cases: Vec<Case>,
    opts: RunOptions,
    progress: Progress,
) -> Vec<CaseResult> {
    let total = cases.len();
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let opts = Arc::new(opts);
    let (shared, exclusive): (Vec<Case>, Vec<Case>) =
        cases.iter().copied().partition(|c| !c.server.is_some_and(|s| s.exclusive));
    let permits = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let mut tasks = Vec::new();
    for case in shared {
        let (ctx, permits, opts, progress, finished) =
            (ctx.clone(), permits.clone(), opts.clone(), progress.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            let r = run_server_case(ctx, case, &opts).await;
            let n = finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            progress(&r, n, total);
            r
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            results.push(r);
        }
    }
    for case in exclusive {
        let r = run_server_case(ctx.clone(), case, &opts).await;
        let n = finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        progress(&r, n, total);
        results.push(r);
    }
    // A case whose task failed is the kit's bug; it does not pass for it.
    for case in &cases {
        if !results.iter().any(|r| r.case.id == case.id) {
            results.push(CaseResult {
                case: *case,
                verdict: Verdict::Fail,
                reason: "kit error: the case's task failed".into(),
                duration: Duration::ZERO,
                seed: case_seed(opts.seed, case.id),
                evidence: Vec::new(),
                stderr_tail: String::new(),
            });
        }
    }
    let order: Vec<&str> = cases.iter().map(|c| c.id).collect();
    results.sort_by_key(|r| order.iter().position(|id| *id == r.case.id).unwrap_or(usize::MAX));
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_per_case_and_replayable() {
        assert_eq!(case_seed(7, "a/b"), case_seed(7, "a/b"));
        assert_ne!(case_seed(7, "a/b"), case_seed(7, "a/c"));
        assert_ne!(case_seed(7, "a/b"), case_seed(8, "a/b"));
    }
}
