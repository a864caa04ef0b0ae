// The approvals console (src/console/mod.rs). Plain DOM, no framework, nothing fetched from
// elsewhere. Every value shown comes from incidents or the audit topic, which are not trusted:
// it is written with textContent, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const SECTIONS = ["login", "approvals", "approval", "outcomes", "runbooks"];
const REFRESH_MS = 5000;

let timer = null;
let runbooksById = new Map();

// --- session: the token and the approver's name live in this tab only --------------------------

function session() {
  const token = sessionStorage.getItem("remediator.token");
  const approver = sessionStorage.getItem("remediator.approver");
  return token !== null && approver ? { token, approver } : null;
}

function signOut(message) {
  sessionStorage.removeItem("remediator.token");
  sessionStorage.removeItem("remediator.approver");
  $("login-error").textContent = message || "";
  route();
}

async function api(path, options) {
  const s = session();
  const headers = { Authorization: "Bearer " + (s ? s.token : "") };
  if (options && options.body) headers["Content-Type"] = "application/json";
  const r = await fetch(path, Object.assign({ headers, cache: "no-store" }, options || {}));
  if (r.status === 401) {
    signOut("Refused: the token is wrong or no longer valid.");
    throw new Error("unauthorized");
  }
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    body = null;
  }
  return { status: r.status, body };
}

