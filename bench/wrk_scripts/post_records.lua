-- POST one grade per request, each body unique (the run's nonce, the thread's id and its counter in the comment), rotating
-- over `targets` (one per school: path, authorization header, student and subject ids), all set by the
-- prelude bench/ratios.py generates. With `quota` > 0 a thread stops after that many answers and leaves
-- the file `marker .. id` (bench/ratios.py then ends wrk): how the preload writes an exact number of records.

local counter = 0
local answered = 0
statuses = {}

local BODY = '{"student_id":"%s","subject_id":"%s","value":"%d","scale":"20","coefficient":"1",'
  .. '"date":"2026-11-16","comment":"wrk %s %d-%d"}'

function request()
  counter = counter + 1
  local target = targets[(counter + id) % #targets + 1]
  local student = target.students[counter % #target.students + 1]
  local subject = target.subjects[(counter + id) % #target.subjects + 1]
  local body = string.format(BODY, student, subject, counter % 21, nonce, id, counter)
  return wrk.format("POST", target.path,
                    {["Authorization"] = target.auth, ["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  answered = answered + 1
  if quota > 0 and answered == quota then
    local marker_file = io.open(marker .. id, "w")
    marker_file:write(tostring(answered))
    marker_file:close()
    wrk.thread:stop()
  end
end
