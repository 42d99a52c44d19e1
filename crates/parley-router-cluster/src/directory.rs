//! The session directory and cluster presence in Redis.
//!
//! Keys, all under `parley:<cluster>:` so clusters (and test runs) never meet:
//! - `dir:<user>`: a sorted set of the nodes where the user has connections, each scored by the
//!   Redis-clock millisecond at which the entry expires. A node refreshes its users every few
//!   seconds; a dead node's entries simply run out. When a node's last connection of a user
//!   closes, its member `node` becomes `~node`, scored to expire after the presence grace period:
//!   the user still counts as online (no flap for a quick reconnect) but frames no longer go there.
//! - `online`: a sorted set of users scored by their latest entry's expiry, for the sweeper that
//!   notices users whose every entry ran out (their node died) and marks them offline.
//! - `ps:<user>`: a hash, the user's cluster-wide presence: `on` (1/0), `ls` (last seen, wall
//!   clock ms), `v` (version: strictly growing per user, at least Redis's clock in microseconds so
//!   it keeps growing even after Redis lost its data).
//! - `node:<node>`: a marker each node sets; finding it gone means Redis lost our entries (it
//!   keeps nothing on disk), so the node re-registers everyone and has its connections resync.
//!
//! Every operation is one Lua script (one round trip, atomic, on Redis's own clock, so nodes'
//! clocks need not agree). Scripts build their keys from the prefix, so this expects one Redis
//! (or a primary with replicas), not Redis Cluster.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parley_core::ids::{DeviceId, UserId};
use redis::Script;
use redis::aio::ConnectionManager;

use parley_router::PresenceState;

/// How long a `ps:` record outlives the last change to it.
const STATE_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

const TIME: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function version(ps)
  return math.max(tonumber(redis.call('HGET', ps, 'v') or '0') + 1, now_us)
end
local function int(x) return string.format('%d', x) end
";

/// ARGV: prefix, node, ttl, grace, state ttl, check marker (0/1), then (op, user, at) triples
/// where op `r` registers and `l` lingers (the node's last connection closed at `at`).
/// Returns: lost marker (0/1), then (user, version) for each user who came online.
const WRITE: &str = r"
local p, node = ARGV[1], ARGV[2]
local ttl, grace, state_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local linger = '~' .. node
local lost = '0'
if ARGV[6] == '1' then
  local marker = p .. ':node:' .. node
  if redis.call('SET', marker, int(now), 'NX', 'PX', 86400000) then lost = '1'
  else redis.call('PEXPIRE', marker, 86400000) end
end
local out = {lost}
local i = 7
while i <= #ARGV do
  local op, user, at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local dir, ps = p .. ':dir:' .. user, p .. ':ps:' .. user
  if op == 'r' then
    redis.call('ZADD', dir, now + ttl, node)
    redis.call('ZREM', dir, linger)
    redis.call('ZADD', p .. ':online', 'GT', now + ttl, user)
    if redis.call('HGET', ps, 'on') ~= '1' then
      local v = version(ps)
      redis.call('HSET', ps, 'on', '1', 'v', int(v))
      table.insert(out, user)
      table.insert(out, int(v))
    end
  else
    redis.call('ZREM', dir, node)
    redis.call('ZADD', dir, now + grace, linger)
    if at > tonumber(redis.call('HGET', ps, 'ls') or '0') then redis.call('HSET', ps, 'ls', int(at)) end
  end
  redis.call('PEXPIRE', dir, ttl + grace + 60000)
  redis.call('PEXPIRE', ps, state_ttl)
end
return out
";

