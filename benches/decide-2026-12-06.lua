-- decide.lua as it stood when issue #15 was filed (commit da91cf2, 2026-12-06), kept unchanged as
-- the baseline of batched admission: "2x the single-call EVALSHA ceiling of today's script".
-- scripts/bench times it with redis-benchmark exactly as it was called then (10 keys, 23
-- arguments); the worker never runs it. See BENCHMARKS.md, "Batched admission".
--[[
decide.lua: claim an incident id and check (and possibly reserve) every guardrail, atomically.

One script, one round trip: the idempotency claim and the reservation cannot be separated by a
crash or by another replica. Time is Redis `TIME`, never a worker's clock, so every replica
agrees on every window. Mirrors `MemoryStore::decide` (src/guardrails/memory.rs) line by line.

KEYS (all under the one hash tag `{<key_prefix>}:`, so this is a single-slot script in Cluster)
  1  inc:<incident>            hash    state claimed|executing|interrupted|done, worker, attempt,
                                       lease_until, source, outcomes, answer (JSON of this
                                       attempt's reply), answer_mode (the mode it answered),
                                       acted_by (interrupted: the worker whose action may have run)
  2  rate:<runbook>:<service>  zset    member incident id, score reservation time (ms)
  3  cb:<runbook>              hash    state CLOSED|OPEN|HALF_OPEN, failures, opened_at, probe
  4  leases                    zset    member attempt, score lease expiry (ms); in-flight actions
  5  services                  zset    member service, score last touched (ms)
  6  rbsvc:<runbook>           zset    member service, score last touched by this runbook (ms)
  7  epoch                     string  generation id of the store's data
  8  conservative_until        string  ms; also marks "this generation's loss was noticed"
  9  primary                   string  replication id of the primary that served the last decision
  10 trate:<runbook>:<target>  zset    like rate:, per the action's target (namespace/kind/name)

ARGV
  1  incident id          2  attempt              3  worker
  4  source               5  has_source 0|1       6  lease_ms
  7  claim_grace_ms (claimed records live lease_ms + this)
  8  mode record|check|reserve|dry_run
  9  outcomes (record)
  10 ttl_ms: the idempotency TTL. A done record lives this long; so does the record of an action
     that started (executing, interrupted), at least, so a redelivery however late within it is
     Interrupted or Duplicate, never run again.
  11 service              12 max_per_hour         13 rate_window_ms
  14 cooldown_ms          15 recovery_ms          16 max_concurrent_actions
  17 max_affected_services                        18 services_window_ms
  19 runbook_max_services (the runbook's blast_radius_limit; 0 = no per-runbook limit)
  20 conservative_ms      21 remembered epoch ('' = none yet)
  22 candidate epoch (a fresh uuid, used if this call creates the epoch)
  23 target: what the action touches, `<namespace>/<kind>/<name>` ('' = none: KEYS[10] unused)

Returns a flat array of strings, { epoch, kind, fields... }; epoch is '' unless this call read it:
  { epoch, 'recorded' }
  { epoch, 'allowed', probe 0|1, conservative 0|1 }
  { epoch, 'blocked', guardrail, detail }
  { epoch, 'duplicate', outcomes, same_source 0|1 }
  { epoch, 'in_progress', worker, retry_after_ms }
  { epoch, 'interrupted', worker }
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function fmt(n)
  return string.format('%d', n)
end
-- Whole seconds for humans, rounded up so "0s remaining" never appears while still blocked.
local function ceil_s(ms)
  return fmt(math.ceil(ms / 1000))
end

local K_INC, K_RATE, K_CB, K_LEASES, K_SERVICES, K_RBSVC, K_EPOCH, K_CONS, K_PRIMARY, K_TRATE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local incident, attempt, worker = ARGV[1], ARGV[2], ARGV[3]
local source, has_source = ARGV[4], ARGV[5] == '1'
local lease_ms, grace = tonumber(ARGV[6]), tonumber(ARGV[7])
local mode = ARGV[8]

local ttl = tonumber(ARGV[10])
local epoch = ''

-- Every answer of this attempt is cached in its record with the mode it answered, so a retry of
-- the same attempt in the same mode (after a timeout whose effect is unknown) gets the same
-- answer and never reserves twice. A cached `allowed` of a Reserve or dry run stands for the
-- lease it took, so it is replayed only while that lease lives (see step 1).
local function reply(answer)
  redis.call('HSET', K_INC, 'answer', cjson.encode(answer), 'answer_mode', mode)
  local out = { epoch }
  for i = 1, #answer do
    out[#out + 1] = answer[i]
  end
  return out
end

-- 1. Idempotency.
local rec = redis.call('HMGET', K_INC, 'state', 'worker', 'attempt', 'lease_until', 'source',
  'outcomes', 'answer', 'answer_mode', 'acted_by')
local r_state, r_worker, r_attempt, r_lease, r_source, r_outcomes, r_answer, r_mode, r_acted =
  rec[1], rec[2], rec[3], rec[4], rec[5], rec[6], rec[7], rec[8], rec[9]
local interrupted = nil
if r_state then
  local same = r_attempt == attempt and r_answer
  if same and r_mode == mode then
    local cached = cjson.decode(r_answer)
    -- An `allowed` that reserved is replayed only while its lease entry lives: once it expired,
    -- other decisions may have counted the slot as free and taken the probe, so replaying it
    -- would run a second probe or one action over the limit. The attempt never received it
    -- (else it would not ask again), so it decides afresh below like a change of mode.
    local lapsed = false
    if cached[1] == 'allowed' and (mode == 'reserve' or mode == 'dry_run') then
      local s = tonumber(redis.call('ZSCORE', K_LEASES, attempt))
      lapsed = s == nil or s <= now
    end
    if not lapsed then
      local out = { '' }
      for i = 1, #cached do
        out[#out + 1] = cached[i]
      end
      return out
    end
  end
  if r_state == 'done' then
    local same_src = has_source and r_source == source
    return { '', 'duplicate', r_outcomes or '[]', same_src and '1' or '0' }
  end
  if same then
    -- The same attempt asks again in another mode (its Reserve timed out, then the incident aged
    -- out and it asks to Record; or a Check became a Reserve after a promotion), or in the same
    -- mode after the lease of its cached `allowed` expired. It never received the cached answer,
    -- so it never acted on it: what that answer reserved is stale. Its lease (and with it any
    -- probe it took) is released, whatever the state (a dry run holds one while `claimed`); the
    -- rate-limit slot and cooldown stay counted (conservative). Then it decides afresh.
    redis.call('ZREM', K_LEASES, attempt)
  else
    local lease_until = tonumber(r_lease) or 0
    if lease_until > now then
      return { '', 'in_progress', r_worker or '', fmt(lease_until - now) }
    end
    -- The holder's lease expired: it crashed (or stalled past its lease). A claim that never
    -- started an action is simply taken over; one that may have acted must never act again.
    if r_state == 'executing' then
      interrupted = r_worker or ''
    end
  end
  -- Interrupted is sticky until an outcome is recorded: if the attempt that took over an
  -- interrupted action dies too, the next one is Interrupted again, never runs.
  if r_state == 'interrupted' then
    interrupted = r_acted or r_worker or ''
  end
end

-- Claim (fresh, or take over an expired claim). A claim lives lease + grace; an interrupted one
-- (an action may have run) at least the idempotency TTL, so a redelivery however late within it
-- still finds it and is Interrupted.
redis.call('DEL', K_INC)
local state = interrupted and 'interrupted' or 'claimed'
if has_source then
  redis.call('HSET', K_INC, 'state', state, 'worker', worker, 'attempt', attempt,
    'lease_until', fmt(now + lease_ms), 'source', source)
else
  redis.call('HSET', K_INC, 'state', state, 'worker', worker, 'attempt', attempt,
    'lease_until', fmt(now + lease_ms))
end
if interrupted then
  redis.call('HSET', K_INC, 'acted_by', interrupted)
  redis.call('PEXPIRE', K_INC, math.max(lease_ms + grace, ttl))
  return reply({ 'interrupted', interrupted })
end
redis.call('PEXPIRE', K_INC, lease_ms + grace)

-- 3. Record: the decision is final without guardrails.
if mode == 'record' then
  redis.call('HSET', K_INC, 'state', 'done', 'outcomes', ARGV[9])
  local r = reply({ 'recorded' })
  redis.call('PEXPIRE', K_INC, ttl)
  return r
end

-- A dry run takes the slots a real run would (so shadow mode shows what would be blocked) but
-- never the circuit's probe, and never moves the circuit: it is no evidence either way.
local reserve = mode == 'reserve' or mode == 'dry_run'
local real = mode == 'reserve'
local service = ARGV[11]
local max_per_hour, window, cooldown = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local recovery = tonumber(ARGV[15])
local max_concurrent, max_services = tonumber(ARGV[16]), tonumber(ARGV[17])
local services_window, rb_max_services = tonumber(ARGV[18]), tonumber(ARGV[19])
local conservative_ms = tonumber(ARGV[20])
local remembered, candidate = ARGV[21], ARGV[22]

local function blocked(guardrail, detail)
  return reply({ 'blocked', guardrail, detail })
end

-- 4a. Epoch. The epoch key is written once per generation of Redis data (SET NX at connect).
-- A worker that remembers an epoch and finds it missing knows the data was lost (restart without
-- persistence, failover that lost writes, FLUSHALL): counters, leases and circuits are gone, so
-- every circuit runs half-open for conservative_ms. A worker that remembers a different epoch
-- than the stored one knows the same (someone re-created the key after a loss); it declares
-- conservative mode unless that generation's loss was already noticed (conservative_until
-- exists; it has no TTL and only a data loss removes it), then adopts the stored epoch. A worker
-- that remembers nothing (Redis was down when it started) cannot tell a fresh deployment from a
-- loss and assumes fresh, like SET NX at connect.
local stored = redis.call('GET', K_EPOCH)
if not stored then
  if remembered ~= '' then
    stored = remembered
    redis.call('SET', K_CONS, fmt(now + conservative_ms))
  else
    stored = candidate
  end
  redis.call('SET', K_EPOCH, stored)
elseif remembered ~= '' and stored ~= remembered and redis.call('EXISTS', K_CONS) == 0 then
  redis.call('SET', K_CONS, fmt(now + conservative_ms))
end
epoch = stored

-- 4a'. Failover. A replica promoted to primary (Sentinel, Cluster failover, a manual REPLICAOF NO
-- ONE) keeps the data it had received, epoch included, so the epoch alone cannot tell that the
-- writes the old primary acknowledged last may be gone. The promoted node starts a new replication
-- history, though: its `master_replid` differs from the one stored by the decisions it inherited.
-- A changed id therefore means "possibly lost writes": conservative mode, as after a wipe. A
-- missing id is a first decision (or a wipe, handled above). A primary restarted from its own
-- persistence may also start a new id; being conservative then costs an hour of one-at-a-time
-- probes, never an extra execution.
-- pcall: a server that refuses INFO (renamed or denied by ACL) only loses this check.
local info = redis.pcall('INFO', 'replication')
local replid = type(info) == 'string' and string.match(info, 'master_replid:(%x+)') or ''
if replid ~= '' then
  local seen = redis.call('GET', K_PRIMARY)
  if seen ~= replid then
    if seen then
      redis.call('SET', K_CONS, fmt(now + conservative_ms))
    end
    redis.call('SET', K_PRIMARY, replid)
  end
end
local conservative = (tonumber(redis.call('GET', K_CONS)) or 0) > now

-- 4b. Circuit breaker.
local cb = redis.call('HMGET', K_CB, 'state', 'opened_at', 'probe')
local c_state, opened_at, probe = cb[1] or 'CLOSED', tonumber(cb[2]) or 0, cb[3]
local take_probe = false
if c_state == 'OPEN' then
  local wait = opened_at + recovery - now
  if wait > 0 then
    return blocked('circuit_open', 'circuit open (' .. ceil_s(wait) .. 's until half-open)')
  end
  -- Recovery passed: the first Reserve that passes every other guardrail becomes the probe
  -- (and moves the circuit to HALF_OPEN); a Check or a dry run only reports that it would be
  -- allowed.
  take_probe = real
elseif c_state == 'HALF_OPEN' or conservative then
  -- Exactly one probe: a probe is live while its attempt holds a live lease in `leases`, so
  -- the probe and its blast-radius lease expire (or are renewed) together. This script is
  -- atomic, so of any number of concurrent callers only the first sees no live probe.
  local live = false
  if probe then
    local s = tonumber(redis.call('ZSCORE', K_LEASES, probe))
    live = s ~= nil and s > now
  end
  if live then
    if c_state == 'HALF_OPEN' then
      return blocked('circuit_open', 'circuit half-open, probe in flight')
    end
    return blocked('circuit_open', 'circuit half-open (conservative mode), probe in flight')
  end
  take_probe = real
end

-- 4c/4d. Rate limit and cooldown, per (runbook, service) and per (runbook, target): both must
-- allow, so varying the free-text service for the same object, or the object under one
-- service, does not walk past either.
-- Rate limit: exact sliding window. An entry counts while now - score < window. Entries are kept
-- max(window, cooldown) because the cooldown reads the newest one.
local keep = math.max(window, cooldown, 1)
local target = ARGV[23] or ''
local function limit(key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - keep))
  local count = redis.call('ZCOUNT', key, '(' .. fmt(now - window), '+inf')
  if count >= max_per_hour then
    if max_per_hour <= 0 then
      return blocked('rate_limit', 'rate limit 0/hour reached (no executions allowed)')
    end
    -- The next slot frees when the entry that would bring the count below the limit leaves.
    local e = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now - window), '+inf', 'WITHSCORES',
      'LIMIT', count - max_per_hour, 1)
    local next_ms = window
    if e[2] then
      next_ms = tonumber(e[2]) + window - now
    end
    return blocked('rate_limit', 'rate limit ' .. fmt(max_per_hour) .. '/hour reached (next slot in '
      .. ceil_s(next_ms) .. 's)')
  end
  -- Cooldown since the newest execution.
  if cooldown > 0 then
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if newest[2] then
      local remaining = tonumber(newest[2]) + cooldown - now
      if remaining > 0 then
        return blocked('cooldown', 'cooldown active (' .. ceil_s(remaining) .. 's remaining)')
      end
    end
  end
  return nil
end
local verdict = limit(K_RATE)
if verdict then
  return verdict
end
if target ~= '' then
  verdict = limit(K_TRATE)
  if verdict then
    return verdict
  end
end

-- 4e. Blast radius: actions in flight (live leases), distinct services in the window, then
-- distinct services this runbook touched in the same window.
redis.call('ZREMRANGEBYSCORE', K_LEASES, '-inf', fmt(now))
if redis.call('ZCARD', K_LEASES) >= max_concurrent then
  return blocked('blast_radius', 'max concurrent actions (' .. fmt(max_concurrent) .. ') in flight')
end
redis.call('ZREMRANGEBYSCORE', K_SERVICES, '-inf', fmt(now - services_window))
if not redis.call('ZSCORE', K_SERVICES, service)
    and redis.call('ZCARD', K_SERVICES) >= max_services then
  return blocked('blast_radius', 'max affected services (' .. fmt(max_services)
    .. ') in window reached')
end
-- Trimmed and (on Reserve) touched whatever the limit, so a limit added to a runbook counts the
-- services it touched before the change.
redis.call('ZREMRANGEBYSCORE', K_RBSVC, '-inf', fmt(now - services_window))
if rb_max_services > 0 and not redis.call('ZSCORE', K_RBSVC, service)
    and redis.call('ZCARD', K_RBSVC) >= rb_max_services then
  local unit = rb_max_services == 1 and ' service' or ' services'
  return blocked('blast_radius', 'runbook blast radius (' .. fmt(rb_max_services) .. unit
    .. ' per window) reached')
end

-- 4f. Allowed. Reserve (and a dry run) takes every slot at once; Check leaves the incident
-- claimed only.
if reserve then
  -- Member is the incident id: re-reserving the same incident (after a NotRun finish) moves its
  -- entry instead of adding one, since it is still at most one execution.
  redis.call('ZADD', K_RATE, now, incident)
  redis.call('PEXPIRE', K_RATE, keep)
  if target ~= '' then
    redis.call('ZADD', K_TRATE, now, incident)
    redis.call('PEXPIRE', K_TRATE, keep)
  end
  redis.call('ZADD', K_LEASES, now + lease_ms, attempt)
  redis.call('ZADD', K_SERVICES, now, service)
  redis.call('ZADD', K_RBSVC, now, service)
  redis.call('PEXPIRE', K_RBSVC, math.max(services_window, 1))
  if take_probe then
    local next_state = c_state
    if c_state == 'OPEN' then
      next_state = 'HALF_OPEN'
    end
    redis.call('HSET', K_CB, 'state', next_state, 'probe', attempt)
  end
  -- Only a real action makes the incident `executing`: from now on its record lives at least the
  -- idempotency TTL, so however late a redelivery comes, it never runs the action again.
  if real then
    redis.call('HSET', K_INC, 'state', 'executing')
    redis.call('PEXPIRE', K_INC, math.max(lease_ms + grace, ttl))
  end
end
return reply({ 'allowed', take_probe and '1' or '0', conservative and '1' or '0' })
