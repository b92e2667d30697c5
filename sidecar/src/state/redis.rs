//! State in Redis, shared by every sidecar that points at it.
//!
//! Budgets: one counter per window and one hash per reservation, changed only by Lua scripts, so a
//! reserve or settle is atomic across sidecars and idempotent per request id.
//!
//! Cache: an entry is a hash (`v` value, `t` created, `e` vector as little-endian f32) with a TTL.
//! Entries with a vector are also listed in LSH bucket sets; a semantic lookup reads the sets of the
//! probed buckets and compares only those candidates (see `lsh.rs` and the sidecar README for the
//! measured recall and cost).

use super::lsh::Lsh;
use super::{Lookup, StateError, Store, Window, miss};
use crate::model::cosine;
use inference_proto::v1::{
    CacheLookupResponse, ReserveResponse, SettleResponse, cache_lookup_response::Outcome as CacheOutcome,
    settle_response::Outcome as SettleOutcome,
};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use std::sync::OnceLock;

const RESERVE: &str = r"
-- KEYS[1] window counter, KEYS[2] reservation; ARGV: tokens, limit, ttl, reset_at
if redis.call('EXISTS', KEYS[2]) == 1 then
  local r = redis.call('HMGET', KEYS[2], 'allowed', 'limit', 'reset_at')
  return {tonumber(r[1]), tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(r[2]), tonumber(r[3]), 1}
end
local tokens, limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local allowed = 0
if used + tokens <= limit then
  used = redis.call('INCRBY', KEYS[1], tokens)
  redis.call('EXPIRE', KEYS[1], ttl)
  allowed = 1
