//! The threads that serve connections.
//!
//! Each of the proxy's `--workers` threads is a shard: a single-threaded event loop
//! with connection pools of its own (the HTTP/2 connection to each peer pod, the
//! connections to the app), so that a request is read, forwarded and answered on
//! one thread. No wake-up crosses threads and no task migrates; what requests share
//! across shards is read-mostly (the directory, the TLS configs, the opaque memory)
//! or atomic (the metrics). Envoy's workers and linkerd2-proxy on one core work this
//! way; the work-stealing runtime this replaced spent about one `futex` and half an
//! `eventfd` write per request and sidecar handing work between its threads
//! (BENCHMARKS.md).
//!
//! Every shard accepts on every listener, through a descriptor of its own for the
//! same socket. A connection is then served by the shard with the fewest open
//! connections: when that is another shard, the accepting one hands the socket over
//! before reading a byte. Without this a few long-lived connections, such as the
//! HTTP/2 connection each shard of a client sidecar opens to a server sidecar, could
//! all land on one thread while the others idle.
//!
//! Shard 0 runs on the caller's runtime, beside the control plane (identity,
//! discovery, admin); the others on threads named `trellis-shard-N`.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::inbound::Inbound;
use crate::listener::{self, Accepted, Direction};
use crate::outbound::Outbound;

/// What a shard serves connections with, built once per shard so that each has
/// pools of its own.
pub struct Stages {
    pub inbound: Inbound,
    pub outbound: Outbound,
}

/// Serves `listeners` on `stages.len()` shards until `shutdown`, then gives each
/// shard's open connections until `drain_timeout` to finish.
pub async fn serve(
    listeners: Vec<(Direction, TcpListener)>,
    stages: Vec<Stages>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> Result<(), Error> {
    let count = stages.len();
    let mut inboxes = Vec::with_capacity(count);
    let mut receivers = Vec::with_capacity(count);
    for _ in 0..count {
        let (tx, rx) = mpsc::unbounded_channel();
        inboxes.push(tx);
        receivers.push(rx);
    }
    let board = Arc::new(Board {
        open: (0..count).map(|_| AtomicUsize::new(0)).collect(),
        inboxes: inboxes.into(),
    });
    for (direction, listener) in &listeners {
        let addr = listener.local_addr().ok();
        tracing::info!(dir = direction.as_str(), ?addr, shards = count, "listening");
    }

    let mut shards = stages.into_iter().zip(receivers).enumerate();
    let Some((_, (first, first_inbox))) = shards.next() else {
        return Ok(());
    };
    let mut finished = Vec::new();
    for (index, (stages, inbox)) in shards {
        // Each shard registers its own descriptor of every listening socket with its
        // own event loop; a descriptor cannot move between loops once registered.
        let own = listeners
            .iter()
            .map(|(direction, listener)| {
                let fd = listener
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(Error::Shard)?;
                Ok((*direction, std::net::TcpListener::from(fd)))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Shard)?;
        let shard = Shard {
            index,
            board: board.clone(),
            stages,
            connections: TaskTracker::new(),
        };
        let (done, finish) = oneshot::channel();
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name(format!("trellis-shard-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listeners = own
                        .into_iter()
                        .filter_map(
                            |(direction, listener)| match TcpListener::from_std(listener) {
                                Ok(listener) => Some((direction, listener)),
                                Err(error) => {
                                    tracing::error!(shard = index, %error, "cannot listen");
                                    None
                                }
                            },
                        )
                        .collect();
                    Arc::new(shard)
                        .run(listeners, inbox, shutdown, drain_timeout)
                        .await;
                });
                // The runtime is dropped first, closing what outlived the drain.
                drop(runtime);
                let _ = done.send(());
            })
            .map_err(Error::Shard)?;
        finished.push(finish);
    }

    let first = Arc::new(Shard {
        index: 0,
        board,
        stages: first,
        connections: TaskTracker::new(),
    });
    first
        .run(listeners, first_inbox, shutdown, drain_timeout)
        .await;
    for finish in finished {
        // An error means the shard's thread panicked: nothing is left to wait for.
        let _ = finish.await;
    }
    Ok(())
}

/// How often [`keep_a_timer_armed`] wakes its shard.
const TIMER_ANCHOR: Duration = Duration::from_secs(1);

