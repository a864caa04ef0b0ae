--[[
approval_create.lua: store a new pending approval, timed by Redis TIME, or join the pending
approval of the same group (one pending approval per runbook and target of its action).

KEYS
  1  appr:<id>          hash  json (the approval, immutable part), state, approver, expires_at,
                              action_hash, created_at
  2  approvals          zset  id -> expires_at (ms); the index of pending approvals
  3  approvals_created  zset  id -> created_at (ms); the same ids by age (the gauges' oldest)
  4  apprg:<group>      hash  id, created, expires of the group's latest approval (unused when
                              the approval has no group)
ARGV
  1  id (escaped as in key names)   2  json   3  action_hash   4  ttl_ms
  5  '1' when the approval has a group, '' when not
Returns { 'created' | 'joined', id, created_at_ms, expires_at_ms } (strings): the new approval,
or the group's approval still pending (in the index and not expired), which the request joins.
The hash outlives its expiry by one day so a late answer is refused as "expired", not "not
found".
]]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] ~= '' then
  local g = redis.call('HMGET', KEYS[4], 'id', 'created', 'expires')
  if g[1] then
    local score = redis.call('ZSCORE', KEYS[2], g[1])
    if score and tonumber(score) >= now then
      return { 'joined', g[1], g[2], g[3] }
    end
  end
end
local created = string.format('%d', now)
local expires = string.format('%d', now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'state', 'pending', 'action_hash', ARGV[3],
  'expires_at', expires, 'created_at', created)
redis.call('PEXPIREAT', KEYS[1], now + tonumber(ARGV[4]) + 86400000)
redis.call('ZADD', KEYS[2], expires, ARGV[1])
redis.call('ZADD', KEYS[3], created, ARGV[1])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[4], 'id', ARGV[1], 'created', created, 'expires', expires)
  redis.call('PEXPIREAT', KEYS[4], now + tonumber(ARGV[4]))
end
return { 'created', ARGV[1], created, expires }
