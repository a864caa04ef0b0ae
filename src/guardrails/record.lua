--[[
record.lua: store an incident's final outcomes and mark it done for ttl_ms (idempotency horizon).

Mirrors `MemoryStore::record` (src/guardrails/memory/execution.rs).

KEYS (one hash tag, see decide.lua)
  1  inc:<incident>   hash  incident record

ARGV
  1  attempt
  2  outcomes (JSON array)
  3  ttl_ms

Returns a flat array of strings: { 'recorded' }, or { 'stale' } when another attempt owns the
incident (it took over an expired claim and records its own outcome; nothing changed). A missing
record (expired during a very long action) is re-created as done, so a redelivery never acts.
]]

local K_INC = KEYS[1]
local attempt, outcomes, ttl = ARGV[1], ARGV[2], ARGV[3]

local owner = redis.call('HGET', K_INC, 'attempt')
if owner and owner ~= attempt then
  return { 'stale' }
end

-- `source` is kept, so a redelivery of the same message is recognised as such. The cached
-- decide answer is dropped: from now on every decide, even by this attempt, is a Duplicate.
redis.call('HSET', K_INC, 'state', 'done', 'attempt', attempt, 'outcomes', outcomes)
redis.call('HDEL', K_INC, 'answer', 'answer_mode', 'lease_until')
redis.call('PEXPIRE', K_INC, ttl)
return { 'recorded' }