end
redis.call('HSET', KEYS[2], 'window', KEYS[1], 'reserved', allowed * tokens, 'allowed', allowed,
           'settled', 0, 'limit', limit, 'reset_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], ttl)
return {allowed, used, limit, tonumber(ARGV[4]), 0}
";

const SETTLE: &str = r"
-- KEYS[1] reservation; ARGV: actual tokens, tombstone ttl. Returns {outcome, used}: 1 settled,
-- 2 duplicate, 3 unknown. An unknown id leaves a settled, denied tombstone, so a reserve that arrives
-- after its own release (a slow call the filter gave up on) charges nothing.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'window', '', 'reserved', 0, 'allowed', 0, 'settled', 1, 'limit', 0, 'reset_at', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {3, 0}
end
local r = redis.call('HMGET', KEYS[1], 'window', 'reserved', 'allowed', 'settled')
if r[4] == '1' then return {2, tonumber(redis.call('GET', r[1]) or '0')} end
redis.call('HSET', KEYS[1], 'settled', 1)
if r[3] ~= '1' then return {1, tonumber(redis.call('GET', r[1]) or '0')} end
local delta = tonumber(ARGV[1]) - tonumber(r[2])
local used = redis.call('INCRBY', r[1], delta)
if used < 0 then redis.call('SET', r[1], 0, 'KEEPTTL') used = 0 end
return {1, used}
";

pub struct RedisState {
    conn: ConnectionManager,
    prefix: String,
    lsh_tables: usize,
    lsh_bits: usize,
    lsh_seed: u64,
    lsh: OnceLock<Lsh>,
    reserve: Script,
    settle: Script,
}

/// Unambiguous namespace for a scope and model: lengths prefix the parts, so no choice of names can
/// make one tenant's keys collide with another's.
fn ns(scope: &str, model: &str) -> String {
    format!("{}:{scope}|{}:{model}", scope.len(), model.len())
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl RedisState {
    pub async fn connect(
        url: &str,
        prefix: &str,
        lsh_tables: usize,
        lsh_bits: usize,
        lsh_seed: u64,
    ) -> Result<Self, StateError> {
        use redis::IntoConnectionInfo;
        // Lookups are small request/response exchanges: without TCP_NODELAY, Nagle's algorithm
        // and delayed ACKs add ~40 ms to the second round trip of a semantic hit.
        let info = url
            .into_connection_info()?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            lsh_tables,
            lsh_bits,
            lsh_seed,
            lsh: OnceLock::new(),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
        })
    }

    fn lsh(&self, dim: usize) -> Option<&Lsh> {
        let l = self
            .lsh
            .get_or_init(|| Lsh::new(dim, self.lsh_tables, self.lsh_bits, self.lsh_seed));
        (l.dim() == dim).then_some(l)
    }

    pub async fn reserve(
        &self,
        request_id: &str,
        w: &Window,
        tokens: u64,
        limit: u64,
        now: u64,
    ) -> Result<ReserveResponse, StateError> {
        let mut conn = self.conn.clone();
        let now_reset_at = now + w.reset;
        let r: Vec<i64> = self
            .reserve
            .key(format!("{}b:w:{}", self.prefix, w.key))
            .key(format!("{}b:r:{request_id}", self.prefix))
            .arg(tokens)
            .arg(limit)
            .arg(w.ttl)
            .arg(now_reset_at)
            .invoke_async(&mut conn)
            .await?;
        let [allowed, used, limit, reset_at, duplicate] = r[..] else {
            return Err(StateError::Protocol(format!("reserve returned {r:?}")));
        };
        Ok(ReserveResponse {
            allowed: allowed == 1,
            used: used.max(0) as u64,
            limit: limit.max(0) as u64,
            reset_seconds: (reset_at.max(0) as u64).saturating_sub(now),
            duplicate: duplicate == 1,
        })
    }

    pub async fn settle(&self, request_id: &str, actual: u64) -> Result<SettleResponse, StateError> {
        let mut conn = self.conn.clone();
        let r: Vec<i64> = self
            .settle
            .key(format!("{}b:r:{request_id}", self.prefix))
            .arg(actual)
            .arg(super::TOMBSTONE_TTL_SECS)
            .invoke_async(&mut conn)
            .await?;
        let [outcome, used] = r[..] else {
            return Err(StateError::Protocol(format!("settle returned {r:?}")));
        };
        let outcome = match outcome {
            1 => SettleOutcome::Settled,
            2 => SettleOutcome::Duplicate,
            _ => SettleOutcome::Unknown,
        };
        Ok(SettleResponse {
            outcome: outcome as i32,
            used: used.max(0) as u64,
        })
    }

    fn entry_key(&self, ns: &str, key: &str) -> String {
        format!("{}c:{ns}:e:{key}", self.prefix)
    }

    fn bucket_key(&self, ns: &str, table: usize, bucket: u32) -> String {
        format!("{}c:{ns}:l:{table}:{bucket}", self.prefix)
    }

    pub async fn lookup(&self, q: &Lookup<'_>, now: u64) -> Result<CacheLookupResponse, StateError> {
        let mut conn = self.conn.clone();
        let ns = ns(q.scope, q.model);
        if !q.key.is_empty() {
            let (v, t): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
                .arg(self.entry_key(&ns, q.key))
                .arg("v")
                .arg("t")
                .query_async(&mut conn)
                .await?;
            if let Some(value) = v {
                return Ok(CacheLookupResponse {
                    outcome: CacheOutcome::ExactHit as i32,
                    value,
                    similarity: 1.0,
                    age_seconds: now.saturating_sub(t.unwrap_or(now)),
                    key: q.key.to_owned(),
                });
            }
        }
        let Some(v) = q.vector else { return Ok(miss()) };
        let Some(lsh) = self.lsh(v.len()) else {
            return Ok(miss());
        };
        let sets: Vec<String> = lsh
            .probes(v)
            .into_iter()
            .map(|(t, b)| self.bucket_key(&ns, t, b))
            .collect();
        let candidates: Vec<String> = conn.sunion(&sets).await?;
        if candidates.is_empty() {
            return Ok(miss());
        }
        let mut pipe = redis::pipe();
        for c in &candidates {
            pipe.hget(self.entry_key(&ns, c), "e");
        }
        // Only the embeddings travel for every candidate; the winner's value is fetched after.
        let rows: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
        let mut best: Option<(f32, usize)> = None;
        let mut stale = Vec::new();
        for (i, e) in rows.iter().enumerate() {
            let Some(e) = e else {
                stale.push(i);
                continue;
            };
            let sim = cosine(&bytes_vector(e), v);
            if sim >= q.threshold && best.is_none_or(|b| sim > b.0) {
                best = Some((sim, i));
            }
        }
        if !stale.is_empty() {
            // Expired entries leave their ids in bucket sets; drop them as they are found.
            let mut pipe = redis::pipe();
            for s in &sets {
                let ids: Vec<&String> = stale.iter().filter_map(|&i| candidates.get(i)).collect();
                pipe.srem(s, ids).ignore();
            }
            let _: Result<(), _> = pipe.query_async(&mut conn).await;
        }
        let Some((sim, i)) = best else { return Ok(miss()) };
        let Some(key) = candidates.get(i) else {
            return Ok(miss());
        };
        let (v, t): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.entry_key(&ns, key))
            .arg("v")
            .arg("t")
            .query_async(&mut conn)
            .await?;
        // The entry may have expired between the two round trips.
        let Some(value) = v else { return Ok(miss()) };
        Ok(CacheLookupResponse {
            outcome: CacheOutcome::SemanticHit as i32,
            value,
            similarity: sim,
            age_seconds: now.saturating_sub(t.unwrap_or(now)),
            key: key.clone(),
        })
    }

    pub async fn store(&self, s: Store, now: u64) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let ns = ns(&s.scope, &s.model);
        let ek = self.entry_key(&ns, &s.key);
        let ttl = s.ttl.max(1);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&ek).ignore();
        pipe.hset(&ek, "v", s.value).ignore().hset(&ek, "t", now).ignore();
        if let Some(v) = &s.vector {
            pipe.hset(&ek, "e", vector_bytes(v)).ignore();
            if let Some(lsh) = self.lsh(v.len()) {
                for (t, b) in lsh.buckets(v).into_iter().enumerate() {
                    let bk = self.bucket_key(&ns, t, b);
                    pipe.sadd(&bk, &s.key).ignore();
                    // A bucket set lives as long as its longest-lived entry: set a TTL on a new
                    // set, only ever extend it on an existing one.
                    pipe.cmd("EXPIRE").arg(&bk).arg(ttl).arg("NX").ignore();
                    pipe.cmd("EXPIRE").arg(&bk).arg(ttl).arg("GT").ignore();
                }
            }
        }
        pipe.expire(&ek, ttl as i64).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(true)
    }
}