/// Keeps a timer due within [`TIMER_ANCHOR`] in this shard's runtime until
/// `shutdown`.
///
/// Every request arms a timer (its response timeout), and tokio's timer wakes its
/// event loop (an `eventfd` write, then one more turn of `epoll_wait`) whenever a new
/// timer falls due before the loop's planned wake-up, which an idle loop does not
/// have. Below the knee a shard is idle between requests, so every request paid that
/// wake-up: one `write` and half an `epoll_wait` per request at 2,000 req/s.
/// With this timer always pending, a timer due later than a second never wakes the
/// loop; the price is one wake-up per second and shard.
async fn keep_a_timer_armed(shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(TIMER_ANCHOR);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
    }
}

/// What every shard knows of the others: how many connections each serves, and
/// the way to hand one a connection.
struct Board {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

impl Board {
    /// The shard with the fewest open connections; `me` on a tie, so that a
    /// balanced proxy never hands over.
    fn least_loaded(&self, me: usize) -> usize {
        let mut best = me;
        let mut least = self.open[me].load(Ordering::Relaxed);
        for (index, open) in self.open.iter().enumerate() {
            let open = open.load(Ordering::Relaxed);
            if open < least {
                best = index;
                least = open;
            }
        }
        best
    }

    /// Counts a connection accepted by shard `me` on the shard with the fewest open,
    /// and hands it over when that is another: the stream back if `me` keeps it.
    fn place(
        &self,
        me: usize,
        direction: Direction,
        stream: TcpStream,
        client: SocketAddr,
    ) -> Option<TcpStream> {
        let target = self.least_loaded(me);
        // Counted at once, so that the next accept, here or on another shard, sees it.
        self.open[target].fetch_add(1, Ordering::Relaxed);
        if target == me {
            return Some(stream);
        }
        let handed = stream
            .into_std()
            .map_err(|error| error.to_string())
            .and_then(|stream| {
                self.inboxes[target]
                    .send(Handoff {
                        direction,
                        stream,
                        client,
                    })
                    .map_err(|_| "the shard has stopped".to_string())
            });
        if let Err(error) = handed {
            self.open[target].fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%error, "cannot hand a connection to another shard");
        }
        None
    }
}

/// A connection on its way to another shard, out of the accepting shard's event
/// loop and not yet in the other's.
struct Handoff {
    direction: Direction,
    stream: std::net::TcpStream,
    client: SocketAddr,
}

/// Counts a connection as open on its shard until the connection's task ends.
struct Open {
    board: Arc<Board>,
    shard: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.board.open[self.shard].fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shard {
    index: usize,
    board: Arc<Board>,
    stages: Stages,
    connections: TaskTracker,
}

impl Shard {
    async fn run(
        self: Arc<Self>,
        listeners: Vec<(Direction, TcpListener)>,
        mut inbox: mpsc::UnboundedReceiver<Handoff>,
        shutdown: CancellationToken,
        drain_timeout: Duration,
    ) {
        let accepting = TaskTracker::new();
        for (direction, listener) in listeners {
            let shard = self.clone();
            accepting.spawn(listener::accept(
                listener,
                direction,
                shutdown.clone(),
                move |stream, client| shard.dispatch(direction, stream, client),
            ));
        }
        accepting.spawn(keep_a_timer_armed(shutdown.clone()));
        let shard = self.clone();
        let stop = shutdown.clone();
        accepting.spawn(async move {
            loop {
                let handoff = tokio::select! {
                    () = stop.cancelled() => break,
                    handoff = inbox.recv() => handoff,
                };
                let Some(Handoff {
                    direction,
                    stream,
                    client,
                }) = handoff
                else {
                    break;
                };
                match TcpStream::from_std(stream) {
                    Ok(stream) => shard.serve(direction, stream, client),
                    Err(error) => {
                        shard.board.open[shard.index].fetch_sub(1, Ordering::Relaxed);
                        tracing::warn!(%error, "cannot take over a connection");
                    }
                }
            }
        });
        accepting.close();
        accepting.wait().await;
        tracing::debug!(shard = self.index, "stopped accepting");

        self.connections.close();
        let open = self.connections.len();
        if open > 0 {
            tracing::info!(shard = self.index, open, deadline = ?drain_timeout, "draining open connections");
        }
        if tokio::time::timeout(drain_timeout, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                shard = self.index,
                open = self.connections.len(),
                "drain deadline passed; closing the remaining connections"
            );
        }
    }

