//! Call records and business keys leave the request path through a bounded channel and
//! are written in batches, by a thread of their own on spare CPU: it makes the records'
//! strings and packs them into segments as they arrive, in short slices, and inserts a
//! quarter second of them at once (tens of thousands of calls a second is work the
//! threads serving calls should not share). On
//! SQLite the records have a database file of their own (`Store`), so the writer, even
//! when starved of CPU, holds no lock any other write waits for. A full channel drops the
//! record and counts it: a slow database never slows a call.

use std::{
    borrow::Cow,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use portico_core::id::new_id_at;
use portico_store::{
    calls::{BusinessKeyRecord, CallRecord, Packer},
    Store,
};
use tokio::sync::mpsc;

use crate::snapshot::{ApiEntry, AppEntry};

pub enum Record {
    Call(CallFacts),
    BusinessKey(BusinessKeyRecord),
}

/// What a call leaves for its record, as the pipeline has it: the record's strings (its
/// id, the client address, copies of names) are made on the writer's thread, not on the
/// thread serving calls.
pub struct CallFacts {
    /// When the call arrived (ms).
    pub at: i64,
    pub trace_id: String,
    pub app: Option<Arc<AppEntry>>,
    pub api: Option<Arc<ApiEntry>>,
    pub status: u16,
    pub code: i64,
    pub latency_us: i64,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub client_ip: IpAddr,
}

impl CallFacts {
    /// The call's record: its id (on the clock of the call's arrival) and client address
    /// are made here, names are borrowed.
    fn record(&self) -> CallRecord<Cow<'_, str>> {
        let app = self.app.as_deref();
        CallRecord {
            id: Cow::Owned(new_id_at("cal", self.at)),
            at: self.at,
            trace_id: Cow::Borrowed(&self.trace_id),
            merchant_id: app.map(|a| Cow::Borrowed(a.merchant_id.as_str())),
            app_id: app.map(|a| Cow::Borrowed(a.app_id.as_str())),
            api: self.api.as_deref().map(|a| Cow::Borrowed(a.label.as_str())),
            status: i64::from(self.status),
            code: self.code,
            latency_us: self.latency_us,
            bytes_in: self.bytes_in as i64,
            bytes_out: self.bytes_out as i64,
            client_ip: Cow::Owned(address(self.client_ip)),
        }
    }
}

/// An address as text, IPv4 without the formatting machinery (a tenth of the writer's
/// time went to `Ipv4Addr`'s `Display`).
fn address(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut s = String::with_capacity(15);
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.extend(portico_signing::decimal(u64::from(o), &mut [0; 20]).iter().map(|&d| char::from(d)));
    }
    s
}

#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Record>,
    dropped: Arc<AtomicU64>,
}

const CAPACITY: usize = 65_536;
/// Records per transaction at most.
const BATCH: usize = 20_000;
/// How long a batch may gather before it is written.
const GATHER: Duration = Duration::from_millis(250);
/// How often the queue is emptied while a batch gathers.
const DRAIN: Duration = Duration::from_millis(10);

