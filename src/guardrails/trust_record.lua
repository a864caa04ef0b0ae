--[[
trust_record.lua: add one verified execution result to a runbook's record.

KEYS
  1  trust:<runbook>   list of '1' (post-checks passed) / '0', newest first
ARGV
  1  '1' or '0'   2  window (results kept)
Returns { successes, total } over the kept window (strings).
]]
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local all = redis.call('LRANGE', KEYS[1], 0, -1)
local ok = 0
for _, v in ipairs(all) do
  if v == '1' then ok = ok + 1 end
end
return { string.format('%d', ok), string.format('%d', #all) }