    /// Serves a connection here, or hands it to the shard with fewer open.
    fn dispatch(&self, direction: Direction, stream: TcpStream, client: SocketAddr) {
        if let Some(stream) = self.board.place(self.index, direction, stream, client) {
            self.serve(direction, stream, client);
        }
    }

    /// Spawns the connection's task; its count is already on this shard.
    fn serve(&self, direction: Direction, stream: TcpStream, client: SocketAddr) {
        // One spawn per stage rather than one future over both: a task is as large
        // as its future, whichever stage it runs.
        match direction {
            Direction::Inbound => {
                let stage = self.stages.inbound.clone();
                self.spawn(direction, stream, client, stage, Inbound::handle);
            }
            Direction::Outbound => {
                let stage = self.stages.outbound.clone();
                self.spawn(direction, stream, client, stage, Outbound::handle);
            }
        }
    }

    fn spawn<S, Fut>(
        &self,
        direction: Direction,
        stream: TcpStream,
        client: SocketAddr,
        stage: S,
        handle: fn(S, Accepted) -> Fut,
    ) where
        S: Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let open = Open {
            board: self.board.clone(),
            shard: self.index,
        };
        self.connections
            .spawn(listener::connection(direction, stream, client, |conn| {
                counted(open, stage, conn, handle)
            }));
    }
}