impl Recorder {
    /// Starts the batch writer's thread; it ends when the last `Recorder` is dropped.
    /// `on_idle_cpu`: the thread runs on CPU time nothing else wants (see [`yield_to_calls`]).
    pub fn start(store: Store, on_idle_cpu: bool) -> Recorder {
        let (queue, mut rx) = mpsc::channel::<Record>(CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        let writer = async move {
            // Its connection is made here, on first use: on SQLite the connection's
            // worker thread, which runs the inserts, is made by this thread and takes
            // its scheduling class.
            let db = store.records_writer();
            let mut queued = Vec::with_capacity(SLICE);
            let (mut packer, mut keys) = (Packer::default(), Vec::new());
            loop {
                // The first record of a batch wakes the writer; the records of the next
                // moments join the same transaction.
                if rx.recv_many(&mut queued, SLICE).await == 0 {
                    return;
                }
                let gathered = tokio::time::Instant::now() + GATHER;
                loop {
                    take(&mut queued, &mut packer, &mut keys);
                    if packer.len() + keys.len() >= BATCH || tokio::time::Instant::now() >= gathered {
                        break;
                    }
                    // The queue is emptied and its records packed every few milliseconds,
                    // not once a batch, a slice at a time with a pause between slices (see
                    // `SLICE`): the packing is spread over the batch's quarter second, and
                    // the channel's blocks and the records' strings go back to the serving
                    // thread while still in its caches.
                    if rx.is_empty() {
                        tokio::time::sleep(DRAIN).await;
                    } else {
                        portico_store::paced::nap();
                    }
                    let room = (BATCH - packer.len() - keys.len()).min(SLICE);
                    if !rx.is_empty() && rx.recv_many(&mut queued, room).await == 0 {
                        break;
                    }
                }
                let n = packer.len() + keys.len();
                if let Err(e) = packer.write(&db, &keys).await {
                    lost.fetch_add(n as u64, Ordering::Relaxed);
                    tracing::warn!(error = %e, records = n, "could not write a batch of call records; dropped");
                }
                keys.clear();
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the call-record writer");
        std::thread::Builder::new()
            .name("portico-records".into())
            .spawn(move || {
                yield_to_calls(on_idle_cpu);
                runtime.block_on(writer)
            })
            .expect("the call-record writer's thread");
        Recorder { queue, dropped }
    }

    /// Queues a record without ever waiting.
    pub fn record(&self, r: Record) {
        if self.queue.try_send(r).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "call record channel full; records dropped");
            }
        }
    }

