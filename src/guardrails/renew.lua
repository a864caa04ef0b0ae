--[[
renew.lua: keep a running attempt's claim, blast-radius lease and probe alive.

Mirrors `MemoryStore::renew` (src/guardrails/memory.rs). The probe has no lease of its own: it
is live exactly while its attempt's entry in `leases` is, so extending that entry extends both.

KEYS (one hash tag, see decide.lua)
  1  inc:<incident>   hash  incident record
  2  leases           zset  member attempt, score lease expiry (ms)

ARGV
  1  attempt
  2  lease_ms
  3  claim_grace_ms (the record lives lease_ms + this, as in decide.lua)

Returns a flat array of strings: { 'renewed' } or { 'stale' } (the attempt no longer owns the
incident, or it is done: nothing changed).
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local K_INC, K_LEASES = KEYS[1], KEYS[2]
local attempt, lease_ms, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local rec = redis.call('HMGET', K_INC, 'attempt', 'state')
if rec[1] ~= attempt or rec[2] == 'done' then
  return { 'stale' }
end

redis.call('HSET', K_INC, 'lease_until', string.format('%d', now + lease_ms))
-- Extend, never shorten: an executing record already lives at least the idempotency TTL.
if redis.call('PTTL', K_INC) < lease_ms + grace then
  redis.call('PEXPIRE', K_INC, lease_ms + grace)
end
-- Only a live lease is extended: an expired one may already have been counted as free by
-- another decision, and reviving it could exceed max_concurrent_actions. A finished attempt has
-- no entry (finish removed it) and gets none back.
local score = tonumber(redis.call('ZSCORE', K_LEASES, attempt))
if score ~= nil and score > now then
  redis.call('ZADD', K_LEASES, 'XX', now + lease_ms, attempt)
end
return { 'renewed' }
