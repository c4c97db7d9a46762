//! What the server core keeps per registered printer and per pending device code, in live heap bytes (bytes
//! allocated − bytes freed), over 100,000 of each, created through the core's public API exactly as roger-sim's
//! handlers drive it (one call per request, the journal drained after each, [`core_setup`]). Bytes, not time, so a
//! test and not a benchmark: the numbers are deterministic (seeded minter, fixed `now`).
//!
//! Targets: ≤ 1 KiB per registered printer, ≤ 512 B per pending code. Each test prints its numbers and a breakdown
//! (which tables, which derived indexes, how much is B-tree and hash-table slack and how much is string heap).
//!
//! The counting global allocator counts only the measuring thread while measuring is switched on (a thread-local
//! flag), so the test harness's other threads cannot disturb it. "Requested bytes" are the sizes the program asked
//! for; the "glibc estimate" rounds each block as glibc's malloc does (8-byte header, 16-byte granules, 32-byte
//! minimum), closer to what the process's resident size pays.

use std::collections::HashMap;
use std::mem::size_of;

use rand::SeedableRng;
use roger_benches::alloc_count::{set_counting, CountingAllocator, Counts};
use roger_benches::core_setup::{app_principal, drain, register_printer, registration_code, MFP};
use roger_proto::device_authorization::DeviceAuthorizationRequest;
use roger_proto::server::mint::{Minter, SecretHash, SecretHashMap};
use roger_proto::server::model::{
    AccessRecord, CodeState, Device, DeviceCodeRecord, Name, Redemption, RefreshFamily, Subject, Tenant, User,
    WireUserCode,
};
use roger_proto::server::settings::{Argon2Cost, TenantSettings};
use roger_proto::server::{Principal, ServerCore};
use roger_proto::token::TokenRequest;
use time::{Duration, OffsetDateTime};

/// Codes and printers created per test.
const N: usize = 100_000;
/// Target: live bytes per registered printer.
const PRINTER_TARGET: f64 = 1024.0;
/// Target: live bytes per pending device code.
const CODE_TARGET: f64 = 512.0;

// ---------------------------------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------------------------------

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Net live heap of this thread since counting was switched on.
type Live = Counts;

/// Switches counting on for this thread (for the rest of the test).
fn start_counting() {
    set_counting(true);
}

/// The live bytes a value built by `f` holds (built, measured, dropped).
fn heap_of<T>(f: impl FnOnce() -> T) -> Live {
    let before = Live::now();
    let v = f();
    let held = Live::now() - before;
    drop(v);
    held
}

// ---------------------------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------------------------

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("a valid time")
}

/// A core with tenant `acme` and its admin (roger-sim's default fixture, reduced to what a registration needs),
/// and the admin's app session.
fn core_with_admin() -> (ServerCore, Principal) {
    let minter = Minter::new(Box::new(rand::rngs::StdRng::seed_from_u64(42)));
    let mut core = ServerCore::new("https://api.roger.example", TenantSettings::default(), minter);
    core.put_tenant(Tenant {
        id: "acme".into(),
        name: "ACME Corporation".into(),
        settings: TenantSettings::default(),
        print_features: Default::default(),
        scan_profiles: Vec::new(),
    });
    let password_hash = Some(core.hash_secret("admin-pass", Argon2Cost::TEST));
    core.put_user(User {
        id: "usr_acme_admin".into(),
        tenant: "acme".into(),
        username: "admin".into(),
        display_name: Some("Admin".into()),
        email: Some("admin@acme.example".into()),
        pin_hash: None,
        password_hash,
        admin: true,
        failures: 0,
        locked_until: None,
    });
    drain(&mut core);
    let admin = app_principal(&mut core, t0(), "acme", "admin", "admin-pass");
    (core, admin)
}

/// A registration as an MFP sends it: its model and its own serial number.
fn registration_request(i: usize) -> DeviceAuthorizationRequest {
    DeviceAuthorizationRequest::registration(MFP, "MX-4050", &format!("SN-{i:06}"))
}

/// Heap bytes of a [`Name`]: none while it fits inline (24 bytes), as every minted id does.
fn name(n: &Name) -> usize {
    if n.is_heap_allocated() {
        n.capacity()
    } else {
        0
    }
}

fn opt_name(n: &Option<Name>) -> usize {
    n.as_ref().map_or(0, name)
}

fn subject_heap(s: &Subject) -> usize {
    match s {
        Subject::Device { device_id } => name(device_id),
        Subject::User { user_id, device_id } => name(user_id) + opt_name(device_id),
    }
}

fn opt(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::capacity)
}

