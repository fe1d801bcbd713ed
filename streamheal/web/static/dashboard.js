// streamheal dashboard: a client of GET /api/state and the /ws websocket.
//
// Every value that comes from the database is put on the page as text
// (textContent or text nodes), never parsed as HTML: a document whose field
// holds markup shows that markup as characters.
"use strict";

(function () {
  const TOKEN_KEY = "streamheal.token";
  const TOKEN_HEADER = "X-Streamheal-Token";
  const RETRY_FIRST_MS = 500;
  const RETRY_MAX_MS = 10000;
  const PINNED_SLACK_PX = 6;
  const VALUE_CHARS = 160;
  const MAX_OPERATIONS_SHOWN = 3;
  const CHART_HEIGHT_PX = 230;
  // Counts are whole numbers: the y axis steps by these, never by 2.5.
  const COUNT_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
  const FIX_STEPS = ["recheck", "plan", "backup", "apply", "audit", "verify"];
  const DRY_RUN_STEPS = ["recheck", "plan", "audit"];
  // Where a step the fixer reports falls among the others, so that one this
  // page does not list by default still shows in its place.
  const STEP_ORDER = ["recheck", "plan", "backup", "apply", "audit", "commit", "record", "verify"];
  const FIXER_LABELS = {
    idle: "Idle",
    fixing: "Fixing",
    simulating: "Simulating",
    waiting: "Waiting",
    paused: "Paused",
    "waiting for approval": "Needs approval",
    "auto-fix off": "Auto-fix off",
    stopped: "Stopped",
  };
  const FIX_LABELS = {
    applied: "Fixed",
    dry_run: "Simulated",
    failed: "Failed",
    rolled_back: "Rolled back",
  };
  const FIX_TAGS = { applied: "tag-ok", dry_run: "tag-sim", failed: "tag-high", rolled_back: "" };
  const QUEUE_LABELS = {
    pending: "queued",
    fixing: "fixing now",
    held: "needs approval",
    approved: "approved",
    simulated: "simulated",
    failed: "gave up",
    skipped: "skipped",
  };

  const page = {
    snapshot: null,
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    socket: null,
    retryMs: RETRY_FIRST_MS,
    retryTimer: null,
    chart: null,
    chartKey: "",
    activityKey: "",
    unseenDetections: 0,
    toastTimer: null,
  };

  // Building elements: strings become text nodes, never markup.

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // Formatting values.

  function dateOf(value) {
    if (!value) return null;
    const text = typeof value === "object" && value.$date ? value.$date : value;
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function clock(value) {
    const date = dateOf(value);
    if (!date) return "–";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function ago(value) {
    const date = dateOf(value);
    if (!date) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (seconds < 60) return `${seconds}s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
    return `${Math.round(seconds / 3600)}h ago`;
  }

  function duration(seconds) {
    return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`;
  }

  function count(value) {
    return Number(value || 0).toLocaleString("en-US");
  }

  // The chart's y axis in pixels: its longest label, its gap, and a margin.
  const AXIS_CHAR_PX = 7.5;
  const AXIS_PADDING_PX = 18;
  const AXIS_MIN_PX = 36;

  function axisWidth(labels) {
    const longest = Math.max(0, ...(labels || []).map((label) => String(label).length));
    return Math.max(AXIS_MIN_PX, Math.ceil(longest * AXIS_CHAR_PX + AXIS_PADDING_PX));
  }

  function shorten(text, limit) {
    return text.length > limit ? `${text.slice(0, limit)}…` : text;
  }

  // A JSON value as one line of text: ObjectIds and dates unwrapped.
  function valueText(value) {
    if (value === undefined) return "";
    if (typeof value === "string") return value;
    if (value && typeof value === "object") {
      if (typeof value.$oid === "string") return value.$oid;
      if (value.$date !== undefined) return String(value.$date.$numberLong || value.$date);
    }
    return JSON.stringify(value);
  }

  function documentsText(documents) {
    const shown = (documents || []).slice(0, 3).map((doc) => shorten(valueText(doc), 60));
    const more = (documents || []).length - shown.length;
    return shown.join(", ") + (more > 0 ? ` and ${more} more` : "");
  }

  // Connection: a snapshot over HTTP, then the websocket, reconnecting with
  // backoff and catching up from a fresh snapshot each time.

  async function loadSnapshot() {
    const response = await fetch("/api/state", { cache: "no-store" });
    if (!response.ok) throw new Error(`GET /api/state answered ${response.status}`);
    render(await response.json());
  }

  function connect() {
    page.retryTimer = null;
    setConnection("connecting", "Connecting…");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws`);
    page.socket = socket;
    socket.addEventListener("open", () => {
      page.retryMs = RETRY_FIRST_MS;
      setConnection("live", "Live");
      byId("banner").hidden = true;
      loadSnapshot().catch(() => {});
    });
    socket.addEventListener("message", (event) => render(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      if (page.socket !== socket) return;
      page.socket = null;
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    const delayMs = Math.round(page.retryMs * (0.8 + Math.random() * 0.4));
    page.retryMs = Math.min(page.retryMs * 2, RETRY_MAX_MS);
    const seconds = Math.max(1, Math.round(delayMs / 1000));
    setConnection("down", "Disconnected");
    const banner = byId("banner");
    banner.textContent = `Lost the connection to streamheal. Reconnecting in ${seconds} s… The numbers below may be out of date.`;
    banner.hidden = false;
    page.retryTimer = setTimeout(connect, delayMs);
  }

  function setConnection(state, label) {
    const node = byId("connection");
    node.dataset.state = state;
    setText(node, label);
  }

  // Rendering a snapshot.

  // The HTTP snapshot and the websocket race: an answer that left the server
  // before the last pushed message must not undo it. A monitor started
  // since counts its versions afresh.
  function isNewer(snapshot) {
    const current = page.snapshot;
    if (!current || snapshot.started_at !== current.started_at) return true;
    return snapshot.version >= current.version;
  }

  function render(snapshot) {
    if (!isNewer(snapshot)) return;
    page.snapshot = snapshot;
    renderHeader(snapshot);
    renderCards(snapshot);
    renderCurrent(snapshot);
    renderDetected(snapshot);
    renderFixed(snapshot);
    renderRules(snapshot);
    renderActivity(snapshot);
    renderChart(snapshot);
    updateActionButtons();
  }

  function renderHeader(snapshot) {
    const database = snapshot.database;
    setText(byId("db-address"), `${database.address} · ${database.name}`);
    setText(byId("footer-text"), `streamheal · database ${database.name} · running since ${clock(snapshot.started_at)}`);
    document.title = `${snapshot.counts.in_queue ? `(${snapshot.counts.in_queue}) ` : ""}streamheal`;
  }

  function setCard(id, value, sub, sub2) {
    const card = byId(id);
    setText(card.querySelector(".value"), value);
    setText(card.querySelector(".sub"), sub);
    const second = card.querySelector(".sub2");
    if (second) setText(second, sub2 || "");
    return card;
  }

  function fixMode(rules) {
    const fixing = rules.filter((rule) => rule.mode === "fix").length;
    const simulating = rules.filter((rule) => rule.mode === "dry_run").length;
    const parts = [];
    if (fixing) parts.push(`auto-fix on ${fixing} of ${plural(rules.length, "rule")}`);
    if (simulating) parts.push(`dry run on ${simulating}`);
    return parts.length ? parts.join(", ") : "detect only";
  }

  function plural(number, noun) {
    return `${count(number)} ${noun}${number === 1 ? "" : "s"}`;
  }

  function renderCards(snapshot) {
    const { database, counts, fixer, stream } = snapshot;
    const version = database.server_version ? `MongoDB ${database.server_version}` : "MongoDB";
    const replicaSet = database.replica_set ? ` · ${database.replica_set}` : "";
    const lag = typeof stream.lag_s === "number" ? ` · lag ${duration(stream.lag_s)}` : "";
    const streamText = database.stream_healthy ? `stream open${lag}` : "change stream down";
    const dbCard = setCard("card-database", database.connected ? "Connected" : "Disconnected", `${version}${replicaSet}`, streamText);
    dbCard.classList.toggle("is-ok", database.connected && database.stream_healthy);
    dbCard.classList.toggle("is-bad", !database.connected || !database.stream_healthy);

    setCard("card-detected", count(counts.detected), counts.history_lost ? `${count(counts.history_lost)} history gaps swept` : "since start");
    setCard("card-fixed", count(counts.fixed), `${count(counts.simulated)} simulated · ${count(counts.failed)} failed`);
    setCard("card-queue", count(counts.in_queue), `${count(counts.deferred)} deferred`);

    const status = fixer.paused ? "paused" : fixer.status;
    const fixerCard = setCard("card-fixer", FIXER_LABELS[status] || status, fixMode(snapshot.rules));
    fixerCard.dataset.status = status;
    fixerCard.classList.toggle("is-paused", status === "paused" || status === "waiting for approval");
    fixerCard.classList.toggle("is-busy", status === "fixing" || status === "simulating");
    const pause = byId("pause-button");
    setText(pause, fixer.paused ? "Resume" : "Pause");
    pause.dataset.action = fixer.paused ? "resume" : "pause";

    const batches = `${count(counts.stream_batches)} stream ${counts.stream_batches === 1 ? "batch" : "batches"}`;
    setCard("card-checks", count(counts.checks), `${plural(counts.sweeps, "sweep")} · ${batches}`);
  }

  // Currently fixing: the real step of the fix in progress, held fixes, and
  // the last change made or planned.

  function ruleMode(snapshot, name) {
    const rule = snapshot.rules.find((candidate) => candidate.name === name);
    return rule ? rule.mode : "fix";
  }

  function renderCurrent(snapshot) {
    const body = byId("current-body");
    const current = snapshot.fixer.current;
    const state = byId("current-state");
    const parts = [];
    if (current) {
      const dryRun = ruleMode(snapshot, current.violation.rule) === "dry_run";
      state.className = `tag ${dryRun ? "tag-sim" : "tag-accent"}`;
      setText(state, dryRun ? "dry run" : "fixing");
      parts.push(describeCurrent(current, dryRun ? DRY_RUN_STEPS : FIX_STEPS));
    } else {
      const status = snapshot.fixer.paused ? "paused" : snapshot.fixer.status;
      state.className = "tag";
      setText(state, FIXER_LABELS[status] || status);
      parts.push(el("p", "idle-note", idleText(snapshot, status)));
    }
    const held = snapshot.queue.filter((entry) => entry.status === "held");
    if (held.length) parts.push(describeHeld(held));
    const last = snapshot.recent_fixes.find((record) => record.status !== "rolled_back");
    if (last && !current) parts.push(describeLastChange(last));

    const key = JSON.stringify([current, held.map((entry) => entry.id), last && last._id, last && last.status]);
    if (body.dataset.key === key) return;
    body.dataset.key = key;
    body.replaceChildren(...parts);
  }

  function idleText(snapshot, status) {
    if (status === "paused") return "The fixer is paused. Violations wait in the queue until it is resumed.";
    if (status === "auto-fix off") return "Auto-fix is off for every rule: violations are detected and listed, never changed.";
    if (status === "waiting for approval") return "A fix larger than the size limit waits for a person to approve it.";
    if (snapshot.counts.in_queue) return "Nothing is being fixed right now; the queue holds violations that wait or need no fix.";
    return "Nothing to fix right now.";
  }

  function stepsWith(steps, step) {
    if (!step || steps.includes(step)) return steps;
    const rank = (name) => (STEP_ORDER.includes(name) ? STEP_ORDER.indexOf(name) : STEP_ORDER.length);
    return [...steps, step].sort((a, b) => rank(a) - rank(b));
  }

  function describeCurrent(current, baseSteps) {
    const violation = current.violation;
    const steps = stepsWith(baseSteps, current.step);
    const at = steps.indexOf(current.step);
    const stepList = el("ol", "steps");
    steps.forEach((step, index) => {
      const stateClass = index < at ? " is-done" : index === at ? " is-current" : "";
      stepList.append(el("li", `step${stateClass}`, step === "recheck" ? "re-check" : step));
    });
    stepList.setAttribute("aria-label", `Step ${at + 1} of ${steps.length}: ${current.step}`);
    return el(
      "div",
      "current",
      el(
        "div",
        "current-title",
        el("span", `tag tag-${violation.severity}`, violation.kind),
        el("span", null, violation.rule),
        el("span", "item-collection", violation.collection),
      ),
      el("p", "current-desc", violation.description),
      el("p", "current-meta", `Documents: ${documentsText(violation.documents)}`, current.summary ? ` · ${current.summary}` : ""),
      stepList,
    );
  }

  function describeHeld(held) {
    const box = el("div", "held", el("h3", null, "Waiting for approval"));
    for (const entry of held) {
      box.append(
        el(
          "div",
          "held-item",
          el("span", "grow", el("strong", null, entry.rule), ` · ${entry.collection} · ${entry.description}`),
          actionButton("Approve", "approve", entry.id, "button button-small button-primary"),
          actionButton("Skip", "skip", entry.id, "button button-small"),
        ),
      );
    }
    return box;
  }

  function describeLastChange(record) {
    const simulated = record.status === "dry_run";
    const title = simulated ? "Last planned change (dry run, nothing written)" : "Last fix";
    const box = el(
      "div",
      "last-change",
      el("h3", null, title),
      el(
        "div",
        "current-title",
        el("span", `tag ${FIX_TAGS[record.status] || ""}`, FIX_LABELS[record.status] || record.status),
        el("span", null, record.rule),
        el("span", "item-collection", record.collection),
        el("span", "item-time", clock(record.applied_at || record.created_at)),
      ),
      el("p", "current-desc", record.summary || record.error || ""),
    );
    if (simulated) box.append(...describeOperations(record.operations));
    return box;
  }

  // The before/after of each document a fix changes, field by field.

  function describeOperations(operations) {
    return (operations || [])
      .filter((operation) => operation.before || operation.after)
      .slice(0, MAX_OPERATIONS_SHOWN)
      .map(describeOperation);
  }

  function describeOperation(operation) {
    const before = operation.before || null;
    const after = operation.after || null;
    const keys = [];
    for (const source of [before, after]) {
      for (const key of Object.keys(source || {})) if (!keys.includes(key)) keys.push(key);
    }
    const table = el("table", "diff");
    table.append(
      el("caption", null, `${operation.action} in ${operation.collection}, _id ${shorten(valueText(operation.document_id), 60)}`),
      el("thead", null, el("tr", null, el("th", null, "Field"), el("th", null, "Before"), el("th", null, "After"))),
    );
    const rows = el("tbody");
    for (const key of keys) {
      const had = before !== null && Object.prototype.hasOwnProperty.call(before, key);
      const has = after !== null && Object.prototype.hasOwnProperty.call(after, key);
      const beforeText = had ? shorten(valueText(before[key]), VALUE_CHARS) : "";
      const afterText = has ? shorten(valueText(after[key]), VALUE_CHARS) : "";
      let change = "";
      if (had && !has) change = "is-removed";
      else if (!had && has) change = "is-added";
      else if (JSON.stringify(before[key]) !== JSON.stringify(after[key])) change = "is-changed";
      rows.append(
        el(
          "tr",
          change,
          el("th", null, key),
          el("td", had ? "before" : "before absent", had ? beforeText : "absent"),
          el("td", has ? "after" : "after absent", has ? afterText : after === null ? "removed" : "absent"),
        ),
      );
    }
    table.append(rows);
    return table;
  }

  // Errors detected: newest first. While the reader is at the top the list
  // follows new arrivals; once they scroll down, it holds still and counts.

  function renderDetected(snapshot) {
    const list = byId("detected");
    const queue = new Map(snapshot.queue.map((entry) => [entry.id, entry]));
    const fixed = new Set(snapshot.recent_fixes.filter((record) => record.status === "applied").map((record) => record.violation_id));
    const items = snapshot.recent_detections.map((detection) => ({
      detection,
      status: queue.has(detection.id) ? queue.get(detection.id).status : fixed.has(detection.id) ? "fixed" : "resolved",
    }));

    const pinned = list.scrollTop <= PINNED_SLACK_PX;
    const top = list.scrollTop;
    const height = list.scrollHeight;
    const added = syncList(list, items, (item) => `${item.detection.id}|${item.detection.time}`, renderDetection);
    byId("detected-empty").hidden = items.length > 0;

    const jump = byId("detected-jump");
    if (pinned) {
      list.scrollTop = 0;
      page.unseenDetections = 0;
    } else {
      list.scrollTop = top + (list.scrollHeight - height);
      page.unseenDetections += added;
    }
    jump.hidden = page.unseenDetections === 0 && pinned;
    setText(jump, page.unseenDetections ? `↑ ${page.unseenDetections} new` : "↑ Follow new errors");
  }

  function renderDetection(item) {
    const detection = item.detection;
    const status = item.status;
    const statusTag =
      status === "fixed" ? "tag-ok" : status === "held" ? "tag-warn" : status === "simulated" ? "tag-sim" : status === "resolved" ? "" : "tag-accent";
    const node = el(
      "li",
      `item sev-${detection.severity}`,
      el(
        "div",
        "item-head",
        el("span", `tag tag-${detection.severity}`, detection.severity),
        el("span", "item-rule", detection.rule),
        el("span", "item-collection", detection.collection),
        el("time", "item-time", clock(detection.time)),
      ),
      el("p", "item-text", detection.description),
    );
    const meta = el(
      "p",
      "item-meta",
      el("span", null, "doc ", el("code", null, documentsText(detection.documents))),
      el("span", null, `via ${detection.source}`),
      el("span", `tag ${statusTag}`, QUEUE_LABELS[status] || status),
    );
    const inQueue = status !== "fixed" && status !== "resolved";
    if (inQueue && status !== "skipped" && status !== "fixing") {
      const actions = el("span", "item-actions");
      if (status === "held") actions.append(actionButton("Approve", "approve", detection.id, "button button-small button-primary"));
      actions.append(actionButton("Skip", "skip", detection.id, "button button-small"));
      meta.append(actions);
    }
    node.append(meta);
    node.dataset.violation = detection.id;
    node.dataset.status = status;
    return node;
  }

  // Errors fixed: time, what was done, simulated ones marked, a rollback
  // button on each applied fix that has not been rolled back.

  function renderFixed(snapshot) {
    const rolledBack = new Set(snapshot.recent_fixes.filter((record) => record.status === "rolled_back").map((record) => record._id));
    const items = snapshot.recent_fixes.map((record) => ({
      record,
      undone: record.status === "applied" && rolledBack.has(record._id),
    }));
    syncList(byId("fixed"), items, (item) => `${item.record._id}|${item.record.status}`, renderFix);
    byId("fixed-empty").hidden = items.length > 0;
  }

  function renderFix(item) {
    const record = item.record;
    const label = item.undone ? "Fixed, then rolled back" : FIX_LABELS[record.status] || record.status;
    const node = el(
      "li",
      `item fix-${item.undone ? "rolled_back" : record.status}`,
      el(
        "div",
        "item-head",
        el("span", `tag ${item.undone ? "" : FIX_TAGS[record.status] || ""}`, label),
        el("span", "item-rule", record.rule),
        el("span", "item-collection", record.collection),
        el("time", "item-time", clock(record.rolled_back_at || record.applied_at || record.created_at)),
      ),
      el("p", "item-text", record.summary || record.error || record.description || ""),
    );
    const meta = el("p", "item-meta", el("span", null, "fix ", el("code", null, record._id)));
    if (record.documents && record.documents.length) {
      meta.append(el("span", null, "doc ", el("code", null, documentsText(record.documents))));
    }
    if (record.status === "applied" && !item.undone) {
      meta.append(el("span", "item-actions", actionButton("Roll back", "rollback", record._id, "button button-small button-danger")));
    }
    node.append(meta);
    const operations = describeOperations(record.operations);
    if (operations.length && record.status !== "rolled_back") {
      node.append(el("details", null, el("summary", null, record.status === "dry_run" ? "Show the planned change" : "Show the change"), ...operations));
    }
    node.dataset.fix = record._id;
    node.dataset.status = record.status;
    return node;
  }

  // Keep nodes whose content did not change, so that open details and the
  // scroll position survive an update. Returns how many items are new.
  function syncList(list, items, keyOf, build) {
    const existing = new Map();
    for (const child of list.children) existing.set(child.dataset.key, child);
    let added = 0;
    const nodes = items.map((item) => {
      const key = keyOf(item);
      const signature = JSON.stringify(item);
      const old = existing.get(key);
      if (old && old.dataset.signature === signature) return old;
      if (!old) added += 1;
      const fresh = build(item);
      fresh.dataset.key = key;
      fresh.dataset.signature = signature;
      return fresh;
    });
    const unchanged = nodes.length === list.children.length && nodes.every((node, index) => list.children[index] === node);
    if (!unchanged) list.replaceChildren(...nodes);
    return added;
  }

  // A table cell that also carries its column's name, which the phone
  // layout shows beside the value once the header row is hidden.
  function cell(label, className, content) {
    const node = el("td", className, content);
    if (label) node.dataset.label = label;
    return node;
  }

  function renderRules(snapshot) {
    const rows = snapshot.rules.map((rule) =>
      el(
        "tr",
        null,
        cell(null, "rule-name", rule.name),
        cell("Kind", null, rule.kind),
        cell("Collection", "mono", rule.collection),
        cell(null, "rule-mode", el("span", `tag ${rule.mode === "fix" ? "tag-ok" : rule.mode === "dry_run" ? "tag-sim" : ""}`, rule.mode === "dry_run" ? "dry run" : rule.mode)),
        cell("Open", "num", count(rule.open)),
        cell("Fixed", "num", count(rule.fixed)),
        cell("Last seen", null, ago(rule.last_seen)),
      ),
    );
    byId("rules").tBodies[0].replaceChildren(...rows);
  }

  function renderActivity(snapshot) {
    const key = JSON.stringify(snapshot.activity);
    if (key === page.activityKey) return;
    page.activityKey = key;
    const lines = snapshot.activity.map((entry) => {
      const fields = Object.entries(entry.fields || {})
        .map(([name, value]) => `${name}=${shorten(valueText(value), 80)}`)
        .join("  ");
      return el(
        "li",
        `log-line log-level-${entry.level}`,
        el("time", "log-time", clock(entry.time)),
        el("span", "log-event", entry.event),
        el("span", "log-level", entry.level === "info" ? "" : entry.level),
        fields ? el("span", "log-fields", fields) : null,
      );
    });
    byId("activity").replaceChildren(...lines);
  }

  // The chart: counts per minute come from the server, so a page opened late
  // shows the same hour as one open all along.

  function renderChart(snapshot) {
    const perMinute = snapshot.per_minute;
    if (!perMinute || typeof uPlot === "undefined") return;
    const key = JSON.stringify(perMinute);
    if (key === page.chartKey) return;
    page.chartKey = key;
    const sum = (values) => values.reduce((total, value) => total + value, 0);
    setText(
      byId("chart-note"),
      `In the last hour: ${count(sum(perMinute.detected))} detected · ${count(sum(perMinute.fixed))} fixed · ${count(sum(perMinute.simulated))} simulated`,
    );
    // Fixed bars stand on top of simulated ones: together they are the fixes.
    const fixedOrSimulated = perMinute.fixed.map((fixed, index) => fixed + perMinute.simulated[index]);
    const data = [perMinute.minutes, perMinute.detected, fixedOrSimulated, perMinute.fixed];
    if (page.chart) {
      page.chart.setData(data);
      return;
    }
    const container = byId("chart");
    const bars = uPlot.paths.bars;
    const styles = getComputedStyle(document.documentElement);
    const colour = (name) => styles.getPropertyValue(name).trim();
    const series = (label, name, align) => ({
      label,
      stroke: colour(name),
      fill: colour(name),
      width: 0,
      paths: bars({ size: [0.42, 14, 2], align }),
      points: { show: false },
    });
    const minuteLabel = (seconds) => {
      const date = new Date(seconds * 1000);
      return `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}`;
    };
    page.chart = new uPlot(
      {
        width: Math.max(240, container.clientWidth),
        height: CHART_HEIGHT_PX,
        legend: { show: false },
        cursor: { y: false, points: { show: false } },
        // Half a minute of room each side, so the edge minutes' bars show whole.
        scales: { x: { time: true, range: (_, min, max) => [min - 30, max + 30] }, y: { range: (_, min, max) => [0, Math.max(4, Math.ceil(max * 1.15))] } },
        axes: [
          {
            stroke: colour("--muted"),
            grid: { show: false },
            ticks: { stroke: colour("--border") },
            values: (_, splits) => splits.map(minuteLabel),
          },
          {
            stroke: colour("--muted"),
            grid: { stroke: "#eef1f5" },
            ticks: { show: false },
            // Wide enough for the longest label ("12,500"), not a fixed guess.
            size: (_, values) => axisWidth(values),
            incrs: COUNT_STEPS,
            values: (_, splits) => splits.map((value) => count(value)),
          },
        ],
        series: [
          {},
          series("Detected", "--high", -1),
          series("Simulated", "--sim", 1),
          series("Fixed", "--ok", 1),
        ],
      },
      data,
      container,
    );
    new ResizeObserver(() => {
      page.chart.setSize({ width: Math.max(240, container.clientWidth), height: CHART_HEIGHT_PX });
    }).observe(container);
  }

  // Actions: each needs the token; without it the page is read-only.

  function actionButton(label, action, target, className) {
    const button = el("button", `${className} action`, label);
    button.type = "button";
    button.dataset.action = action;
    button.dataset.target = target;
    return button;
  }

  function updateActionButtons() {
    const locked = !page.token;
    document.body.classList.toggle("read-only", locked);
    for (const button of document.querySelectorAll("button.action")) {
      button.disabled = locked;
      button.title = locked ? "Unlock actions with the token first" : "";
    }
    setText(byId("token-button"), locked ? "Unlock actions" : "Lock");
  }

  const ACTION_PATHS = {
    pause: () => "/api/fixer/pause",
    resume: () => "/api/fixer/resume",
    approve: (target) => `/api/violations/${encodeURIComponent(target)}/approve`,
    skip: (target) => `/api/violations/${encodeURIComponent(target)}/skip`,
    rollback: (target) => `/api/fixes/${encodeURIComponent(target)}/rollback`,
  };
  const ACTION_DONE = {
    pause: "Fixer paused.",
    resume: "Fixer resumed.",
    approve: "Fix approved; the fixer will apply it next.",
    skip: "Violation skipped.",
    rollback: "Fix rolled back; the documents are restored.",
  };

  async function runAction(action, target) {
    if (!page.token) {
      showToast("Unlock actions with the token first.", true);
      return;
    }
    let response;
    try {
      response = await fetch(ACTION_PATHS[action](target), { method: "POST", headers: { [TOKEN_HEADER]: page.token } });
    } catch (error) {
      showToast("The server could not be reached; nothing was done.", true);
      return;
    }
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) {
      forgetToken();
      showToast("The server refused the token. The page is read-only again.", true);
      return;
    }
    if (!response.ok) {
      showToast(body.error || `The action failed (${response.status}).`, true);
      return;
    }
    showToast(ACTION_DONE[action], false);
  }

  function showToast(message, isError) {
    const toast = byId("toast");
    toast.textContent = message;
    toast.classList.toggle("is-error", isError);
    toast.hidden = false;
    clearTimeout(page.toastTimer);
    page.toastTimer = setTimeout(() => {
      toast.hidden = true;
    }, 4000);
  }

  function forgetToken() {
    page.token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    updateActionButtons();
  }

  async function saveToken(candidate) {
    const message = byId("token-message");
    message.textContent = "";
    const response = await fetch("/api/auth", { headers: { [TOKEN_HEADER]: candidate }, cache: "no-store" });
    if (response.status !== 200) {
      message.textContent = "The server refused this token.";
      return;
    }
    page.token = candidate;
    sessionStorage.setItem(TOKEN_KEY, candidate);
    byId("token-form").hidden = true;
    byId("token-input").value = "";
    updateActionButtons();
    showToast("Actions unlocked for this tab.", false);
  }

  function wireControls() {
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button.action");
      if (!button || button.disabled) return;
      runAction(button.dataset.action, button.dataset.target || "");
    });
    byId("token-button").addEventListener("click", () => {
      if (page.token) {
        forgetToken();
        showToast("Actions locked.", false);
        return;
      }
      const form = byId("token-form");
      form.hidden = !form.hidden;
      if (!form.hidden) byId("token-input").focus();
    });
    byId("token-cancel").addEventListener("click", () => {
      byId("token-form").hidden = true;
    });
    byId("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const candidate = byId("token-input").value.trim();
      if (candidate) saveToken(candidate).catch(() => showToast("The server could not be reached.", true));
    });
    const list = byId("detected");
    list.addEventListener("scroll", () => {
      if (list.scrollTop <= PINNED_SLACK_PX) {
        page.unseenDetections = 0;
        byId("detected-jump").hidden = true;
      } else {
        byId("detected-jump").hidden = false;
      }
    });
    byId("detected-jump").addEventListener("click", () => {
      list.scrollTop = 0;
    });
  }

  async function checkStoredToken() {
    if (!page.token) return;
    const response = await fetch("/api/auth", { headers: { [TOKEN_HEADER]: page.token }, cache: "no-store" });
    if (response.status === 401) forgetToken();
  }

  wireControls();
  updateActionButtons();
  checkStoredToken().catch(() => {});
  loadSnapshot()
    .catch(() => {})
    .finally(connect);
})();
