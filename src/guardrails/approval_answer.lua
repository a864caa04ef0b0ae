--[[
approval_answer.lua: accept at most one answer to an approval, atomically.

KEYS
  1  appr:<id>    hash (see approval_create.lua)
  2  approvals    zset index of pending approvals
  3  approvals_created  zset  the same ids by creation time (see approval_create.lua)
ARGV
  1  id   2  decision approved|denied   3  approver   4  action hash the answer names ('' = none)
Returns { verdict, json, state, approver, created_at, expires_at } with verdict one of
  ok | again | not_found | answered | expired | tampered
Order of refusals: single use first (a replay is a replay even after expiry), then expiry, then
the binding to the action hash. `again`: the answer was given before by the same approver with
the same decision (and no other hash), and the approval has not expired yet: a retry of the
accepted answer, which the caller finishes (its execution claim keeps it to one run), never a
second answer. Past the expiry the same repeat is `answered`. Only an answer this version
accepted (field `retryable`) is ever `again`: an approval answered by an older version, whose
execution was claimed under another key, is `answered` whatever repeats it (an upgrade must not
turn a replayed answer into a second execution).
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', KEYS[1], 'json', 'state', 'approver', 'created_at', 'expires_at', 'action_hash',
  'retryable')
local json, state, approver, created, expires, hash, retryable = r[1], r[2], r[3], r[4], r[5], r[6], r[7]
if not json then
  return { 'not_found', '', '', '', '', '' }
end
approver = approver or ''
local function out(verdict)
  return { verdict, json, state, approver, created, expires }
end
if state ~= 'pending' then
  -- A retry is only one while the approval is still answerable: past its expiry the answer is
  -- settled, and a late repeat must not re-open it (its execution claim may be gone).
  if retryable == '1' and state == ARGV[2] and approver == ARGV[3]
      and (ARGV[4] == '' or ARGV[4] == hash) and now <= tonumber(expires) then
    return out('again')
  end
  return out('answered')
end
if now > tonumber(expires) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return out('expired')
end
if ARGV[4] ~= '' and ARGV[4] ~= hash then
  return out('tampered')
end
state = ARGV[2]
approver = ARGV[3]
redis.call('HSET', KEYS[1], 'state', state, 'approver', approver, 'answered_at', string.format('%d', now),
  'retryable', '1')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return out('ok')
