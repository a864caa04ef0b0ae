--[[
finish.lua: release an attempt's reservation and feed its result to the runbook's circuit.

Mirrors `MemoryStore::finish` (src/guardrails/memory/execution.rs).

KEYS (one hash tag, see decide.lua)
  1  inc:<incident>   hash  incident record
  2  cb:<runbook>     hash  circuit: state, failures, opened_at, probe
  3  leases           zset  member attempt, score lease expiry (ms)

ARGV
  1  attempt
  2  result success|failure|force_open|not_run
  3  failure_threshold

Returns a flat array of strings:
  { state CLOSED|OPEN|HALF_OPEN, failures, opened 0|1, owner current|stale }
  opened: this call moved the circuit to OPEN. owner: whether the attempt still owns the incident
  record (stale: the claim was taken over; the result still feeds the circuit, as the action ran).
  The answer is cached in the record (field `finish`): a retry after a timeout whose effect is
  unknown returns it instead of counting the same failure twice.

Stale finishes: an attempt only speaks for the probe while `probe` names it. Any move to OPEN
clears the probe, a probe whose lease lapsed can be replaced by a newer one, and one whose
lease lapsed and could not be taken back gives the probe up (renew.lua, `lapsed`); so a late
success from an old probe, or from an execution reserved before the circuit opened, never closes
an OPEN or HALF_OPEN circuit that newer evidence opened or another probe is testing. A late
failure is counted but only trips the breaker from CLOSED (or when it is the live probe's).
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function fmt(n)
  return string.format('%d', n)
end

local K_INC, K_CB, K_LEASES = KEYS[1], KEYS[2], KEYS[3]
local attempt, result, threshold = ARGV[1], ARGV[2], tonumber(ARGV[3])

local rec = redis.call('HMGET', K_INC, 'attempt', 'state', 'finish')
local owns = rec[1] == attempt
if owns and rec[3] then
  return cjson.decode(rec[3])
end

redis.call('ZREM', K_LEASES, attempt)

local cb = redis.call('HMGET', K_CB, 'state', 'failures', 'probe')
local state, failures, probe = cb[1] or 'CLOSED', tonumber(cb[2]) or 0, cb[3]
local holds_probe = probe == attempt
local opened = false

local function open()
  opened = state ~= 'OPEN'
  state = 'OPEN'
  redis.call('HSET', K_CB, 'state', 'OPEN', 'failures', fmt(failures), 'opened_at', fmt(now))
  -- A new OPEN period starts; whoever probed before no longer speaks for the circuit.
  redis.call('HDEL', K_CB, 'probe')
end

if result == 'success' then
  if holds_probe or state == 'CLOSED' then
    state = 'CLOSED'
    failures = 0
    redis.call('HSET', K_CB, 'state', 'CLOSED', 'failures', '0')
    if holds_probe then
      redis.call('HDEL', K_CB, 'probe')
    end
  end
elseif result == 'failure' then
  failures = failures + 1
  if holds_probe or (state == 'CLOSED' and failures >= threshold) then
    open()
  else
    redis.call('HSET', K_CB, 'failures', fmt(failures))
    if not cb[1] then
      redis.call('HSET', K_CB, 'state', 'CLOSED')
    end
  end
elseif result == 'force_open' then
  failures = failures + 1
  open()
elseif result == 'not_run' then
  -- Nothing ran: no evidence either way. Release the probe so the next caller probes.
  if holds_probe then
    redis.call('HDEL', K_CB, 'probe')
  end
else
  return redis.error_reply('finish.lua: unknown result ' .. tostring(result))
end

-- The incident record. An action that ran stays `executing` until `record` marks it done: if
-- this replica dies before recording, a redelivery is Interrupted instead of acting twice. Only
-- NotRun returns it to `claimed` (safe to decide again). The cached answer is dropped so a
-- repeated decide of this attempt can no longer replay `allowed`.
local answer = { state, fmt(failures), opened and '1' or '0', owns and 'current' or 'stale' }
if owns then
  redis.call('HDEL', K_INC, 'answer', 'answer_mode')
  redis.call('HSET', K_INC, 'finish', cjson.encode(answer))
  if result == 'not_run' and rec[2] == 'executing' then
    redis.call('HSET', K_INC, 'state', 'claimed')
  end
end
return answer
