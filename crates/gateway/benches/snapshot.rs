//! Memory and edit cost of the gateway snapshot at scale: 100,000 apps (200,000
//! credentials, sandbox and production) holding 1,000,000 grants in total, then one app
//! edited. Prints resident memory and the time of the edit.
//! Run: `cargo bench -p portico-gateway --bench snapshot`.

use std::{collections::HashSet, time::Instant};

use portico_core::domain::IpAllowlist;
use portico_gateway::snapshot::{AppEntry, Snapshot};

const APPS: usize = 100_000;
const GRANTS_PER_APP: usize = 10;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    kib / 1024.0
}

fn entry(app: usize, env: &str) -> AppEntry {
    AppEntry {
        app_key: format!("ak_{}_{app:020}", if env == "sandbox" { "test" } else { "live" }),
        app_id: format!("app_{app:028}"),
        merchant_id: format!("mch_{:028}", app / 10),
        environment: env.to_string(),
        secrets: vec![format!("sk_live_{app:048}")],
        previous_until: 0,
        rsa_public_key: None,
        usable: true,
        allowlist: IpAllowlist::parse("ip_allowlist", &["203.0.113.0/24".to_string()]).unwrap(),
        grants: (0..GRANTS_PER_APP).map(|g| format!("group_{:03}", (app + g * 7) % 500)).collect::<HashSet<_>>(),
        internal_user_id: Some(format!("u-{app}")),
    }
}

fn main() {
    let before = rss_mib();
    let started = Instant::now();
    let mut entries = Vec::with_capacity(APPS * 2);
    let mut ids = Vec::with_capacity(APPS);
    for app in 0..APPS {
        ids.push(format!("app_{app:028}"));
        entries.push(entry(app, "sandbox"));
        entries.push(entry(app, "production"));
    }
    let snapshot = Snapshot::empty().with_apps(&ids, entries);
    let built = started.elapsed();
    let after = rss_mib();
    println!("apps: {APPS}, credentials: {}, grants: {} (each credential holds its app's)", snapshot.app_count(), APPS * GRANTS_PER_APP);
    println!("built in {:.0} ms; resident memory {:.0} MiB (process {:.0} MiB)", built.as_secs_f64() * 1000.0, after - before, after);

    // One edit: an app's entries replaced (as when a secret rotates or a grant changes).
    let mut times = Vec::new();
    let mut current = snapshot;
    for i in 0..20 {
        let app = i * 4_999;
        let t = Instant::now();
        let next = current.with_apps(&[format!("app_{app:028}")], vec![entry(app, "sandbox"), entry(app, "production")]);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        current = next;
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("one app edited: median {:.0} µs, max {:.0} µs (of 20 edits)", times[10], times[19]);
    assert!(current.app(&format!("ak_live_{:020}", 4_999)).is_some());
}
