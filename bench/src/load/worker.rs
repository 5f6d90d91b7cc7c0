//! One generator thread: a current-thread runtime that owns a share of the
//! connections and of the rate, a dispatcher that releases requests on the timetable,
//! and one worker per concurrent request slot.
//!
//! Nothing is shared between threads while the run lasts (each thread has its own
//! histograms), so adding threads adds capacity without contention; the histograms
//! are merged once at the end.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio::task::LocalSet;

use super::LoadConfig;
use super::client::{self, Failure, RequestTemplate, Sender};
use super::schedule::{Schedule, Ticker};
use crate::{Error, resources};

/// What one thread measured.
pub struct Tally {
    /// From each request's intended send time to its last response byte (open loop);
    /// from the actual send in closed-loop mode, where there is no timetable.
    pub latency: Histogram<u64>,
    /// From the actual send to the last byte: what a client with coordinated omission
    /// would report. The difference to `latency` is queueing in the generator.
    pub service: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub bytes: u64,
    pub last_done: Option<Instant>,
    /// CPU this thread spent on the run itself (not on setup).
    pub cpu_seconds: f64,
}

impl Tally {
    pub fn new() -> Self {
        Tally {
            latency: new_histogram(),
            service: new_histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            bytes: 0,
            last_done: None,
            cpu_seconds: 0.0,
        }
    }

    fn fail(&mut self, failure: Failure, count: u64) {
        if count > 0 {
            *self.errors.entry(failure.name()).or_default() += count;
        }
    }
}

/// Microseconds from 1 µs to one hour at three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// This thread's share of the run.
pub struct ThreadShare {
    pub connections: usize,
    /// Requests per second for this thread, `None` in closed-loop mode.
    pub rate: Option<f64>,
    /// Staggers the threads' timetables so that they do not all send at once.
    pub offset: Duration,
}

/// The timetable's output: intended send times waiting for a free worker.
struct Queue {
    ticks: RefCell<VecDeque<Instant>>,
    closed: Cell<bool>,
    wake: Notify,
}

impl Queue {
    fn push(&self, intended: Instant) {
        self.ticks.borrow_mut().push_back(intended);
        self.wake.notify_one();
    }

    fn close(&self) {
        self.closed.set(true);
        self.wake.notify_waiters();
    }

    /// The next due request, or `None` once the timetable is exhausted. The runtime is
    /// single-threaded, so nothing can push or close between the checks and the wait.
    async fn pop(&self) -> Option<Instant> {
        loop {
            if let Some(intended) = self.ticks.borrow_mut().pop_front() {
                return Some(intended);
            }
            if self.closed.get() {
                return None;
            }
            self.wake.notified().await;
        }
    }
}

/// The state one thread's tasks share.
struct Shared {
    config: Arc<LoadConfig>,
    template: RequestTemplate,
    tally: RefCell<Tally>,
    in_flight: Cell<u64>,
}

/// Runs this thread's share; `start` is agreed between threads through the barriers
/// once every thread has its connections open.
pub fn run_thread(
    config: Arc<LoadConfig>,
    share: ThreadShare,
    barrier: Arc<Barrier>,
    start: Arc<OnceLock<Instant>>,
) -> Result<Tally, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::io("start a load generator runtime", source))?;
    let local = LocalSet::new();
    let template = RequestTemplate::new(
        &config.target,
        config.protocol,
        config.body_size,
        config.response_size,
        config.new_connection_per_request,
    );
    let shared = Rc::new(Shared {
        config: config.clone(),
        template,
        tally: RefCell::new(Tally::new()),
        in_flight: Cell::new(0),
    });

    let slots = local.block_on(&runtime, open_connections(&shared, share.connections));
    // Every thread has connected (or failed to) before anyone's clock starts.
    if barrier.wait().is_leader() {
        let _ = start.set(Instant::now() + Duration::from_millis(2));
    }
    barrier.wait();
    let start = *start.get().unwrap_or(&Instant::now()) + share.offset;

    let cpu_before = resources::thread_cpu_seconds()?;
    local.block_on(&runtime, drive(shared.clone(), slots, share.rate, start))?;
    let mut tally = std::mem::replace(&mut *shared.tally.borrow_mut(), Tally::new());
    tally.cpu_seconds = resources::thread_cpu_seconds()? - cpu_before;
    Ok(tally)
}

/// A connection shared by the workers that multiplex over it (one for HTTP/1.1).
type Slot = Rc<RefCell<Option<Sender>>>;

async fn open_connections(shared: &Rc<Shared>, connections: usize) -> Vec<Slot> {
    let config = &shared.config;
    let mut slots = Vec::with_capacity(connections);
    for _ in 0..connections {
        let sender = if config.new_connection_per_request {
            None
        } else {
            match client::connect(config.target.addr, config.protocol).await {
                Ok(sender) => Some(sender),
                Err(failure) => {
                    shared.tally.borrow_mut().fail(failure, 1);
                    None
                }
            }
        };
        slots.push(Rc::new(RefCell::new(sender)));
    }
    slots
}

