-- Argo CD health check for baton.dev/Apply.
--
-- baton writes the status as a pure projection of the Apply's operations, so the health
-- follows status.phase alone, once the status describes the current generation:
--   no status or phase yet, observedGeneration behind   -> Progressing
--   Running and waiting for an approval                 -> Suspended (a person must act)
--   Pending, Running (Degraded=True included)           -> Progressing
--   Succeeded, Skipped                                  -> Healthy
--   Failed                                              -> Degraded
--   Paused, Stopped                                     -> Suspended
--   anything else                                       -> Unknown
-- The message is status.message, the operator's one line a person can act on.
-- Kept to Lua 5.1 so that Argo CD's interpreter (gopher-lua) runs it unchanged.
local hs = {}

local function condition(status, wanted)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function text(value, fallback)
  if type(value) == "string" and value ~= "" then
    return value
  end
  return fallback
end

local status = obj.status
if type(status) ~= "table" or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end

-- Like kstatus: an observedGeneration behind metadata.generation means the status is stale.
local generation = obj.metadata and obj.metadata.generation
local observed = status.observedGeneration
if type(generation) == "number" and type(observed) == "number" and observed < generation then
  hs.status = "Progressing"
  hs.message = string.format(
    "waiting for the operator: status is of generation %d, the Apply is at %d",
    observed, generation)
  return hs
end

local phase = status.phase
if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = text(status.message, "waiting to start")
elseif phase == "Running" and (condition(status, "Reconciling") or {}).reason == "AwaitingApproval" then
  -- The window waits at an operation whose approval is required: like a paused rollout in
  -- Argo Rollouts, it needs a person (kubectl baton approve).
  hs.status = "Suspended"
  hs.message = text(status.message, "waiting for an approval")
elseif phase == "Running" then
  -- Degraded=True while Running: an operation failed and the rollout goes on (onFailure:
  -- Continue, or siblings finishing before it stops). Argo CD has no "degraded but still
  -- progressing", so this stays Progressing and the message says what failed.
  hs.status = "Progressing"
  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    hs.message = text(status.message,
      "continuing past a failure: " .. text(degraded.message, "an operation failed"))
  else
    hs.message = text(status.message, "running")
  end
elseif phase == "Succeeded" or phase == "Skipped" then
  hs.status = "Healthy"
  hs.message = text(status.message, string.lower(phase))
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = text(status.message, "failed")
elseif phase == "Paused" or phase == "Stopped" then
  hs.status = "Suspended"
  hs.message = text(status.message, string.lower(phase))
else
  hs.status = "Unknown"
  hs.message = text(status.message, "unknown phase " .. tostring(phase))
end
return hs
