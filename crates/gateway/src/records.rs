//! Call records and business keys leave the request path through a bounded channel and
//! are written in batches, on a thread of their own (binding thousands of rows a second
//! is work the threads serving calls should not share). A full channel drops the record
//! and counts it: a slow database never slows a call.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use portico_core::id::new_id;
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
    fn into_record(self) -> CallRecord {
        CallRecord {
            id: new_id("cal"),
            at: self.at,
            trace_id: self.trace_id,
            merchant_id: self.app.as_ref().map(|a| a.merchant_id.clone()),
            app_id: self.app.as_ref().map(|a| a.app_id.clone()),
            api: self.api.as_ref().map(|a| a.label.clone()),
            status: i64::from(self.status),
            code: self.code,
            latency_us: self.latency_us,
            bytes_in: self.bytes_in as i64,
            bytes_out: self.bytes_out as i64,
            client_ip: self.client_ip.to_string(),
        }
    }
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
            let (mut call_rows, mut key_rows) = (Vec::with_capacity(BATCH), Vec::new());
            loop {
                let n = rx.recv_many(&mut batch, BATCH).await;
                if n == 0 {
                    return;
                }
                // Let the records of the next moments join this transaction.
                if batch.len() < BATCH {
                    tokio::time::sleep(GATHER).await;
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                }
                for r in batch.drain(..) {
                    match r {
                        Record::Call(c) => call_rows.push(c.into_record()),
                        Record::BusinessKey(k) => key_rows.push(k),
                    }
                }
                let result = calls::write(&store, &call_rows, &key_rows).await;
                call_rows.clear();
                key_rows.clear();
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