/// ARGV: prefix, users. Returns for each user the count of nodes with a live entry, then them.
const LOOKUP: &str = r"
local p = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local live = {}
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', p .. ':dir:' .. ARGV[i], '(' .. int(now), '+inf')) do
    if string.sub(n, 1, 1) ~= '~' then table.insert(live, n) end
  end
  table.insert(out, tostring(#live))
  for _, n in ipairs(live) do table.insert(out, n) end
end
return out
";

/// ARGV: prefix, node, user, at, state ttl. Called by `node` once its grace period for `user` is
/// over. Returns {0} while another entry is live, else {1, last seen, version} when this made the
/// user offline (state `on` was 1, or lost with Redis's data).
const OFFLINE: &str = r"
local p, node, user, at = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local dir, ps = p .. ':dir:' .. user, p .. ':ps:' .. user
local linger = '~' .. node
for _, n in ipairs(redis.call('ZRANGEBYSCORE', dir, '(' .. int(now), '+inf')) do
  if n ~= linger then return {'0'} end
end
redis.call('ZREM', dir, linger)
if redis.call('ZCARD', dir) == 0 then redis.call('ZREM', p .. ':online', user) end
if redis.call('HGET', ps, 'on') == '0' then return {'0'} end
local ls = math.max(tonumber(redis.call('HGET', ps, 'ls') or '0'), at)
local v = version(ps)
redis.call('HSET', ps, 'on', '0', 'ls', int(ls), 'v', int(v))
redis.call('PEXPIRE', ps, tonumber(ARGV[5]))
return {'1', int(ls), int(v)}
";

/// ARGV: prefix, ttl, limit, state ttl. Takes users whose every entry has expired off the online
/// set and marks them offline. Returns (user, last seen, version) per change.
const SWEEP: &str = r"
local p, ttl, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', p .. ':online', '-inf', int(now), 'LIMIT', 0, limit)) do
  local dir, ps = p .. ':dir:' .. user, p .. ':ps:' .. user
  local top = redis.call('ZREVRANGE', dir, 0, 0, 'WITHSCORES')
  if #top > 0 and tonumber(top[2]) > now then
    redis.call('ZADD', p .. ':online', top[2], user)
  else
    redis.call('ZREM', p .. ':online', user)
    redis.call('DEL', dir)
    if redis.call('HGET', ps, 'on') == '1' then
      local ls = tonumber(redis.call('HGET', ps, 'ls') or '0')
      -- A node that died with the user connected refreshed last about one ttl before expiry.
      if #top > 0 and string.sub(top[1], 1, 1) ~= '~' then ls = math.max(ls, tonumber(top[2]) - ttl) end
      if ls == 0 then ls = now end
      local v = version(ps)
      redis.call('HSET', ps, 'on', '0', 'ls', int(ls), 'v', int(v))
      redis.call('PEXPIRE', ps, tonumber(ARGV[4]))
      table.insert(out, user)
      table.insert(out, int(ls))
      table.insert(out, int(v))
    end
  end
end
return out
";

/// ARGV: prefix, users. Returns (online 0/1, last seen or -1, version) per user. Online means a
/// live entry (lingering ones included), whatever `on` says: a user whose node died reads as
/// offline even before a sweep has recorded it.
const STATES: &str = r"
local p = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local s = redis.call('HMGET', p .. ':ps:' .. ARGV[i], 'ls', 'v')
  local live = redis.call('ZCOUNT', p .. ':dir:' .. ARGV[i], '(' .. int(now), '+inf') > 0
  table.insert(out, live and '1' or '0')
  table.insert(out, s[1] or '-1')
  table.insert(out, s[2] or '0')
end
return out
";

/// One directory operation of a batch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// This node has connections of the user.
    Register(UserId),
    /// This node's last connection of the user closed at this wall-clock millisecond.
    Linger(UserId, i64),
}

/// What a write batch reported.
pub(crate) struct Written {
    /// The node's marker was missing: Redis lost its entries (or this is the first write).
    pub lost: bool,
    /// Users who came online cluster-wide, with their new version.
    pub online: Vec<PresenceState>,
}

#[derive(Clone)]
pub(crate) struct Directory {
    conn: ConnectionManager,
    prefix: String,
    node: String,
    ttl_ms: u64,
    grace_ms: u64,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    write: Script,
    lookup: Script,
    offline: Script,
    sweep: Script,
    states: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{TIME}{body}"))
}

impl Directory {
    pub(crate) fn new(conn: ConnectionManager, prefix: String, node: String, ttl: Duration, grace: Duration) -> Self {
        Directory {
            conn,
            prefix,
            node,
            ttl_ms: ttl.as_millis() as u64,
            grace_ms: grace.as_millis() as u64,
            scripts: std::sync::Arc::new(Scripts {
                write: script(WRITE),
                lookup: script(LOOKUP),
                offline: script(OFFLINE),
                sweep: script(SWEEP),
                states: script(STATES),
            }),
        }
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Applies `ops` in order in one round trip.
    pub(crate) async fn write(&self, ops: &[Op], check_marker: bool) -> redis::RedisResult<Written> {
        let mut inv = self.scripts.write.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(&self.node)
            .arg(self.ttl_ms)
            .arg(self.grace_ms)
            .arg(STATE_TTL_MS)
            .arg(u8::from(check_marker));
        for op in ops {
            match *op {
                Op::Register(u) => inv.arg("r").arg(u.0).arg(0),
                Op::Linger(u, at) => inv.arg("l").arg(u.0).arg(at),
            };
        }
        let out: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        let lost = out.first().is_some_and(|s| s == "1");
        let online = out[1.min(out.len())..]
            .chunks_exact(2)
            .filter_map(|c| {
                Some(PresenceState {
                    user_id: c[0].parse().ok()?,
                    online: true,
                    last_seen: None,
                    version: c[1].parse().ok()?,
                })
            })
            .collect();
        Ok(Written { lost, online })
    }

    fn devices_key(&self, node: &str) -> String {
        format!("{}:devs:{node}", self.prefix)
    }

    /// Marks `device` as connected on this node (a set per node, read only for nodes whose
    /// directory entries are live, so a dead node's set is never believed).
    pub(crate) async fn add_device(&self, device: DeviceId) -> redis::RedisResult<()> {
        redis::cmd("SADD").arg(self.devices_key(&self.node)).arg(device.0).query_async(&mut self.conn.clone()).await
    }

    pub(crate) async fn remove_device(&self, device: DeviceId) -> redis::RedisResult<()> {
        redis::cmd("SREM").arg(self.devices_key(&self.node)).arg(device.0).query_async(&mut self.conn.clone()).await
    }

    /// Forgets this node's devices (at start: whatever an earlier run left is stale).
    pub(crate) async fn clear_devices(&self) -> redis::RedisResult<()> {
        redis::cmd("DEL").arg(self.devices_key(&self.node)).query_async(&mut self.conn.clone()).await
    }

    /// For each `(node, device)`, whether the node has the device marked connected.
    pub(crate) async fn devices_on(&self, pairs: &[(&str, DeviceId)]) -> redis::RedisResult<Vec<bool>> {
        let mut pipe = redis::pipe();
        for (node, device) in pairs {
            pipe.cmd("SISMEMBER").arg(self.devices_key(node)).arg(device.0);
        }
        pipe.query_async(&mut self.conn.clone()).await
    }

    /// The nodes (other than lingering ones) where each of `users` has connections.
    pub(crate) async fn lookup(&self, users: &[UserId]) -> redis::RedisResult<HashMap<UserId, Vec<String>>> {
        let mut inv = self.scripts.lookup.prepare_invoke();
        inv.arg(&self.prefix);
        for &u in users {
            inv.arg(u.0);
        }
        let out: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        let mut map = HashMap::with_capacity(users.len());
        let mut it = out.into_iter();
        for &u in users {
            let n: usize = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let nodes: Vec<String> = it.by_ref().take(n).collect();
            if !nodes.is_empty() {
                map.insert(u, nodes);
            }
        }
        Ok(map)
    }

    /// This node's grace period for `user` (last seen `at`) is over: the change if they are now
    /// offline everywhere.
    pub(crate) async fn offline(&self, user: UserId, at: i64) -> redis::RedisResult<Option<PresenceState>> {
        let out: Vec<String> = self
            .scripts
            .offline
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(&self.node)
            .arg(user.0)
            .arg(at)
            .arg(STATE_TTL_MS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        if out.first().map(String::as_str) != Some("1") || out.len() < 3 {
            return Ok(None);
        }
        Ok(Some(PresenceState {
            user_id: user,
            online: false,
            last_seen: out[1].parse().ok(),
            version: out[2].parse().unwrap_or(0),
        }))
    }

    /// Marks offline up to `limit` users whose every entry expired (their node is gone).
    pub(crate) async fn sweep(&self, limit: usize) -> redis::RedisResult<Vec<PresenceState>> {
        let out: Vec<String> = self
            .scripts
            .sweep
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(self.ttl_ms)
            .arg(limit)
            .arg(STATE_TTL_MS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(out
            .chunks_exact(3)
            .filter_map(|c| {
                Some(PresenceState {
                    user_id: c[0].parse().ok()?,
                    online: false,
                    last_seen: c[1].parse().ok(),
                    version: c[2].parse().ok()?,
                })
            })
            .collect())
    }

    pub(crate) async fn states(&self, users: &[UserId]) -> redis::RedisResult<Vec<PresenceState>> {
        let mut inv = self.scripts.states.prepare_invoke();
        inv.arg(&self.prefix);
        for &u in users {
            inv.arg(u.0);
        }
        let out: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(users
            .iter()
            .zip(out.chunks_exact(3))
            .map(|(&user_id, c)| PresenceState {
                user_id,
                online: c[0] == "1",
                last_seen: c[1].parse().ok().filter(|&t: &i64| t >= 0),
                version: c[2].parse().unwrap_or(0),
            })
            .collect())
    }

    /// Round trip of a `PING`.
    pub(crate) async fn ping(&self) -> redis::RedisResult<Duration> {
        let started = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await?;
        Ok(started.elapsed())
    }

    /// Deletes every key of this cluster (tests; a cluster being decommissioned).
    pub(crate) async fn purge(&self) -> redis::RedisResult<()> {
        delete_matching(&mut self.conn.clone(), &format!("{}:*", self.prefix)).await
    }
}

/// Deletes every key matching `pattern`, a thousand at a time (SCAN, never KEYS: a large
/// directory must not block Redis).
pub(crate) async fn delete_matching(
    conn: &mut impl redis::aio::ConnectionLike,
    pattern: &str,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).query_async(conn).await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
