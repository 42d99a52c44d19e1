//! `presence`: N users in groups of K+1 (one group conversation each, so every user may watch
//! the K others), all online and subscribed to each other's presence. Then, for D seconds, P % of
//! the users per second (random, spread evenly over each second) close their connection, stay
//! away for `offline_ms` plus 50–500 ms of jitter, connect a fresh `Connection` and subscribe
//! again. Every watcher times the frames it gets about its contacts:
//!
//! - connect → watcher `online: true`: from the moment the returning user starts connecting
//!   (TCP and WebSocket handshake, `auth`; on loopback well under a millisecond before `auth` is
//!   sent, and `reconnect_ms` shows the whole connect → `ready`) to the frame's arrival;
//! - disconnect → watcher `online: false`: from the moment the user starts closing to the frame,
//!   which includes the server's grace period (flapping shorter than it is damped to nothing, so
//!   an `offline_ms` below the grace period should yield no frames at all).
//!
//! The first frame per contact after each `presence_subscribe` is that subscription's snapshot
//! and is not a change. After the drain every watcher checks that it believes each live contact
//! to be online (`stale_at_end`). Latencies go to fixed-size histograms, so memory does not grow
//! with the run. With `--server-pid`, the server's CPU time (utime + stime from
//! `/proc/PID/stat`) over churn and drain is divided by the presence frames delivered meanwhile
//! (changes and re-subscription snapshots alike; the server also spends that CPU on connects and
//! closes, so it is an upper bound on the cost of a frame).
//!
//! Every user holds one socket here and one in the server: both processes need an open-file limit
//! above N plus a margin (checked up front for this process, and for the server's with
//! `--server-pid`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use parley_client::{Client, ConnectOptions, Connection, Event};
use parley_proto::Id;
use parley_proto::frames::Presence;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::stats::{Histogram, Summary};
use crate::{BenchError, Result};

/// After the churn: how long returning users and their watchers' frames get to finish.
pub const DRAIN: Duration = Duration::from_secs(15);
/// Longest `--offline-ms` whose last churns still finish within the drain.
pub const MAX_OFFLINE_MS: u64 = 10_000;
/// Largest group conversation the server makes (members, creator included).
pub const MAX_GROUP: usize = 1024;
/// How long every subscriber gets for its first snapshot.
const INITIAL_WAIT: Duration = Duration::from_secs(30);
/// The drain ends early once no presence frame has arrived for this long (and nobody is away).
const QUIET: Duration = Duration::from_secs(1);
/// Connections opened at once while ramping up.
const RAMP: usize = 64;
/// Groups created at once.
const GROUP_BATCH: usize = 32;
/// Most accounts per admin call.
const MAX_BULK: usize = 10_000;
/// Events buffered per connection (the SDK's channel).
const EVENT_CAPACITY: usize = 256;
/// Bound on each connect and close.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Jitter added to `offline_ms`, in milliseconds.
const JITTER_MS: (u64, u64) = (50, 500);
/// Period of the timer that measures this process's own scheduling lag.
const LAG_TICK: Duration = Duration::from_millis(10);
/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux platform Parley runs on.
const CLK_TCK: f64 = 100.0;
/// Open files besides the users' sockets (HTTP pool, runtime, std streams, …).
const FD_MARGIN: u64 = 256;