async function signIn() {
  const token = $("token").value.trim();
  const approver = $("approver").value.trim();
  // Behind an authenticating proxy the worker trusts, the token may be left empty: the proxy
  // names who you are, and that name is the one audited.
  if (!approver) {
    $("login-error").textContent = "Your name is needed (and the token, unless a proxy signs you in).";
    return;
  }
  const r = await fetch("/v1/approvals", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  if (r.status === 401) {
    $("login-error").textContent = "Refused: wrong token.";
    return;
  }
  if (!r.ok) {
    $("login-error").textContent = "The worker answered " + r.status + "; try again.";
    return;
  }
  sessionStorage.setItem("remediator.token", token);
  sessionStorage.setItem("remediator.approver", approver);
  $("token").value = "";
  $("login-error").textContent = "";
  if (!location.hash || location.hash === "#login") location.hash = "#approvals";
  else route();
}

// --- small DOM helpers: text only ---------------------------------------------------------------

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c);
    else td.textContent = c === null || c === undefined ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function when(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ago(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return "in " + span(-s);
  return span(s) + " ago";
}

function span(s) {
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}

function percent(rate) {
  return rate === null || rate === undefined ? "no runs yet" : Math.round(rate * 100) + "%";
}

function list(items) {
  return items && items.length ? items.join(", ") : "none";
}

function showError(text) {
  $("error").textContent = text || "";
}

// --- pages ---------------------------------------------------------------------------------------

async function loadRunbooks() {
  const r = await api("/v1/console/runbooks");
  if (r.status !== 200) throw new Error((r.body && r.body.reason) || "runbooks: " + r.status);
  runbooksById = new Map(r.body.map((rb) => [rb.id, rb]));
  return r.body;
}

async function showApprovals() {
  const r = await api("/v1/approvals");
  if (r.status !== 200) throw new Error((r.body && r.body.reason) || "approvals: " + r.status);
  const pending = r.body.filter((a) => a.state === "pending");
  const rows = pending.map((a) => {
    const link = el("a", "Review");
    link.href = "#approval/" + encodeURIComponent(a.id);
    link.dataset.approval = a.id;
    return row([a.incident_id, a.runbook, a.action, ago(a.created_at_ms), ago(a.expires_at_ms), link]);
  });
  fill($("approvals-table").tBodies[0], rows);
  $("approvals-empty").hidden = rows.length > 0;
}

let shownApproval = null;

async function showApproval(id) {
  const [r] = await Promise.all([api("/v1/approvals"), loadRunbooks()]);
  if (r.status !== 200) throw new Error((r.body && r.body.reason) || "approvals: " + r.status);
  const a = r.body.find((x) => x.id === id);
  $("a-id").textContent = id;
  const answered = $("answer-result").dataset.for === id;
  if (!a) {
    shownApproval = null;
    for (const f of ["a-incident-id", "a-runbook", "a-action", "a-hash", "a-expires", "a-pre", "a-post",
      "a-rollback", "a-guardrails", "a-incident"]) $(f).textContent = "";
    if (!answered) $("answer-result").textContent = "This approval is no longer pending (answered, expired, or unknown).";
    $("approve").disabled = true;
    $("deny").disabled = true;
    return;
  }
  shownApproval = a;
  const rb = runbooksById.get(a.runbook);
  $("a-incident-id").textContent = a.incident_id;
  $("a-runbook").textContent = a.runbook;
  $("a-action").textContent = a.action;
  $("a-hash").textContent = a.action_hash;
  $("a-expires").textContent = when(a.expires_at_ms) + " (" + ago(a.expires_at_ms) + ")";
  $("a-pre").textContent = rb ? list(rb.pre_checks) : "unknown runbook";
  $("a-post").textContent = rb ? list(rb.post_checks) : "unknown runbook";
  $("a-rollback").textContent = rb ? (rb.rollback ? rb.rollback : "no rollback: the action is not undone") : "";
  $("a-guardrails").textContent = rb
    ? "circuit " + rb.circuit + " (" + rb.consecutive_failures + " consecutive failures); verified success " +
      percent(rb.success_rate) + " over " + rb.executions + "/" + rb.window + "; mode " + rb.effective_mode +
      (rb.demoted ? " (demoted: " + rb.demoted + ")" : "")
    : "";
  let incident = a.incident;
  try {
    incident = JSON.stringify(JSON.parse(a.incident), null, 2);
  } catch (_) {
    // shown as stored
  }
  $("a-incident").textContent = incident;
  if (!answered) $("answer-result").textContent = "";
  $("approve").disabled = false;
  $("deny").disabled = false;
}

async function answer(approve) {
  const a = shownApproval;
  const s = session();
  if (!a || !s) return;
  $("approve").disabled = true;
  $("deny").disabled = true;
  const verb = approve ? "approve" : "deny";
  const out = $("answer-result");
  out.dataset.for = a.id;
  out.replaceChildren(el("p", (approve ? "Approving" : "Denying") + "…"));
  const r = await api("/v1/approvals/" + encodeURIComponent(a.id) + "/" + verb, {
    method: "POST",
    body: JSON.stringify({ approver: s.approver, action_hash: a.action_hash }),
  });
  const b = r.body || {};
  const head = el("p", (b.accepted ? (approve ? "Approved" : "Denied") : "Refused") + ": " + (b.reason || r.status),
    b.accepted ? "ok" : "error");
  head.id = "answer-verdict";
  const items = (b.outcomes || []).map((o) => {
    const li = el("li", o.decision + (o.success === null || o.success === undefined ? "" : o.success ? ", verified" : ", NOT verified") +
      (o.rolled_back ? ", rolled back" : "") + " — " + o.reason);
    li.dataset.decision = o.decision;
    return li;
  });
  const ul = el("ul");
  ul.id = "answer-outcomes";
  ul.replaceChildren(...items);
  out.replaceChildren(head, ul);
  await showApproval(a.id);
}

async function showOutcomes() {
  const q = new URLSearchParams();
  for (const [key, id] of [["runbook", "f-runbook"], ["service", "f-service"], ["decision", "f-decision"]]) {
    const v = $(id).value.trim();
    if (v) q.set(key, v);
  }
  q.set("limit", "100");
  const r = await api("/v1/console/outcomes?" + q.toString());
  if (r.status !== 200) throw new Error((r.body && r.body.reason) || "outcomes: " + r.status);
  const rows = r.body.map((o) => {
    const tr = row([
      o.finished_at,
      o.incident_id,
      o.service,
      o.runbook_id,
      o.decision,
      o.success === null || o.success === undefined ? "" : o.success ? "yes" : "NO",
      o.reason,
    ]);
    tr.dataset.incident = o.incident_id || "";
    tr.dataset.decision = o.decision;
    return tr;
  });
  fill($("outcomes-table").tBodies[0], rows);
  $("outcomes-empty").hidden = rows.length > 0;
}

async function showRunbooks() {
  const all = await loadRunbooks();
  const rows = all.map((rb) => {
    const tr = row([
      rb.id,
      rb.risk,
      rb.effective_mode + (rb.demoted ? " (demoted from auto: " + rb.demoted + ")" : ""),
      rolloutCell(rb),
      rb.circuit,
      percent(rb.success_rate) + " (" + rb.executions + "/" + rb.window + ")",
      rb.policy,
      list(rb.post_checks),
    ]);
    tr.dataset.runbook = rb.id;
    tr.dataset.stage = rb.rollout ? rb.rollout.stage : "";
    return tr;
  });
  fill($("runbooks-table").tBodies[0], rows);
}

// A runbook's rollout: its stage, its evidence, what the next stage needs, and a Promote button
// when a human may move it on (the server checks the evidence again).
function rolloutCell(rb) {
  const r = rb.rollout;
  if (!r) return "-";
  const cell = document.createElement("div");
  const stage = el("strong", r.describe);
  stage.className = "stage";
  cell.append(stage, el("div", r.evidence + "/" + r.needed + " verified successes; next: " + r.needs));
  if (r.promotable) {
    const b = el("button", "Promote to " + r.next);
    b.type = "button";
    b.className = "promote";
    b.dataset.runbook = rb.id;
    b.addEventListener("click", () => promote(rb.id, b));
    cell.appendChild(b);
  }
  return cell;
}

async function promote(id, button) {
  const s = session();
  if (!s) return;
  button.disabled = true;
  const r = await api("/v1/console/runbooks/" + encodeURIComponent(id) + "/promote", {
    method: "POST",
    body: JSON.stringify({ by: s.approver }),
  });
  const b = r.body || {};
  const out = $("runbooks-result");
  out.dataset.runbook = id;
  out.className = r.status === 200 ? "ok" : "error";
  out.textContent = r.status === 200
    ? id + ": promoted from " + b.change.from + " to " + b.change.to + (b.change.share ? " " + b.change.share + "%" : "")
    : id + ": " + (b.reason || r.status);
  await showRunbooks();
}

// --- routing: #approvals, #approval/<id>, #outcomes, #runbooks -------------------------------------

function page() {
  let h = location.hash.slice(1);
  try {
    h = decodeURIComponent(h);
  } catch (_) {
    // A malformed %-sequence: the address is used as given (it names no approval then).
  }
  if (h.startsWith("approval/")) return { name: "approval", id: h.slice("approval/".length) };
  if (h === "outcomes" || h === "runbooks") return { name: h };
  return { name: "approvals" };
}

async function render() {
  const p = page();
  try {
    if (p.name === "approval") await showApproval(p.id);
    else if (p.name === "outcomes") await showOutcomes();
    else if (p.name === "runbooks") await showRunbooks();
    else await showApprovals();
    showError("");
  } catch (e) {
    if (e.message !== "unauthorized") showError("Could not load: " + e.message);
  }
}

function route() {
  clearInterval(timer);
  const s = session();
  const p = s ? page() : { name: "login" };
  for (const name of SECTIONS) $(name).hidden = name !== p.name;
  $("nav").hidden = !s;
  document.body.dataset.page = p.name;
  if (!s) return;
  $("who").textContent = "signed in as " + s.approver;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("current", a.id === "nav-" + p.name);
  render();
  // The approval page is not refreshed under the reader's eyes: it changes only on an answer.
  if (p.name !== "approval") timer = setInterval(render, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("click", signIn);
  $("token").addEventListener("keydown", (e) => e.key === "Enter" && signIn());
  $("approver").addEventListener("keydown", (e) => e.key === "Enter" && signIn());
  $("sign-out").addEventListener("click", () => signOut(""));
  $("approve").addEventListener("click", () => answer(true));
  $("deny").addEventListener("click", () => answer(false));
  for (const id of ["f-runbook", "f-service", "f-decision"]) $(id).addEventListener("change", render);
  window.addEventListener("hashchange", route);
  route();
});
