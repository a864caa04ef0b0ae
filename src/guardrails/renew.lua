--[[
renew.lua: keep a running attempt's claim, blast-radius lease and probe alive.

Mirrors `MemoryStore::renew` (src/guardrails/memory/execution.rs). The probe has no lease of its own: it
is live exactly while its attempt's entry in `leases` is, so extending that entry extends both.

KEYS (one hash tag, see decide.lua)
  1  inc:<incident>   hash  incident record
  2  leases           zset  member attempt, score lease expiry (ms)
  3  cb:<runbook>     hash  circuit (only `probe` is read)

ARGV
  1  attempt
  2  lease_ms
  3  claim_grace_ms (the record lives at least lease_ms + this, as in decide.lua)
  4  max_concurrent_actions (the limit a lapsed lease is re-acquired under)

Returns a flat array of strings:
  { 'renewed' }                 claim and live lease extended
  { 'reacquired', probe 0|1 }   the lease had lapsed and was taken back (the limit allowed it);
                                probe: the circuit's probe still names this attempt, so it holds
                                the probe again (nobody took it meanwhile)
  { 'lapsed' }                  the lease had lapsed and the limit is full: the action runs
                                outside max_concurrent_actions; the claim is still extended. A
                                probe it held is given up (`probe` is cleared if it names the
                                attempt), so its result no longer moves the circuit
  { 'stale' }                   the attempt no longer owns the incident, it is done, or it already
                                finished (`finish` set): nothing changed, nothing re-acquired
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local K_INC, K_LEASES, K_CB = KEYS[1], KEYS[2], KEYS[3]
local attempt, lease_ms, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local max_concurrent = tonumber(ARGV[4])

-- A finished attempt (finish.lua cached its answer) released its lease: a late renewal (a
-- renewal task that outlived its execution) must never take one back.
local rec = redis.call('HMGET', K_INC, 'attempt', 'state', 'finish')
if rec[1] ~= attempt or rec[2] == 'done' or rec[3] then
  return { 'stale' }
end

redis.call('HSET', K_INC, 'lease_until', string.format('%d', now + lease_ms))
-- Extend, never shorten: an executing record already lives at least the idempotency TTL.
if redis.call('PTTL', K_INC) < lease_ms + grace then
  redis.call('PEXPIRE', K_INC, lease_ms + grace)
end
-- Only an executing attempt holds a lease (a finished one has none, and gets none back).
if rec[2] ~= 'executing' then
  return { 'renewed' }
end
local score = tonumber(redis.call('ZSCORE', K_LEASES, attempt))
if score ~= nil and score > now then
  redis.call('ZADD', K_LEASES, 'XX', now + lease_ms, attempt)
  return { 'renewed' }
end
-- The lease lapsed (renewals failed for longer than the lease): another decision may already
-- have counted the slot as free (and pruned it). Take it back only if the limit still allows;
-- never report it renewed, the caller must know the limit may not have held meanwhile.
redis.call('ZREMRANGEBYSCORE', K_LEASES, '-inf', string.format('%d', now))
if redis.call('ZCARD', K_LEASES) >= max_concurrent then
  -- The probe lived with the lease: it is given up, so a probe nobody took meanwhile no longer
  -- speaks for the circuit when it finishes (its outcome says the probe lapsed).
  if redis.call('HGET', K_CB, 'probe') == attempt then
    redis.call('HDEL', K_CB, 'probe')
  end
  return { 'lapsed' }
end
redis.call('ZADD', K_LEASES, now + lease_ms, attempt)
-- The probe is live while its attempt's lease is: if the circuit still names this attempt,
-- nobody took the probe meanwhile and the lease just taken back revives it.
local probe = redis.call('HGET', K_CB, 'probe') == attempt
return { 'reacquired', probe and '1' or '0' }
