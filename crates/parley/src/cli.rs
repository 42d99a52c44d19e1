//! The command line: every command and setting, documented for `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "parley", version, about = "Parley: a self-hostable messaging server", propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the server (embedded SQLite storage under --data-dir, or PostgreSQL with --store).
    Serve(Box<ServeArgs>),
    /// Apply the PostgreSQL schema migrations this build has and the database lacks (versioned,
    /// forward-only; safe while other nodes run or start).
    Migrate(MigrateArgs),
    /// Manage accounts on a running server.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Sign in on a running server and remember the session for the other client commands.
    Login(LoginArgs),
    /// Send a text message to a user (starts the direct conversation if needed; in an
    /// end-to-end encrypted one the text is encrypted on this device).
    Send(SendArgs),
    /// Send a file (photo, video, voice note, document) to a user: uploaded straight to the
    /// server's media store, with a preview for images.
    SendFile(SendFileArgs),
    /// Download a media file someone sent you (resumes an interrupted download).
    Download(DownloadArgs),
    /// Print incoming messages as they arrive (and acknowledge them) until interrupted.
    Watch(WatchArgs),
    /// This session's push registration: its status, or a test push through the real path.
    #[command(subcommand)]
    Push(PushCommand),
    /// End-to-end encryption keys: safety numbers to compare with a contact.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Measure a running server (start it with a high --send-rate-per-sec for load scenarios).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Print the safety number of you and USER: compare it with theirs (in person, or on a
    /// call); it is the same on both sides and changes when either of you adds or removes a
    /// device.
    Fingerprint {
        /// Username of the other person.
        user: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PushCommand {
    /// Show this device's registration, last success, last error and invalidation.
    Status,
    /// Send one push to this device now and print the provider's answer.
    Test,
}

#[derive(Subcommand, Debug)]
pub(crate) enum BenchCommand {
    /// Durable sends per second: N connections, each with a window of sends in flight.
    Sends {
        #[arg(long, default_value_t = 1)]
        conns: usize,
        /// Sends in flight per connection.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Group fanout: all members online, senders on a fixed schedule; send → last member.
    /// Push throughput: N offline devices in one group registered for Web Push to a push service
    /// this tool runs on loopback; one sender at a fixed rate. Start the server with
    /// `--push-allow-private-endpoints --push-coalesce-ms 0 --push-device-per-minute 1000000`.
    Push {
        /// Offline devices (at most 1,023).
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Messages per second (each is a push to every device).
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Seconds to send for.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// The server's process id, to read its CPU time from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
    Group {
        #[arg(long, default_value_t = 1024)]
        members: usize,
        /// Messages per second per sender.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value_t = 1)]
        senders: usize,
        /// Seconds to send for.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// Members do not acknowledge what they receive (isolates delivery from ack processing).
        #[arg(long)]
        no_ack: bool,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Presence under churn: users in groups of K+1 watch each other while P% of them leave and
    /// come back every second; times reconnect → each watcher's `online` frame.
    ///
    /// Every user holds one socket (an open file) in this process and one in the server, so both
    /// need `ulimit -n` above the number of users plus a margin; the tool checks its own limit,
    /// and the server's with --server-pid, before it starts, and stops with a clear message on
    /// "too many open files". If this process itself falls behind (its timer lag is reported as
    /// bench_lag_ms, with a warning), its own delays swell the tail: on 2 cores that starts near
    /// 10,000 users with 50 contacts and 2 % churn. For more users, raise `ulimit -n` in the shell
    /// of `parley serve` and run several bench processes at once.
    Presence {
        /// Users (accounts made for this run), each with one connection.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Contacts per user: users are split into groups of K+1 (one group conversation each,
        /// at most 1,024 members), each subscribed to the K others.
        #[arg(long, default_value_t = 20)]
        contacts: usize,
        /// Percent of all users that disconnect and reconnect each second.
        #[arg(long, default_value_t = 1.0)]
        churn_pct: f64,
        /// Seconds of churn (a drain of up to 15 s follows).
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        /// How long a user stays away before reconnecting, plus 50–500 ms of jitter (at most
        /// 10000). Above the server's presence grace period (5 s) every churn is an offline and
        /// an online change; below it the server damps the flap and watchers should see nothing.
        #[arg(long, default_value_t = 6000)]
        offline_ms: u64,
        /// The server's admin token (accounts are made through the admin API).
        #[arg(long, env = "PARLEY_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        /// The server's process id, on this machine: report its CPU time over the churn.
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Open-loop 1:1 traffic on a fixed schedule; receivers ack and read.
    Pairs {
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Messages per second, all senders together.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds of sending (receivers then drain for 5 s).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// The server's process id, to read its CPU time from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Another node of the same cluster (repeat for more): users connect round-robin over
        /// --server and these, so partners sit on different nodes.
        #[arg(long)]
        also_server: Vec<String>,
        /// Another node's process id (repeat, in the order of --also-server), to add its CPU time.
        #[arg(long)]
        also_server_pid: Vec<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Closed-loop 1:1 traffic stepping up the sends in flight: the most durable sends/s whose
    /// send → sent p99 stays under the bound.
    Max {
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Seconds per step.
        #[arg(long, default_value_t = 3.0)]
        step: f64,
        #[arg(long, default_value_t = 50.0)]
        p99_bound_ms: f64,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Reconnect storm: N devices dropped at once reconnect at once; time until all are synced.
    Storm {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Idle connections: open N, hold them, report the server's memory per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Seconds to hold the connections before measuring.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
        /// The server's process id, to read its memory from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Media transfer: N clients upload files of each size straight to the media store, then
    /// download them back (start the server with --media-uploads-per-minute 100000
    /// --media-upload-burst 100000 --media-daily-bytes 1000000000000).
    Media {
        /// Concurrent clients.
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// File sizes in MiB, comma-separated; each is a phase.
        #[arg(long, value_delimiter = ',', default_values_t = [1.0, 20.0])]
        sizes_mib: Vec<f64>,
        /// Files each client uploads per size.
        #[arg(long, default_value_t = 3)]
        files: usize,
        /// The server's process id, to read its memory from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Replay speed: a device offline while N messages arrive, then reconnects.
    Backlog {
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Settings of `parley serve`. Each can also be set in the TOML file given by --config (same
/// names, with `_` for `-`) or as a `PARLEY_*` environment variable; flags win over the
/// environment, which wins over the file, which wins over the defaults.
#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with settings.
    #[arg(long, env = "PARLEY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "PARLEY_LISTEN")]
    pub listen: Option<String>,
    /// Directory of the embedded database [default: ./parley-data].
    #[arg(long, env = "PARLEY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `parley_server=debug` [default: info].
    #[arg(long, env = "PARLEY_LOG")]
    pub log: Option<String>,
    /// This node's name (unique in a cluster); a number 0–1023 is also the number in every id
    /// it makes, any other name maps to one [default: 0].
    #[arg(long, env = "PARLEY_NODE_ID")]
    pub node_id: Option<String>,
    /// PostgreSQL URL (postgres://user@host/db): store there instead of the embedded database.
    #[arg(long, env = "PARLEY_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// Do not apply PostgreSQL migrations at start (run `parley migrate` instead).
    #[arg(long, env = "PARLEY_NO_MIGRATE")]
    pub no_migrate: bool,
    /// NATS URL (nats://host:4222): with --redis, join a cluster of nodes.
    #[arg(long, env = "PARLEY_NATS", hide_env_values = true)]
    pub nats: Option<String>,
    /// Redis URL (redis://host:6379): the cluster's session directory and presence.
    #[arg(long, env = "PARLEY_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// The cluster's name, prefixing its NATS subjects and Redis keys [default: parley].
    #[arg(long, env = "PARLEY_CLUSTER")]
    pub cluster: Option<String>,
    /// Sustained sends per second per device [default: 200].
    #[arg(long, env = "PARLEY_SEND_RATE_PER_SEC")]
    pub send_rate_per_sec: Option<f64>,
    /// Sends a device may burst above the sustained rate [default: 2000].
    #[arg(long, env = "PARLEY_SEND_BURST")]
    pub send_burst: Option<u32>,
    /// Frames queued per connection before it is closed with 4009 [default: 4096].
    #[arg(long, env = "PARLEY_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,
    /// Frames a connection may have in flight before the server stops reading it [default: 256].
    #[arg(long, env = "PARLEY_MAX_PIPELINE")]
    pub max_pipeline: Option<usize>,
    /// Most open WebSocket connections [default: 500000].
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Milliseconds a new WebSocket has to authenticate [default: 10000].
    #[arg(long, env = "PARLEY_AUTH_TIMEOUT_MS")]
    pub auth_timeout_ms: Option<u64>,
    /// Milliseconds between pings of an idle connection [default: 30000].
    #[arg(long, env = "PARLEY_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// Milliseconds of silence after which a connection is closed as dead [default: 90000].
    #[arg(long, env = "PARLEY_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Most milliseconds a graceful shutdown waits for connections and writes [default: 8000].
    #[arg(long, env = "PARLEY_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Password hashes computed at once [default: 2].
    #[arg(long, env = "PARLEY_PASSWORD_HASH_CONCURRENCY")]
    pub password_hash_concurrency: Option<usize>,
    /// Token that enables the admin API (/v1/admin/...) [default: none, admin API off].
    #[arg(long, env = "PARLEY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Groups with more members than this fan out on the worker pool [default: 64].
    #[arg(long, env = "PARLEY_FANOUT_WORKER_THRESHOLD")]
    pub fanout_worker_threshold: Option<usize>,
    /// Fanout worker tasks [default: 4].
    #[arg(long, env = "PARLEY_FANOUT_WORKERS")]
    pub fanout_workers: Option<usize>,
    /// Shortest interval between receipt pushes per conversation, in ms [default: 250].
    #[arg(long, env = "PARLEY_RECEIPT_INTERVAL_MS")]
    pub receipt_interval_ms: Option<u64>,
    /// Ms after a user's last device leaves before they show offline (damps flapping) [default: 5000].
    #[arg(long, env = "PARLEY_PRESENCE_GRACE_MS")]
    pub presence_grace_ms: Option<u64>,
    /// Shortest interval between forwarded `typing` frames per connection and conversation, in ms [default: 3000].
    #[arg(long, env = "PARLEY_TYPING_INTERVAL_MS")]
    pub typing_interval_ms: Option<u64>,
    /// Ms within which further messages to a device and conversation merge into one push [default: 2000].
    #[arg(long, env = "PARLEY_PUSH_COALESCE_MS")]
    pub push_coalesce_ms: Option<u64>,
    /// Accept Web Push/UnifiedPush endpoints on loopback and private addresses.
    #[arg(long, env = "PARLEY_PUSH_ALLOW_PRIVATE_ENDPOINTS")]
    pub push_allow_private_endpoints: bool,
    /// Seconds a provider keeps a push for an unreachable device [default: 86400].
    #[arg(long, env = "PARLEY_PUSH_TTL_SECS")]
    pub push_ttl_secs: Option<u64>,
    /// Most pushes per device per minute [default: 30].
    #[arg(long, env = "PARLEY_PUSH_DEVICE_PER_MINUTE")]
    pub push_device_per_minute: Option<u32>,
    /// Pushes in flight at once [default: 256].
    #[arg(long, env = "PARLEY_PUSH_CONCURRENCY")]
    pub push_concurrency: Option<usize>,
    /// Ms a node holds a claimed push before another node may take it [default: 30000].
    #[arg(long, env = "PARLEY_PUSH_LEASE_MS")]
    pub push_lease_ms: Option<u64>,
    /// Ms a provider has to answer a push [default: 10000].
    #[arg(long, env = "PARLEY_PUSH_TIMEOUT_MS")]
    pub push_timeout_ms: Option<u64>,
    /// The contact in VAPID tokens (mailto: or https:) [default: mailto:parley@localhost].
    #[arg(long, env = "PARLEY_PUSH_VAPID_SUBJECT")]
    pub push_vapid_subject: Option<String>,
    /// APNs: the .p8 key file from Apple (Keys → Apple Push Notifications service).
    #[arg(long, env = "PARLEY_APNS_KEY_FILE")]
    pub apns_key_file: Option<PathBuf>,
    /// APNs: the key's 10-character Key ID.
    #[arg(long, env = "PARLEY_APNS_KEY_ID")]
    pub apns_key_id: Option<String>,
    /// APNs: the 10-character Team ID.
    #[arg(long, env = "PARLEY_APNS_TEAM_ID")]
    pub apns_team_id: Option<String>,
    /// APNs: the app's bundle id (the apns-topic).
    #[arg(long, env = "PARLEY_APNS_TOPIC")]
    pub apns_topic: Option<String>,
    /// APNs: another base URL than Apple's (a local fake in tests).
    #[arg(long, env = "PARLEY_APNS_URL")]
    pub apns_url: Option<String>,
    /// APNs: extra CA certificates (PEM) to trust, for a fake with its own CA.
    #[arg(long, env = "PARLEY_APNS_CA_FILE")]
    pub apns_ca_file: Option<PathBuf>,
    /// APNs: send background pushes (content-available, priority 5) instead of alerts.
    #[arg(long, env = "PARLEY_APNS_BACKGROUND")]
    pub apns_background: bool,
    /// FCM: the service account key file (JSON) from the Firebase console.
    #[arg(long, env = "PARLEY_FCM_SERVICE_ACCOUNT")]
    pub fcm_service_account: Option<PathBuf>,
    /// FCM: another base URL than Google's (a local fake in tests).
    #[arg(long, env = "PARLEY_FCM_URL")]
    pub fcm_url: Option<String>,
    /// Where uploads live: s3://bucket?endpoint=URL&region=R for an S3-compatible store
    /// (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) [default: files under --data-dir].
    #[arg(long, env = "PARLEY_MEDIA_STORE", hide_env_values = true)]
    pub media_store: Option<String>,
    /// The address clients reach this server at, e.g. https://chat.example.com (media URLs start
    /// with it) [default: http:// and the listening address].
    #[arg(long, env = "PARLEY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest upload, in bytes [default: 104857600].
    #[arg(long, env = "PARLEY_MEDIA_MAX_BYTES")]
    pub media_max_bytes: Option<u64>,
    /// Uploads a user may start per minute [default: 60].
    #[arg(long, env = "PARLEY_MEDIA_UPLOADS_PER_MINUTE")]
    pub media_uploads_per_minute: Option<u32>,
    /// Uploads a user may start in a burst above that rate [default: 30].
    #[arg(long, env = "PARLEY_MEDIA_UPLOAD_BURST")]
    pub media_upload_burst: Option<u32>,
    /// Bytes a user may upload in any 24 hours [default: 4294967296].
    #[arg(long, env = "PARLEY_MEDIA_DAILY_BYTES")]
    pub media_daily_bytes: Option<u64>,
    /// Ms after upload when media no message references is removed [default: 86400000].
    #[arg(long, env = "PARLEY_MEDIA_ORPHAN_AFTER_MS")]
    pub media_orphan_after_ms: Option<u64>,
    /// Ms between runs of the media collector [default: 60000].
    #[arg(long, env = "PARLEY_MEDIA_GC_INTERVAL_MS")]
    pub media_gc_interval_ms: Option<u64>,
    /// Ms upload and download URLs stay valid, at most 900000 [default: 900000].
    #[arg(long, env = "PARLEY_MEDIA_URL_TTL_MS")]
    pub media_url_ttl_ms: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct MigrateArgs {
    /// PostgreSQL URL (postgres://user@host/db).
    #[arg(long, env = "PARLEY_STORE", hide_env_values = true)]
    pub store: String,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ServerArg {
    /// Server address.
    #[arg(long, env = "PARLEY_SERVER", default_value = "http://127.0.0.1:7700")]
    pub server: String,
}

/// A running server and its admin token (load scenarios make their accounts through the admin
/// API).
#[derive(Args, Debug, Clone)]
pub(crate) struct AdminTarget {
    /// The server's admin token.
    #[arg(long, env = "PARLEY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AccountCommand {
    /// Create an account (prompts for the password unless --password is given).
    Create {
        username: String,
        #[arg(long)]
        display_name: Option<String>,
        /// The password (read from PARLEY_PASSWORD, or asked for, when absent).
        #[arg(long, env = "PARLEY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Args, Debug)]
pub(crate) struct LoginArgs {
    pub username: String,
    #[arg(long, env = "PARLEY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Name of this device as shown in the device list.
    #[arg(long, default_value = "parley cli")]
    pub device_name: String,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Args, Debug)]
pub(crate) struct SendArgs {
    /// Username of the recipient.
    pub to: String,
    /// The message text.
    pub text: String,
    /// Start an end-to-end encrypted direct conversation if there is none yet (and refuse to
    /// send if the existing one is not encrypted). The device's keys live next to the session
    /// file: `e2ee-DEVICE.db`, sealed with the random key in `e2ee.key` (mode 0600).
    #[arg(long)]
    pub encrypted: bool,
}

#[derive(Args, Debug)]
pub(crate) struct SendFileArgs {
    /// Username of the recipient.
    pub to: String,
    /// The file to send.
    pub path: PathBuf,
    /// A caption shown with it.
    #[arg(long)]
    pub caption: Option<String>,
    /// Its MIME type [default: from the file name's extension].
    #[arg(long)]
    pub content_type: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub(crate) struct DownloadArgs {
    /// The media id (shown by `parley watch`).
    pub media_id: String,
    /// Where to write the file.
    pub path: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// Stop after this many messages (default: run until interrupted).
    #[arg(long)]
    pub count: Option<usize>,
}