#[derive(Clone, Debug)]
pub struct PresenceArgs {
    pub server: String,
    pub admin_token: String,
    pub users: usize,
    /// Contacts per user (the group size is `contacts + 1`).
    pub contacts: usize,
    /// Percent of all users that churn each second.
    pub churn_pct: f64,
    pub duration: Duration,
    /// How long a churned user stays away (plus 50–500 ms of jitter).
    pub offline_ms: u64,
    /// The server's process id, to read its CPU time (same machine only).
    pub server_pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct PresenceReport {
    pub scenario: &'static str,
    pub users: usize,
    pub contacts: usize,
    pub groups: usize,
    pub churn_pct: f64,
    pub seconds: f64,
    pub offline_ms: u64,
    /// Users connected at the start (the others failed to connect and are left out).
    pub connected: usize,
    /// Subscribers that got a full snapshot before the churn began, of those with contacts.
    pub initial_snapshots: usize,
    pub subscribers: usize,
    /// Contacts an initial snapshot reported offline (all were online): should be 0.
    pub initial_offline: u64,
    /// `presence_subscribe` → the last frame of its snapshot, before the churn.
    pub initial_snapshot_ms: Summary,
    /// Disconnect → reconnect cycles completed, and those not started because no idle user or
    /// no free slot was found (too much churn for `offline_ms`).
    pub churn_cycles: u64,
    pub churn_skipped: u64,
    /// Cycles still under way when the drain ran out.
    pub churn_unfinished: usize,
    /// A returning user's connect → `ready`.
    pub reconnect_ms: Summary,
    /// A returning user's connect → each watcher's `online: true`: the headline figure.
    pub connect_to_watcher_online_ms: Summary,
    /// A leaving user's close → each watcher's `online: false` (grace period included).
    pub disconnect_to_watcher_offline_ms: Summary,
    /// A returning user's `presence_subscribe` → the last frame of its snapshot.
    pub resubscribe_snapshot_ms: Summary,
    /// How late a 10 ms timer of this process fires during churn and drain: when its tail nears
    /// the latencies above, they measure the load generator rather than the server.
    pub bench_lag_ms: Summary,
    /// Churn and drain: the window of the frame count and of the server CPU.
    pub window_seconds: f64,
    /// Every presence frame the watchers got in the window (changes and snapshots).
    pub presence_frames: u64,
    pub online_changes: u64,
    pub offline_changes: u64,
    /// Frames of the returning users' re-subscription snapshots, in the window.
    pub snapshot_frames: u64,
    /// Change frames that match no disconnect or reconnect under way (e.g. an `online: false`
    /// after the user is back): should be 0.
    pub unmatched: u64,
    /// Change frames that repeat the state the watcher already had: should be 0.
    pub repeats: u64,
    /// Frames about users the watcher did not subscribe to: should be 0.
    pub foreign: u64,
    /// After the drain: (watcher, live contact) pairs where the watcher's last frame did not say
    /// online: should be 0.
    pub stale_at_end: u64,
    pub connect_errors: u64,
    pub close_errors: u64,
    /// Connections the server closed (or lost) on its own.
    pub dropped: u64,
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_us_per_presence_frame: Option<f64>,
}

/// Splits `n` users into the fewest groups of at most `k + 1`, as even as possible (sizes differ
/// by at most one), as contiguous ranges of user indices.
pub fn split_groups(n: usize, k: usize) -> Vec<Range<usize>> {
    if n == 0 {
        return Vec::new();
    }
    let groups = n.div_ceil(k + 1);
    let (base, extra) = (n / groups, n % groups);
    let mut start = 0;
    (0..groups)
        .map(|g| {
            let len = base + usize::from(g < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The soft limit on open files from the text of `/proc/PID/limits`.
fn parse_nofile_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line["Max open files".len()..].split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

pub(crate) fn server_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / CLK_TCK)
}

fn nofile_limit(pid: &str) -> Option<u64> {
    parse_nofile_limit(&std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

/// Open files this process needs: a socket per user, the sockets of churning users that are
/// still closing while their replacements open, and the rest.
fn fds_needed(users: usize, churn_pct: f64) -> u64 {
    let churn_per_sec = (users as f64 * churn_pct / 100.0).ceil() as u64;
    users as u64 + 3 * churn_per_sec + FD_MARGIN
}

fn emfile_hint(need: u64) -> String {
    format!(
        "every user holds one socket in this process and one in the server: raise the open-file limit of both \
         (`ulimit -n {need}` or more, in the shell that starts `parley serve` and in the one that runs \
         `parley bench`)"
    )
}

/// Whether the error is "too many open files" (EMFILE, or ENFILE for the whole system), anywhere
/// in its chain of sources (the SDK wraps the I/O error of its HTTP and WebSocket layers).
fn is_fd_exhaustion(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(23 | 24))
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<Box<std::io::Error>>()
            && matches!(io.raw_os_error(), Some(23 | 24))
        {
            return true;
        }
        cur = err.source();
    }
    // Some failures reach the bench only as text (a JSON decode error that read from a socket
    // keeps the I/O error's message, not the error): a diagnostic for the report, nothing the
    // bench decides on beyond saying why the run stopped.
    let text = e.to_string();
    text.contains("Too many open files") || text.contains("os error 24") || text.contains("os error 23")
}

/// Where a user is in the run.
const IDLE: u8 = 0;
const AWAY: u8 = 1;
const DEAD: u8 = 2;

/// Per watcher and contact: the contact's last known state, and whether this connection's
/// snapshot has covered it yet.
const SEEN: u8 = 0b100;
const STATE: u8 = 0b011;
const OFFLINE: u8 = 1;
const ONLINE: u8 = 2;

#[derive(Default)]
struct Counters {
    presence_frames: AtomicU64,
    snapshot_frames: AtomicU64,
    initial_offline: AtomicU64,
    initial_snapshots: AtomicUsize,
    online_changes: AtomicU64,
    offline_changes: AtomicU64,
    unmatched: AtomicU64,
    repeats: AtomicU64,
    foreign: AtomicU64,
    connect_errors: AtomicU64,
    close_errors: AtomicU64,
    subscribe_errors: AtomicU64,
    dropped: AtomicU64,
    churn_cycles: AtomicU64,
    stale: AtomicU64,
    checked: AtomicUsize,
}

/// What every task shares: who is where, when each user last left and came back, the results.
struct Shared {
    t0: Instant,
    index: HashMap<Id, u32>,
    state: Vec<AtomicU8>,
    /// Microseconds since `t0` (plus one, so 0 means never) of the user's last close and connect.
    left_at: Vec<AtomicU64>,
    joined_at: Vec<AtomicU64>,
    to_online: Histogram,
    to_offline: Histogram,
    reconnect: Histogram,
    initial_snapshot: Histogram,
    resubscribe_snapshot: Histogram,
    lag: Histogram,
    c: Counters,
    fd_exhausted: AtomicBool,
}

impl Shared {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64 + 1
    }

    fn away(&self) -> usize {
        self.state.iter().filter(|s| s.load(Relaxed) == AWAY).count()
    }
}

enum Cmd {
    Subscribe,
    Churn { pause: Duration },
    Check,
    Stop,
}

type Live = (Connection, mpsc::Receiver<Event>);

fn connect_options() -> ConnectOptions {
    ConnectOptions {
        reconnect: false,
        auto_ack: true,
        event_capacity: EVENT_CAPACITY,
        request_timeout: REQUEST_TIMEOUT,
        ..Default::default()
    }
}

/// One user: its connection, its subscription to the rest of its group, what it saw.
struct User {
    idx: usize,
    token: String,
    server: Arc<str>,
    group: Range<usize>,
    contacts: Vec<Id>,
    /// Per position in the group (`SEEN | STATE` bits).
    flags: Vec<u8>,
    seen: usize,
    subscribed_at: u64,
    subscriptions: u32,
}

impl User {
    async fn run(mut self, sh: Arc<Shared>, first: Live, mut cmds: mpsc::Receiver<Cmd>) {
        enum Step {
            Event(Option<Event>),
            Cmd(Option<Cmd>),
        }
        let mut live = Some(first);
        loop {
            let step = match live.as_mut() {
                Some((_, events)) => tokio::select! {
                    e = events.recv() => Step::Event(e),
                    c = cmds.recv() => Step::Cmd(c),
                },
                None => Step::Cmd(cmds.recv().await),
            };
            match step {
                Step::Event(Some(Event::Presence(p))) => self.on_presence(&p, &sh),
                Step::Event(Some(Event::Disconnected { .. }) | None) => {
                    // Not ours to repair: the run goes on without this user.
                    sh.c.dropped.fetch_add(1, Relaxed);
                    sh.state[self.idx].store(DEAD, Relaxed);
                    live = None;
                }
                Step::Event(Some(_)) => {}
                Step::Cmd(Some(Cmd::Subscribe)) => {
                    if let Some((conn, _)) = &live {
                        self.subscribe(conn, &sh).await;
                    }
                }
                Step::Cmd(Some(Cmd::Churn { pause })) => live = self.churn(live.take(), pause, &sh).await,
                Step::Cmd(Some(Cmd::Check)) => {
                    if live.is_some() {
                        sh.c.stale.fetch_add(self.stale(&sh), Relaxed);
                    }
                    sh.c.checked.fetch_add(1, Relaxed);
                }
                Step::Cmd(Some(Cmd::Stop) | None) => break,
            }
        }
        if let Some(l) = live {
            self.close(l, &sh).await;
        }
    }

    async fn subscribe(&mut self, conn: &Connection, sh: &Shared) {
        for f in &mut self.flags {
            *f &= !SEEN;
        }
        self.seen = 0;
        self.subscriptions += 1;
        self.subscribed_at = sh.now();
        if !self.contacts.is_empty() && conn.presence_subscribe(&self.contacts).await.is_err() {
            sh.c.subscribe_errors.fetch_add(1, Relaxed);
        }
    }

    fn on_presence(&mut self, p: &Presence, sh: &Shared) {
        sh.c.presence_frames.fetch_add(1, Relaxed);
        crate::progress::add(1);
        let x = match sh.index.get(&Id::parse(&p.user_id)) {
            Some(&x) if self.group.contains(&(x as usize)) && x as usize != self.idx => x as usize,
            _ => {
                sh.c.foreign.fetch_add(1, Relaxed);
                return;
            }
        };
        let now = sh.now();
        let pos = x - self.group.start;
        let state = if p.online { ONLINE } else { OFFLINE };
        let before = self.flags[pos];
        self.flags[pos] = SEEN | state;
        if before & SEEN == 0 {
            // This connection's snapshot of the contact, not a change.
            sh.c.snapshot_frames.fetch_add(1, Relaxed);
            let initial = self.subscriptions == 1;
            if initial && !p.online {
                sh.c.initial_offline.fetch_add(1, Relaxed);
            }
            self.seen += 1;
            if self.seen == self.contacts.len() {
                let took = now.saturating_sub(self.subscribed_at);
                if initial {
                    sh.initial_snapshot.record_us(took);
                    sh.c.initial_snapshots.fetch_add(1, Relaxed);
                } else {
                    sh.resubscribe_snapshot.record_us(took);
                }
            }
            return;
        }
        if before & STATE == state {
            sh.c.repeats.fetch_add(1, Relaxed);
        }
        let (left, joined) = (sh.left_at[x].load(Relaxed), sh.joined_at[x].load(Relaxed));
        if p.online && joined > left {
            sh.c.online_changes.fetch_add(1, Relaxed);
            sh.to_online.record_us(now - joined);
        } else if !p.online && left > joined {
            sh.c.offline_changes.fetch_add(1, Relaxed);
            sh.to_offline.record_us(now - left);
        } else {
            sh.c.unmatched.fetch_add(1, Relaxed);
        }
    }

    /// Leaves, stays away for `pause`, comes back on a fresh connection and subscribes again.
    async fn churn(&mut self, live: Option<Live>, pause: Duration, sh: &Shared) -> Option<Live> {
        sh.left_at[self.idx].store(sh.now(), Relaxed);
        if let Some(l) = live {
            self.close(l, sh).await;
        }
        tokio::time::sleep(pause).await;
        let start = sh.now();
        sh.joined_at[self.idx].store(start, Relaxed);
        match Connection::connect(&self.server, &self.token, connect_options()).await {
            Ok((conn, events)) => {
                sh.reconnect.record_us(sh.now() - start);
                self.subscribe(&conn, sh).await;
                sh.c.churn_cycles.fetch_add(1, Relaxed);
                sh.state[self.idx].store(IDLE, Relaxed);
                Some((conn, events))
            }
            Err(e) => {
                sh.c.connect_errors.fetch_add(1, Relaxed);
                if is_fd_exhaustion(&e) {
                    sh.fd_exhausted.store(true, Relaxed);
                }
                sh.state[self.idx].store(DEAD, Relaxed);
                None
            }
        }
    }

    /// Closes, still reading (and timing) what arrives meanwhile, so the SDK never waits on us.
    async fn close(&mut self, (conn, mut events): Live, sh: &Shared) {
        let closing = async { conn.close().await };
        let reading = async {
            while let Some(e) = events.recv().await {
                if let Event::Presence(p) = e {
                    self.on_presence(&p, sh);
                }
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, async { tokio::join!(closing, reading) }).await {
            Ok((Ok(()), ())) => {}
            _ => {
                sh.c.close_errors.fetch_add(1, Relaxed);
            }
        }
    }

    /// Live contacts this watcher does not believe online.
    fn stale(&self, sh: &Shared) -> u64 {
        let mut stale = 0;
        for (pos, f) in self.flags.iter().enumerate() {
            let x = self.group.start + pos;
            if x != self.idx && sh.state[x].load(Relaxed) == IDLE && f & STATE != ONLINE {
                stale += 1;
            }
        }
        stale
    }
}

fn validate(args: &PresenceArgs) -> Result<()> {
    let fail = |m: String| Err(BenchError::Failed(m));
    if args.users < 2 {
        return fail("--users must be at least 2".into());
    }
    if !(1..MAX_GROUP).contains(&args.contacts) {
        return fail(format!("--contacts must be 1 to {} (a group has at most {MAX_GROUP} members)", MAX_GROUP - 1));
    }
    if !(0.0..=100.0).contains(&args.churn_pct) {
        return fail("--churn-pct must be 0 to 100".into());
    }
    if args.offline_ms > MAX_OFFLINE_MS {
        return fail(format!("--offline-ms must be at most {MAX_OFFLINE_MS} (the drain is {} s)", DRAIN.as_secs()));
    }
    if args.duration.is_zero() {
        return fail("--duration must be positive".into());
    }
    Ok(())
}

/// Fails fast when either process cannot hold a socket per user.
fn check_fd_limits(args: &PresenceArgs) -> Result<()> {
    let need = fds_needed(args.users, args.churn_pct);
    if let Some(have) = nofile_limit("self")
        && have < need
    {
        return Err(BenchError::Failed(format!(
            "{} users need about {need} open files in this process, and its limit (ulimit -n) is {have}; {}",
            args.users,
            emfile_hint(need)
        )));
    }
    if let Some(pid) = args.server_pid
        && let Some(have) = nofile_limit(&pid.to_string())
        && have < args.users as u64 + FD_MARGIN
    {
        return Err(BenchError::Failed(format!(
            "{} users need about {} open files in the server (pid {pid}), and its limit is {have}; {}",
            args.users,
            args.users as u64 + FD_MARGIN,
            emfile_hint(need)
        )));
    }
    Ok(())
}

pub async fn run(args: PresenceArgs) -> Result<PresenceReport> {
    validate(&args)?;
    check_fd_limits(&args)?;
    let n = args.users;
    let need = fds_needed(n, args.churn_pct);
    if let Some(pid) = args.server_pid
        && server_cpu_seconds(pid).is_none()
    {
        return Err(BenchError::Failed(format!("cannot read /proc/{pid}/stat: is the server's pid right?")));
    }

    // Accounts, then one group conversation per K+1 of them, made by its first member.
    let admin = Client::new(&args.server).with_token(&args.admin_token);
    let run: u32 = rand::random();
    let mut accounts = Vec::with_capacity(n);
    for (chunk, start) in (0..n).step_by(MAX_BULK).enumerate() {
        let count = MAX_BULK.min(n - start);
        accounts.extend(admin.bulk_accounts(&format!("p{run:08x}c{chunk}_"), count as u32, "bench-password").await?);
    }
    let ids: Vec<Id> = accounts.iter().map(|a| a.user_id).collect();
    let groups = split_groups(n, args.contacts);
    eprintln!("presence: {n} accounts made; creating {} group(s) of up to {} ...", groups.len(), args.contacts + 1);
    for batch in groups.chunks(GROUP_BATCH) {
        let made = batch.iter().filter(|g| g.len() > 1).map(|g| {
            let owner = admin.with_token(&accounts[g.start].token);
            let others = ids[g.start + 1..g.end].to_vec();
            async move { owner.create_group("presence bench", &others).await }
        });
        for r in join_all(made).await {
            r?;
        }
    }

    let sh = Arc::new(Shared {
        t0: Instant::now(),
        index: ids.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect(),
        state: (0..n).map(|_| AtomicU8::new(DEAD)).collect(),
        left_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        joined_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        to_online: Histogram::default(),
        to_offline: Histogram::default(),
        reconnect: Histogram::default(),
        initial_snapshot: Histogram::default(),
        resubscribe_snapshot: Histogram::default(),
        lag: Histogram::default(),
        c: Counters::default(),
        fd_exhausted: AtomicBool::new(false),
    });

    // Everyone online, 64 at a time.
    eprintln!("presence: connecting {n} users ...");
    let server: Arc<str> = args.server.as_str().into();
    let mut tasks = JoinSet::new();
    let mut cmds: Vec<Option<mpsc::Sender<Cmd>>> = (0..n).map(|_| None).collect();
    let mut subscribers = 0;
    for batch in groups.iter().flat_map(|g| g.clone().map(move |i| (i, g.clone()))).collect::<Vec<_>>().chunks(RAMP) {
        let opened =
            join_all(batch.iter().map(|(i, _)| Connection::connect(&server, &accounts[*i].token, connect_options())))
                .await;
        let mut first_error = None;
        let mut failed = 0;
        for ((i, group), r) in batch.iter().cloned().zip(opened) {
            match r {
                Ok(live) => {
                    let (tx, rx) = mpsc::channel(4);
                    cmds[i] = Some(tx);
                    sh.state[i].store(IDLE, Relaxed);
                    let contacts: Vec<Id> = group.clone().filter(|&j| j != i).map(|j| ids[j]).collect();
                    subscribers += usize::from(!contacts.is_empty());
                    let user = User {
                        idx: i,
                        token: accounts[i].token.clone(),
                        server: server.clone(),
                        flags: vec![0; group.len()],
                        group,
                        contacts,
                        seen: 0,
                        subscribed_at: 0,
                        subscriptions: 0,
                    };
                    tasks.spawn(user.run(sh.clone(), live, rx));
                }
                Err(e) => {
                    sh.c.connect_errors.fetch_add(1, Relaxed);
                    if is_fd_exhaustion(&e) {
                        return Err(BenchError::Failed(format!("connecting: {e}; {}", emfile_hint(need))));
                    }
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if failed == batch.len()
            && let Some(e) = first_error
        {
            return Err(BenchError::Failed(format!(
                "{failed} connections in a row failed (first: {e}); is the server up, and below its open-file \
                 limit? {}",
                emfile_hint(need)
            )));
        }
    }
    let connected = tasks.len();
    drop(accounts);

    // Everyone subscribes to the rest of its group; wait for every snapshot.
    eprintln!("presence: {connected} users online; subscribing ...");
    let subscribing = Instant::now();
    for tx in cmds.iter().flatten() {
        let _ = tx.send(Cmd::Subscribe).await;
    }
    while sh.c.initial_snapshots.load(Relaxed) < subscribers && subscribing.elapsed() < INITIAL_WAIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let initial_snapshots = sh.c.initial_snapshots.load(Relaxed);
    if sh.c.presence_frames.load(Relaxed) == 0 {
        return Err(BenchError::Failed(format!(
            "no presence frame within {} s of {subscribers} presence_subscribe: does the server implement presence?",
            INITIAL_WAIT.as_secs()
        )));
    }
    if initial_snapshots < subscribers {
        eprintln!(
            "presence: warning: only {initial_snapshots} of {subscribers} subscribers got a full snapshot within {} s",
            INITIAL_WAIT.as_secs()
        );
    }

    // Churn: every second, P % of all users (those not already away) leave, spread evenly.
    eprintln!(
        "presence: churning {}% of users per second for {:.1} s ...",
        args.churn_pct,
        args.duration.as_secs_f64()
    );
    let cpu_before = args.server_pid.and_then(server_cpu_seconds);
    let frames_before = sh.c.presence_frames.load(Relaxed);
    let snapshots_before = sh.c.snapshot_frames.load(Relaxed);
    let churn_start = tokio::time::Instant::now();
    crate::progress::phase("churning", 0);
    let lag = tokio::spawn({
        let sh = sh.clone();
        async move {
            loop {
                let t = Instant::now();
                tokio::time::sleep(LAG_TICK).await;
                sh.lag.record(t.elapsed().saturating_sub(LAG_TICK));
            }
        }
    });
    let seconds = args.duration.as_secs_f64();
    let per_sec = n as f64 * args.churn_pct / 100.0;
    let (mut owed, mut skipped, mut tick) = (0.0, 0u64, 0u32);
    while f64::from(tick) < seconds {
        let len = (seconds - f64::from(tick)).min(1.0);
        owed += per_sec * len;
        let want = owed.floor() as usize;
        owed -= want as f64;
        let picked = {
            let mut rng = rand::rng();
            let mut picked = Vec::with_capacity(want);
            let mut tries = 8 * want + 64;
            while picked.len() < want && tries > 0 {
                tries -= 1;
                let i = rng.random_range(0..n);
                if sh.state[i].compare_exchange(IDLE, AWAY, Relaxed, Relaxed).is_ok() {
                    picked.push(i);
                }
            }
            picked.shuffle(&mut rng);
            picked
        };
        skipped += (want - picked.len()) as u64;
        let tick_start = churn_start + Duration::from_secs(u64::from(tick));
        for (j, &i) in picked.iter().enumerate() {
            tokio::time::sleep_until(tick_start + Duration::from_secs_f64(len * j as f64 / picked.len() as f64)).await;
            if sh.fd_exhausted.load(Relaxed) {
                return Err(BenchError::Failed(format!("reconnecting: too many open files; {}", emfile_hint(need))));
            }
            let pause = Duration::from_millis(args.offline_ms + rand::rng().random_range(JITTER_MS.0..=JITTER_MS.1));
            let sent = cmds[i].as_ref().is_some_and(|tx| tx.try_send(Cmd::Churn { pause }).is_ok());
            if !sent {
                sh.state[i].store(IDLE, Relaxed);
                skipped += 1;
            }
        }
        tick += 1;
        tokio::time::sleep_until(churn_start + Duration::from_secs_f64(f64::from(tick).min(seconds))).await;
    }

    // Drain: everyone back, then quiet (or out of time).
    let drain_end = tokio::time::Instant::now() + DRAIN;
    let (mut last_frames, mut quiet_since) = (u64::MAX, tokio::time::Instant::now());
    while tokio::time::Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let frames = sh.c.presence_frames.load(Relaxed);
        if frames != last_frames || sh.away() > 0 {
            (last_frames, quiet_since) = (frames, tokio::time::Instant::now());
        } else if quiet_since.elapsed() >= QUIET {
            break;
        }
    }
    let window_seconds = churn_start.elapsed().as_secs_f64();
    lag.abort();
    let cpu_after = args.server_pid.and_then(server_cpu_seconds);
    let presence_frames = sh.c.presence_frames.load(Relaxed) - frames_before;
    let churn_unfinished = sh.away();
    if sh.fd_exhausted.load(Relaxed) {
        return Err(BenchError::Failed(format!("reconnecting: too many open files; {}", emfile_hint(need))));
    }

    // Everyone checks what it believes, then leaves.
    for tx in cmds.iter().flatten() {
        let _ = tx.try_send(Cmd::Check);
    }
    let checking = Instant::now();
    while sh.c.checked.load(Relaxed) < connected && checking.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for tx in cmds.iter().flatten() {
        let _ = tx.try_send(Cmd::Stop);
    }
    drop(cmds);
    let closing = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(_)) = tokio::time::timeout_at(closing, tasks.join_next()).await {}
    tasks.abort_all();

    let server_cpu_seconds = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    let c = &sh.c;
    Ok(PresenceReport {
        scenario: "presence",
        users: n,
        contacts: args.contacts,
        groups: groups.len(),
        churn_pct: args.churn_pct,
        seconds,
        offline_ms: args.offline_ms,
        connected,
        initial_snapshots,
        subscribers,
        initial_offline: c.initial_offline.load(Relaxed),
        initial_snapshot_ms: sh.initial_snapshot.summary(),
        churn_cycles: c.churn_cycles.load(Relaxed),
        churn_skipped: skipped,
        churn_unfinished,
        reconnect_ms: sh.reconnect.summary(),
        connect_to_watcher_online_ms: sh.to_online.summary(),
        disconnect_to_watcher_offline_ms: sh.to_offline.summary(),
        resubscribe_snapshot_ms: sh.resubscribe_snapshot.summary(),
        bench_lag_ms: sh.lag.summary(),
        window_seconds,
        presence_frames,
        online_changes: c.online_changes.load(Relaxed),
        offline_changes: c.offline_changes.load(Relaxed),
        snapshot_frames: c.snapshot_frames.load(Relaxed) - snapshots_before,
        unmatched: c.unmatched.load(Relaxed),
        repeats: c.repeats.load(Relaxed),
        foreign: c.foreign.load(Relaxed),
        stale_at_end: c.stale.load(Relaxed),
        connect_errors: c.connect_errors.load(Relaxed) + c.subscribe_errors.load(Relaxed),
        close_errors: c.close_errors.load(Relaxed),
        dropped: c.dropped.load(Relaxed),
        server_cpu_seconds,
        server_cpu_us_per_presence_frame: server_cpu_seconds
            .filter(|_| presence_frames > 0)
            .map(|s| s * 1e6 / presence_frames as f64),
    })
}

#[cfg(test)]
mod tests {
    use parley_client::ClientError;

    use super::*;

    #[test]
    fn groups_are_even_and_bounded() {
        for n in 1..300 {
            for k in [1, 2, 3, 9, 20, 150, 1023] {
                let g = split_groups(n, k);
                assert_eq!(g.len(), n.div_ceil(k + 1), "{n} {k}");
                assert_eq!(g.first().unwrap().start, 0);
                assert_eq!(g.last().unwrap().end, n);
                assert!(g.windows(2).all(|w| w[0].end == w[1].start));
                let (min, max) = (g.iter().map(|r| r.len()).min().unwrap(), g.iter().map(|r| r.len()).max().unwrap());
                assert!(max <= k + 1 && max - min <= 1, "{n} {k}: {min}..{max}");
            }
        }
        assert_eq!(split_groups(105, 9).iter().filter(|g| g.len() == 10).count(), 6);
        assert_eq!(split_groups(20_000, 20).len(), 953);
        assert!(split_groups(0, 5).is_empty());
    }

    #[test]
    fn reads_proc_stat_and_limits() {
        let stat = "4242 (parley (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 269 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            20000                40000                files     \n";
        assert_eq!(parse_nofile_limit(limits), Some(20_000));
        assert_eq!(
            parse_nofile_limit("Max open files            unlimited            unlimited   files"),
            Some(u64::MAX)
        );
        assert_eq!(parse_nofile_limit(""), None);
    }

    #[test]
    fn finds_emfile_in_the_error_chain() {
        /// Wraps an I/O error as its source, the way the SDK's errors do.
        #[derive(Debug, thiserror::Error)]
        #[error("websocket: {0}")]
        struct Wrapped(#[source] Box<std::io::Error>);

        let emfile = Wrapped(Box::new(std::io::Error::from_raw_os_error(24)));
        assert!(is_fd_exhaustion(&emfile));
        assert!(is_fd_exhaustion(&ClientError::Decode("IO error: Too many open files (os error 24)".into())));
        let refused = Wrapped(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(!is_fd_exhaustion(&refused));
        assert!(!is_fd_exhaustion(&ClientError::Timeout));
    }
}