    /// Records dropped: the channel was full, or their batch could not be written.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Records taken from the queue and packed at a time, between two pauses of the writer.
///
/// On `SCHED_IDLE` the writer still gets the CPU at times, when the serving thread has run
/// past its share at a scheduler tick; it then keeps the CPU until it blocks or its own
/// slice runs out, and while a core runs only idle-class work the kernel counts it as
/// idle and does not move the waiting serving thread to the other core. Every call in
/// flight waited those milliseconds (BENCHMARKS.md). A slice of records is about a tenth
/// of a millisecond of work; the writer then sleeps (`portico_store::paced::nap`), as
/// SQLite's thread does under the records' paced VFS, whose notes say why a yield is not
/// enough.
const SLICE: usize = 128;

/// Packs records taken from the queue into the batch.
fn take(queued: &mut Vec<Record>, packer: &mut Packer, keys: &mut Vec<BusinessKeyRecord>) {
    for r in queued.drain(..) {
        match r {
            Record::Call(c) => packer.push(&c.record()),
            Record::BusinessKey(k) => keys.push(k),
        }
    }
}

/// Makes the calling thread yield to the threads serving calls, and to every other
/// program on the host.
///
/// `on_idle_cpu` (the default): `SCHED_IDLE`, CPU time nothing else wants. A core that
/// runs only this thread still counts as idle when the kernel places a woken task, so
/// the writer's bursts (a batch every 250 ms) never push a task onto the serving
/// thread's core. At a lower but normal priority they did: on two cores, the load
/// generator or the backend, woken while the writer held the other core, was placed
/// beside the serving thread and stayed there, preempting it at every call for hundreds
/// of milliseconds (BENCHMARKS.md). A host kept at full CPU gives this thread almost
/// nothing: records then wait in the queue and, once it is full, are dropped and counted.
///
/// Otherwise: nice 10 and no wake-up preemption (`SCHED_BATCH`), which keeps records
/// under saturation at some cost to calls.
///
/// An unprivileged thread cannot leave `SCHED_IDLE` again, so the choice is made once.
fn yield_to_calls(on_idle_cpu: bool) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread with valid arguments; a failure
    // only leaves the default priority.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if on_idle_cpu {
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        } else {
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
            libc::setpriority(libc::PRIO_PROCESS, 0, 10);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = on_idle_cpu;
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// Held by the tests that start a writer: one of them counts the threads that appear.
    static WRITERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// The threads of this process whose names start with `prefix`: (id, scheduling policy).
    #[cfg(target_os = "linux")]
    fn threads(prefix: &str) -> Vec<(i32, i32)> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with(prefix) {
                let tid: i32 = task.file_name().to_string_lossy().parse().unwrap();
                // SAFETY: a plain query of a thread of this process.
                found.push((tid, unsafe { libc::sched_getscheduler(tid) }));
            }
        }
        found
    }

    /// The writer's thread and the SQLite worker thread of its connection, which runs the
    /// inserts, both run on idle CPU by default; a record still arrives.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_writer_and_its_inserts_run_on_idle_cpu_unless_told_otherwise() {
        let _one_at_a_time = WRITERS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()), 2).await.unwrap();
        assert!(dir.path().join("t-records.db").exists(), "the records have a file of their own");
        for (on_idle_cpu, policy) in [(true, libc::SCHED_IDLE), (false, libc::SCHED_BATCH)] {
            // Reads of the records come from a pool of their own; its connections (and
            // their worker threads) are made by the reading thread, at normal priority.
            let page = portico_core::page::PageRequest { limit: 10, after: None };
            portico_store::calls::business_keys(&mut store.read_records().await.unwrap(), "mch_none", None, &page).await.unwrap();
            let before: Vec<i32> = [threads("portico-records"), threads("sqlx-sqlite-wor")].concat().into_iter().map(|(tid, _)| tid).collect();
            let recorder = Recorder::start(store.clone(), on_idle_cpu);
            let merchant = portico_core::id::new_id("mch");
            recorder.record(Record::BusinessKey(BusinessKeyRecord {
                id: portico_core::id::new_id("bk"),
                merchant_id: merchant.clone(),
                app_id: "app_1".into(),
                api: "order.create@1.0".into(),
                business_key: "order-1".into(),
                trace_id: "trace-1".into(),
                at: 1,
            }));
            let mut found = Vec::new();
            for _ in 0..500 {
                let mut conn = store.read_records().await.unwrap();
                found = portico_store::calls::business_keys(&mut conn, &merchant, None, &page).await.unwrap();
                if !found.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(found.len(), 1, "the record arrives");
            let new = |prefix| threads(prefix).into_iter().filter(|(tid, p)| !before.contains(tid) && *p != libc::SCHED_OTHER).map(|(_, p)| p).collect::<Vec<_>>();
            assert_eq!(new("portico-records"), [policy], "the writer, on_idle_cpu = {on_idle_cpu}");
            assert_eq!(new("sqlx-sqlite-wor"), [policy], "its connection's worker, on_idle_cpu = {on_idle_cpu}");
            drop(recorder);
            // The writer's thread and connection end with the last Recorder.
            for _ in 0..500 {
                if new("portico-records").is_empty() && new("sqlx-sqlite-wor").is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// A batch the database refuses is dropped and counted, and the writer goes on.
    #[tokio::test]
    async fn records_that_cannot_be_written_count_as_dropped() {
        let _one_at_a_time = WRITERS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()), 2).await.unwrap();
        let recorder = Recorder::start(store.clone(), true);
        let key = |merchant: &str| {
            Record::BusinessKey(BusinessKeyRecord {
                id: portico_core::id::new_id("bk"),
                merchant_id: merchant.into(),
                app_id: "app_1".into(),
                api: "order.create@1.0".into(),
                business_key: "order-1".into(),
                trace_id: "trace-1".into(),
                at: 1,
            })
        };
        // The records' table gone from under the writer: its inserts fail.
        let mut conn = store.read_records().await.unwrap();
        sqlx::query("ALTER TABLE business_keys RENAME TO business_keys_away").execute(&mut *conn).await.unwrap();
        recorder.record(key("mch_a"));
        recorder.record(key("mch_a"));
        for _ in 0..500 {
            if recorder.dropped() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(recorder.dropped(), 2);
        // Back in place, the next batch is written.
        sqlx::query("ALTER TABLE business_keys_away RENAME TO business_keys").execute(&mut *conn).await.unwrap();
        drop(conn);
        recorder.record(key("mch_b"));
        let page = portico_core::page::PageRequest { limit: 10, after: None };
        let mut found = Vec::new();
        for _ in 0..500 {
            found = portico_store::calls::business_keys(&mut store.read_records().await.unwrap(), "mch_b", None, &page).await.unwrap();
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(found.len(), 1);
        assert_eq!(recorder.dropped(), 2);
    }

    proptest! {
        #[test]
        fn addresses_read_as_their_display(v4 in any::<u32>(), v6 in any::<u128>()) {
            let (v4, v6) = (IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6)));
            prop_assert_eq!(address(v4), v4.to_string());
            prop_assert_eq!(address(v6), v6.to_string());
        }
    }
}