/// A connection's task: its stage's future, and its count on the shard, which ends
/// with the task.
///
/// The stage's future is made in here: made by the caller and awaited here, it
/// would be held twice (as an argument, and as what is awaited), and every open
/// connection holds its task for as long as it lives.
async fn counted<S, Fut>(open: Open, stage: S, conn: Accepted, handle: fn(S, Accepted) -> Fut)
where
    Fut: Future<Output = ()>,
{
    let _open = open;
    handle(stage, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(open: &[usize]) -> Board {
        Board {
            open: open.iter().map(|&n| AtomicUsize::new(n)).collect(),
            inboxes: open.iter().map(|_| mpsc::unbounded_channel().0).collect(),
        }
    }

    /// The size of what `f` returns, from its type alone.
    fn returned_size<A, B, C, D, T>(_f: impl FnOnce(A, B, C, D) -> T) -> usize {
        std::mem::size_of::<T>()
    }

    fn task_size<S, Fut: Future<Output = ()>>(_handle: fn(S, Accepted) -> Fut) -> usize {
        returned_size(counted::<S, Fut>)
    }

    /// Each open connection holds its task until it closes, so a thousand idle
    /// connections hold a thousand of these: a stage's future that grew with a rare
    /// path (boxed where it starts instead), or held twice, shows here.
    #[test]
    fn a_connection_task_stays_small() {
        const MAX: usize = 3 * 1024;
        let outbound = task_size(Outbound::handle);
        let inbound = task_size(Inbound::handle);
        assert!(
            outbound <= MAX,
            "outbound connection task: {outbound} bytes"
        );
        assert!(inbound <= MAX, "inbound connection task: {inbound} bytes");
    }

    #[test]
    fn a_connection_goes_to_the_shard_with_the_fewest_open() {
        assert_eq!(board(&[3, 1, 2]).least_loaded(0), 1);
        assert_eq!(board(&[3, 1, 0]).least_loaded(1), 2);
    }

    #[test]
    fn the_accepting_shard_keeps_a_connection_on_a_tie() {
        assert_eq!(board(&[1, 1, 1]).least_loaded(2), 2);
        assert_eq!(board(&[0, 0]).least_loaded(1), 1);
        assert_eq!(board(&[2]).least_loaded(0), 0);
    }

    fn counts(board: &Board) -> Vec<usize> {
        board
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// A real connection accepted on a busy shard reaches the idle one's inbox still
    /// open and unread, and is counted there, not where it was accepted.
    #[tokio::test]
    async fn a_connection_accepted_on_a_busy_shard_is_handed_to_an_idle_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (tx0, _rx0) = mpsc::unbounded_channel();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let board = Board {
            open: [5, 0].into_iter().map(AtomicUsize::new).collect(),
            inboxes: vec![tx0, tx1].into(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, peer) = listener.accept().await.expect("accept");
        client.write_all(b"first bytes").await.expect("write");

        let kept = board.place(0, Direction::Outbound, accepted, peer);
        assert!(kept.is_none(), "the busy shard kept the connection");
        assert_eq!(counts(&board), [5, 1]);
        let handoff = rx1
            .try_recv()
            .expect("a hand-off in the idle shard's inbox");
        assert_eq!(handoff.client, peer);
        assert_eq!(handoff.direction, Direction::Outbound);

        // The receiving shard takes it into its own event loop, as `run` does, and
        // reads what the client sent before the hand-over.
        let mut stream = TcpStream::from_std(handoff.stream).expect("register");
        let mut got = [0u8; 11];
        stream.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"first bytes");
        stream.write_all(b"ok").await.expect("answer");
        let mut answer = [0u8; 2];
        client.read_exact(&mut answer).await.expect("client read");
        assert_eq!(&answer, b"ok");

        // Shard 1, still the least loaded, keeps what it accepts itself.
        let _client2 = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, peer) = listener.accept().await.expect("accept");
        assert!(board.place(1, Direction::Inbound, accepted, peer).is_some());
        assert_eq!(counts(&board), [5, 2]);
        assert!(rx1.try_recv().is_err(), "nothing handed on a keep");
    }

    /// A hand-off to a shard that has stopped is not counted against it.
    #[tokio::test]
    async fn a_hand_off_to_a_stopped_shard_is_not_counted() {
        let (tx0, _rx0) = mpsc::unbounded_channel();
        let (tx1, rx1) = mpsc::unbounded_channel::<Handoff>();
        drop(rx1);
        let board = Board {
            open: [3, 0].into_iter().map(AtomicUsize::new).collect(),
            inboxes: vec![tx0, tx1].into(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, peer) = listener.accept().await.expect("accept");
        assert!(
            board
                .place(0, Direction::Outbound, accepted, peer)
                .is_none()
        );
        assert_eq!(counts(&board), [3, 0]);
    }

    /// The write system calls this thread has made, from `/proc/thread-self/io`.
    fn writes_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("task I/O accounting");
        io.lines()
            .find_map(|line| line.strip_prefix("syscw: "))
            .and_then(|count| count.trim().parse().ok())
            .expect("a syscw line")
    }

    /// The write system calls it costs to arm a 30 s timer the way a request arms its
    /// response timeout below the knee: in an event loop that parked waiting for I/O
    /// and has just been woken by it.
    fn writes_to_arm_a_timer(anchored: bool) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let shutdown = CancellationToken::new();
            if anchored {
                tokio::spawn(keep_a_timer_armed(shutdown.clone()));
                // Its first tick is immediate; the next one stays pending.
                tokio::task::yield_now().await;
            }
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
            ours.set_nonblocking(true).expect("non-blocking");
            let ours = tokio::net::UnixStream::from_std(ours).expect("registered");
            let peer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                std::io::Write::write_all(&mut &theirs, b"x").expect("a byte written");
                theirs
            });
            ours.readable().await.expect("readable");

            let before = writes_by_this_thread();
            let timeout = tokio::time::sleep(Duration::from_secs(30));
            tokio::pin!(timeout);
            // Polled once, which registers it with the runtime's timer.
            tokio::select! {
                biased;
                () = &mut timeout => unreachable!("a 30 s timer fired at once"),
                () = std::future::ready(()) => {}
            }
            let writes = writes_by_this_thread() - before;
            shutdown.cancel();
            drop(peer.join());
            writes
        })
    }

    /// Without a pending timer, tokio wakes its own loop (an `eventfd` write) to arm
    /// one; with the anchor, arming a timer due after it costs no system call. The
    /// first half shows the measurement sees the write it looks for.
    #[test]
    fn an_anchored_shard_arms_a_timer_without_waking_itself() {
        assert!(
            writes_to_arm_a_timer(false) >= 1,
            "tokio no longer wakes an idle loop to arm a timer: the anchor may go"
        );
        assert_eq!(writes_to_arm_a_timer(true), 0);
    }
}
