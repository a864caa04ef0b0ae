--[[
rollout.lua: read a runbook's rollout record, or apply one transition to it, atomically.
Mirrors `rollout::apply` (src/rollout.rs) and the memory store's record (src/guardrails/memory/ledger.rs).

KEYS
  1  rollout:<runbook>      hash  stage shadow|approval|canary|auto, step (canary share index),
                                  version (+1 at every change), since (ms of the last change)
  2  rollout:<runbook>:ok   zset  member evidence id (an incident id), score when it counted (ms)
ARGV
  1  op read|success|failure|promote
  2  the policy's first stage (the stage without a record)
  3  promote_after        4  window_ms
  5  the number of canary shares
  6  automatic_until (the highest stage evidence alone reaches)
  7  evidence id (success)
Time is Redis `TIME`. Evidence counts while younger than the window; at most promote_after
entries are kept (the newest), as more change nothing. A change clears the evidence; so does a
failure. At `auto` nothing is counted (there is nowhere further to go).

Returns { stage, step, version, evidence, from_stage, from_step } (from_* '' unless this call
changed the stage), or for a refused promotion { 'refused', 'end'|'evidence', evidence, needed }.
]]
local RANK = { shadow = 0, approval = 1, canary = 2, auto = 3 }
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, start = ARGV[1], ARGV[2]
local need, window, nshares, until_stage = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]

local rec = redis.call('HMGET', KEYS[1], 'stage', 'step', 'version')
local stage, step, version = rec[1], tonumber(rec[2]) or 0, tonumber(rec[3]) or 0
if not stage or RANK[stage] == nil then
  stage, step = start, 0
end

local function next_of(s, n)
  if s == 'shadow' then return 'approval', 0 end
  if s == 'approval' then
    if nshares == 0 then return 'auto', 0 end
    return 'canary', 0
  end
  if s == 'canary' then
    if n + 1 < nshares then return 'canary', n + 1 end
    return 'auto', 0
  end
  return nil, nil
end
local function back_of(s, n)
  if s == 'auto' then
    if nshares > 0 then return 'canary', 0 end
    return 'approval', 0
  end
  if s == 'canary' then return 'approval', 0 end
  return s, n
end

if op == 'success' and stage ~= 'auto' then
  redis.call('ZADD', KEYS[2], now, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(need + 1))
  redis.call('PEXPIRE', KEYS[2], window)
end
local evidence = redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%d', now - window), '+inf')

local to_stage, to_step, clear = nil, nil, false
if op == 'success' then
  local ns, nn = next_of(stage, step)
  if ns and evidence >= need and RANK[ns] <= RANK[until_stage] then
    to_stage, to_step, clear = ns, nn, true
  end
elseif op == 'failure' then
  local bs, bn = back_of(stage, step)
  clear = true
  if bs ~= stage or bn ~= step then
    to_stage, to_step = bs, bn
  end
elseif op == 'promote' then
  local ns, nn = next_of(stage, step)
  if not ns then
    return { 'refused', 'end', tostring(evidence), tostring(need) }
  end
  if evidence < need then
    return { 'refused', 'evidence', tostring(evidence), tostring(need) }
  end
  to_stage, to_step, clear = ns, nn, true
end

if clear then
  redis.call('DEL', KEYS[2])
  evidence = 0
end
local from_stage, from_step = '', ''
if to_stage then
  from_stage, from_step = stage, tostring(step)
  stage, step, version = to_stage, to_step, version + 1
  redis.call('HSET', KEYS[1], 'stage', stage, 'step', tostring(step), 'version', tostring(version),
    'since', string.format('%d', now))
end
return { stage, tostring(step), tostring(version), tostring(evidence), from_stage, from_step }