/// Heap bytes of the strings of a device-code record (its box is counted by the caller).
fn code_strings(c: &DeviceCodeRecord) -> usize {
    let state = match &c.state {
        CodeState::Redeemed(r) => size_of::<Redemption>() + r.user.capacity() + opt(&r.device_id) + opt(&r.family),
        CodeState::Approved { user } => user.capacity(),
        CodeState::Pending | CodeState::Denied => 0,
    };
    name(&c.client_id)
        + name(&c.scope)
        + opt_name(&c.device_id)
        + opt_name(&c.tenant)
        + opt_name(&c.model)
        + opt_name(&c.serial)
        + name(&c.request_id)
        + state
}

fn print_row(what: &str, live: Live, n: usize) {
    let (b, c, k) = live.per(n);
    println!("  {what:<58} {b:>8.1} B  (glibc est. {c:>7.1} B, {k:>5.2} blocks)");
}

// ---------------------------------------------------------------------------------------------------------------
// Pending codes
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn pending_code_footprint() {
    let (mut core, _admin) = core_with_admin();
    let now = t0();
    start_counting();

    // What one request costs while its journal is still in the core (a front end that forgot `take_changes`).
    let before = Live::now();
    let probe = 1_000;
    for i in 0..probe {
        drop(core.device_authorization(now, &registration_request(N + i), None).expect("device authorization"));
    }
    let undrained = Live::now() - before;
    let journal = core.take_changes();
    let mid = Live::now();
    drop(journal);
    let journal = mid - Live::now();

    let before = Live::now();
    for i in 0..N {
        drop(registration_code(&mut core, now, &registration_request(i)));
    }
    let total = Live::now() - before;
    let (per_code, _, _) = total.per(N);

    // Breakdown: the table (cloned: same B-tree shape, strings cloned at their length) and the derived user-code
    // index (rebuilt the way the core builds it, one insert at a time).
    let codes = core.state().codes.len();
    let table = heap_of(|| core.state().codes.clone());
    let index = heap_of(|| {
        let mut m = HashMap::new();
        for c in core.state().codes.values() {
            m.insert(c.user_code, c.hash);
        }
        m
    });
    let strings: usize = core.state().codes.values().map(|c| code_strings(c)).sum::<usize>() / codes;
    let inline = size_of::<SecretHash>() + size_of::<DeviceCodeRecord>();
    let per = |l: Live| l.bytes as f64 / codes as f64;
    let slack = per(table) - inline as f64 - strings as f64;

    println!("\nserver core, per pending registration code ({N} codes, journal drained after each request):");
    print_row("live heap", total, N);
    println!("  breakdown ({codes} codes in the table, {probe} more from the journal probe):");
    print_row("codes: BTreeMap<SecretHash, Box<DeviceCodeRecord>> (clone)", table, codes);
    println!(
        "    entry inline: SecretHash {} B + DeviceCodeRecord {} B",
        size_of::<SecretHash>(),
        size_of::<DeviceCodeRecord>()
    );
    println!(
        "    record heap strings: {strings} B (client_id, scope, model, serial, request_id: inline up to 24 bytes)"
    );
    println!("    B-tree node slack: {slack:.1} B");
    print_row("user_codes: HashMap<WireUserCode, SecretHash> (rebuilt)", index, codes);
    println!(
        "    entry inline: WireUserCode {} B + SecretHash {} B",
        size_of::<WireUserCode>(),
        size_of::<SecretHash>()
    );
    println!("  not drained: the journal holds the touched keys of each request:");
    print_row("journal (Vec<Change>) per request until take_changes", journal, probe);
    print_row("core growth per request with the journal kept", undrained, probe);

    assert!(
        per_code <= CODE_TARGET,
        "{per_code:.1} live bytes per pending code, target ≤ {CODE_TARGET} B (breakdown above)"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Registered printers
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn registered_printer_footprint() {
    let (mut core, admin) = core_with_admin();
    let now = t0();
    start_counting();

    let before = Live::now();
    for i in 0..N {
        drop(register_printer(&mut core, now, &admin, &registration_request(i)));
    }
    let registered = Live::now() - before;

    // The redeemed registration codes go at the first sweep after their expiry and R-DEV-1's 30 s of grace (600 s
    // by default); the printers' first access tokens live 1200 s. In between is a printer's steady state: device,
    // refresh family, one live access token, and whatever else stays.
    let mid = Live::now();
    core.sweep(now + Duration::seconds(700));
    drain(&mut core);
    let swept = mid - Live::now();
    let steady = Live::now() - before;
    let (per_printer, _, _) = steady.per(N);

    let s = core.state();
    let (devices, families, access, codes) = (s.devices.len(), s.families.len(), s.access.len(), s.codes.len());
    let device_table = heap_of(|| s.devices.clone());
    let family_table = heap_of(|| s.families.clone());
    let access_table = heap_of(|| s.access.clone());
    // Derived: family-handle hash → family id (one entry per family, however often it rotates).
    let refresh_index = heap_of(|| {
        let mut m = SecretHashMap::default();
        for f in s.families.values() {
            m.insert(f.handle, f.id.clone());
        }
        m
    });
    let device_strings: usize = s
        .devices
        .values()
        .map(|d| name(&d.id) * 2 + name(&d.tenant) + name(&d.client_id) + opt_name(&d.model) + opt_name(&d.serial))
        .sum::<usize>()
        / devices.max(1);
    let family_strings: usize = s
        .families
        .values()
        .map(|f| name(&f.id) * 2 + name(&f.client_id) + name(&f.tenant) + subject_heap(&f.subject) + name(&f.scope))
        .sum::<usize>()
        / families.max(1);
    let access_strings: usize = s
        .access
        .values()
        .map(|a| name(&a.client_id) + name(&a.tenant) + subject_heap(&a.subject) + name(&a.scope) + opt_name(&a.family))
        .sum::<usize>()
        / access.max(1);
    // The sweep also forgets the approvals' per-code rate-limit windows and shrinks the emptied user-code index;
    // whatever of either is left shows up as "unaccounted", with the core's access-token expiry queue (one expiry
    // and hash, 40 B, per live access token: `ServerCore::put_access`).
    let accounted = device_table.bytes + family_table.bytes + access_table.bytes + refresh_index.bytes;

    println!(
        "\nserver core, per registered printer ({N} registrations: device authorization, admin approval, first poll):"
    );
    print_row("live heap right after registering (redeemed code still kept)", registered, N);
    print_row("freed by the sweep at +700 s (the redeemed codes)", swept, N);
    print_row("live heap, steady state (after that sweep)", steady, N);
    println!("  breakdown ({devices} devices, {families} families, {access} access tokens, {codes} codes left):");
    print_row("devices: HashMap<Name, Box<Device>>", device_table, N);
    println!(
        "    inline Name {} + Device {} B; heap strings {device_strings} B (ids inline)",
        size_of::<Name>(),
        size_of::<Device>()
    );
    print_row("families: HashMap<Name, Box<RefreshFamily>>", family_table, N);
    println!(
        "    inline Name {} + RefreshFamily {} B; heap strings {family_strings} B (ids inline)",
        size_of::<Name>(),
        size_of::<RefreshFamily>()
    );
    print_row("access: SecretHashMap<Box<AccessRecord>>", access_table, N);
    println!(
        "    inline SecretHash {} + AccessRecord {} B; heap strings {access_strings} B (ids inline)",
        size_of::<SecretHash>(),
        size_of::<AccessRecord>()
    );
    print_row("refresh_index: SecretHashMap<Name> (rebuilt)", refresh_index, N);
    println!("  unaccounted: {:.1} B", (steady.bytes - accounted) as f64 / N as f64);

    drop(core);
    rotation_growth();

    assert!(
        per_printer <= PRINTER_TARGET,
        "{per_printer:.1} live bytes per registered printer, target ≤ {PRINTER_TARGET} B (breakdown above)"
    );
}

/// What each refresh rotation costs until its access token expires, and that it keeps nothing for good (docs/protocol.md
/// C12: a family finds its retired tokens through their handle, so it does not grow).
fn rotation_growth() {
    const PRINTERS: usize = 1_000;
    const ROTATIONS: usize = 10;
    let (mut core, admin) = core_with_admin();
    let mut tokens: Vec<_> = (0..PRINTERS)
        .map(|i| {
            let t = register_printer(&mut core, t0(), &admin, &registration_request(i));
            t.refresh_token.expect("a refresh token")
        })
        .collect();
    // Past the codes' and the first access tokens' lifetimes: only the printers' steady state is left.
    let now = t0() + Duration::seconds(1300);
    core.sweep(now);
    drain(&mut core);
    let before = Live::now();
    for _ in 0..ROTATIONS {
        for t in tokens.iter_mut() {
            let req = TokenRequest::RefreshToken { refresh_token: t.clone(), scope: None, client_id: MFP.into() };
            let answer = core.token(now, req, None).expect("a valid rotation");
            drain(&mut core);
            // Same length, so the replaced token frees what the new one takes.
            *t = answer.refresh_token.expect("rotated");
        }
    }
    let with_access = Live::now() - before;
    // Past the new access tokens' 1200 s: only what stays for good.
    core.sweep(now + Duration::seconds(1300));
    drain(&mut core);
    let forever = Live::now() - before;
    let n = PRINTERS * ROTATIONS;
    println!("  per refresh rotation ({PRINTERS} printers × {ROTATIONS} rotations each):");
    print_row("live heap until the new access token expires", with_access, n);
    print_row("live heap kept for good (a family does not grow)", forever, n);
    drop(tokens);
    // docs/protocol.md C12: reuse detection keeps no per-rotation history.
    assert!(forever.bytes <= 0, "{} bytes kept for good after {n} rotations", forever.bytes);
}
