//! Call records and business keys leave the request path through a bounded channel and
//! are written in batches, on a thread of their own (binding thousands of rows a second
//! is work the threads serving calls should not share). A full channel drops the record
//! and counts it: a slow database never slows a call.

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
    calls::{self, BusinessKeyRecord, CallRecord},
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

impl Recorder {
    /// Starts the batch writer's thread; it ends when the last `Recorder` is dropped.
    pub fn start(store: Store) -> Recorder {
        let (queue, mut rx) = mpsc::channel::<Record>(CAPACITY);
        let writer = async move {
            let mut batch = Vec::with_capacity(BATCH);
            let (mut facts, mut keys) = (Vec::with_capacity(BATCH), Vec::new());
            loop {
                let n = rx.recv_many(&mut batch, BATCH).await;
                if n == 0 {
                    return;
                }
                // Let the records of the next moments join this transaction.
                if batch.len() < BATCH {
                    tokio::time::sleep(GATHER).await;
                    while batch.len() < BATCH && !rx.is_empty() {
                        let room = BATCH - batch.len();
                        rx.recv_many(&mut batch, room).await;
                    }
                }
                for r in batch.drain(..) {
                    match r {
                        Record::Call(c) => facts.push(c),
                        Record::BusinessKey(k) => keys.push(k),
                    }
                }
                let rows: Vec<_> = facts.iter().map(CallFacts::record).collect();
                let result = calls::write(&store, &rows, &keys).await;
                drop(rows);
                facts.clear();
                keys.clear();
                if let Err(e) = result {
                    tracing::warn!(error = %e, "could not write a batch of call records; dropped");
                }
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the call-record writer");
        std::thread::Builder::new()
            .name("portico-records".into())
            .spawn(move || {
                yield_to_calls();
                runtime.block_on(writer)
            })
            .expect("the call-record writer's thread");
        Recorder { queue, dropped: Arc::new(AtomicU64::new(0)) }
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

    /// Records dropped because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Makes the calling thread yield to the threads serving calls: a lower priority (nice
/// 10) and no wake-up preemption (`SCHED_BATCH`). A writer that sleeps most of the time
/// would otherwise preempt a busy call thread each time it wakes; measured, that doubled
/// the gateway's p99 (BENCHMARKS.md).
fn yield_to_calls() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread with valid arguments; a failure
    // only leaves the default priority.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn addresses_read_as_their_display(v4 in any::<u32>(), v6 in any::<u128>()) {
            let (v4, v6) = (IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6)));
            prop_assert_eq!(address(v4), v4.to_string());
            prop_assert_eq!(address(v6), v6.to_string());
        }
    }
}