async fn drive(
    shared: Rc<Shared>,
    slots: Vec<Slot>,
    rate: Option<f64>,
    start: Instant,
) -> Result<(), Error> {
    let config = shared.config.clone();
    let end = start + config.duration;
    let queue = Rc::new(Queue {
        ticks: RefCell::new(VecDeque::new()),
        closed: Cell::new(false),
        wake: Notify::new(),
    });
    let ticker = Ticker::new()?;
    let dispatcher = rate.map(|rate| {
        let queue = queue.clone();
        let schedule = Schedule::new(start, rate, config.duration);
        tokio::task::spawn_local(async move {
            let result = dispatch(schedule, &ticker, &queue).await;
            queue.close();
            result
        })
    });
    // Closed-loop workers start together at `start`.
    if dispatcher.is_none() {
        Ticker::new()?.sleep_until(start).await?;
    }

    let mut workers = Vec::new();
    for slot in slots {
        for _ in 0..config.streams {
            let (shared, slot, queue) = (shared.clone(), slot.clone(), queue.clone());
            let closed_loop_end = dispatcher.is_none().then_some(end);
            workers.push(tokio::task::spawn_local(async move {
                work(&shared, &slot, &queue, closed_loop_end).await;
            }));
        }
    }

    // Requests due near the end still get their full timeout to finish.
    let hard_stop = tokio::time::sleep_until((end + config.timeout).into());
    tokio::pin!(hard_stop);
    let mut workers = workers.into_iter();
    loop {
        let Some(worker) = workers.next() else { break };
        tokio::select! {
            _ = worker => {}
            _ = &mut hard_stop => break,
        }
    }
    let unsent = queue.ticks.borrow().len() as u64;
    let unfinished = shared.in_flight.get();
    {
        let mut tally = shared.tally.borrow_mut();
        tally.fail(Failure::Unsent, unsent);
        tally.fail(Failure::Timeout, unfinished);
    }
    match dispatcher {
        Some(dispatcher) if dispatcher.is_finished() => dispatcher
            .await
            .map_err(|source| Error::io("run the dispatcher", source.into()))?,
        _ => Ok(()),
    }
}

/// Releases each request when it is due; a late wake-up releases all overdue ones.
async fn dispatch(schedule: Schedule, ticker: &Ticker, queue: &Queue) -> Result<(), Error> {
    let mut next = 0;
    while next < schedule.count() {
        let due = schedule.due_until(next, Instant::now());
        for i in next..due {
            queue.push(schedule.intended(i));
        }
        next = due;
        if next < schedule.count() {
            ticker.sleep_until(schedule.intended(next)).await?;
        }
    }
    Ok(())
}

/// One request slot: takes the next due request (or, closed-loop, the next moment),
/// sends it, and records how long it took from when it was due.
async fn work(shared: &Shared, slot: &Slot, queue: &Queue, closed_loop_end: Option<Instant>) {
    let config = &shared.config;
    loop {
        let intended = match closed_loop_end {
            Some(end) => {
                let now = Instant::now();
                if now >= end {
                    return;
                }
                now
            }
            None => match queue.pop().await {
                Some(intended) => intended,
                None => return,
            },
        };
        shared.in_flight.set(shared.in_flight.get() + 1);
        let sent = Instant::now();
        let outcome = tokio::time::timeout(config.timeout, request(shared, slot)).await;
        let done = Instant::now();
        shared.in_flight.set(shared.in_flight.get() - 1);

        let mut tally = shared.tally.borrow_mut();
        match outcome {
            Ok(Ok(bytes)) => {
                tally.ok += 1;
                tally.bytes += bytes;
                let _ = tally.latency.record(micros(done - intended));
                let _ = tally.service.record(micros(done - sent));
                tally.last_done = Some(done);
            }
            Ok(Err(failure)) => {
                tally.fail(failure, 1);
                slot.borrow_mut().take();
            }
            Err(_) => {
                tally.fail(Failure::Timeout, 1);
                slot.borrow_mut().take();
            }
        }
    }
}

/// One request on the slot's connection, (re)connecting first when there is none.
async fn request(shared: &Shared, slot: &Slot) -> Result<u64, Failure> {
    let config = &shared.config;
    if config.new_connection_per_request {
        let mut sender = client::connect(config.target.addr, config.protocol).await?;
        if !client::ready(&mut sender).await {
            return Err(Failure::Handshake);
        }
        return client::send(&mut sender, &shared.template).await;
    }
    let mut sender = checkout(config, slot).await?;
    let result = client::send(&mut sender, &shared.template).await;
    if result.is_ok() && matches!(sender, Sender::Http1(_)) {
        *slot.borrow_mut() = Some(sender);
    }
    result
}

/// A sender ready for one request. An HTTP/1.1 slot has a single worker, so the sender
/// is taken out while in use; h2 handles are cheap clones shared by the slot's workers.
/// A connection the server closed between two requests (nginx after
/// `keepalive_requests`) is replaced, and that is a reconnect, not a failed request.
async fn checkout(config: &LoadConfig, slot: &Slot) -> Result<Sender, Failure> {
    let existing = match &mut *slot.borrow_mut() {
        Some(Sender::Http2(sender)) => Some(Sender::Http2(sender.clone())),
        other => other.take(),
    };
    if let Some(mut sender) = existing
        && client::ready(&mut sender).await
    {
        return Ok(sender);
    }
    let mut sender = client::connect(config.target.addr, config.protocol).await?;
    if !client::ready(&mut sender).await {
        return Err(Failure::Handshake);
    }
    if let Sender::Http2(handle) = &sender {
        *slot.borrow_mut() = Some(Sender::Http2(handle.clone()));
    }
    Ok(sender)
}

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).max(1)
}
