// The aioflow live view: draws a run's graph from /api/graph and follows its state over /api/events.
// Plain JavaScript and SVG, no build step. Every node's box is a <g data-node-id=KEY data-state=STATE>.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const CHAR_WIDTH = 7.4; // as aioflow/observe/_ui/_layout.py assumes for the 13 px font
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  const runId = params.get("run");
  const $ = (id) => document.getElementById(id);

  const view = {
    info: null,
    graph: null,
    byKey: new Map(), // node key -> its entry in /api/graph
    boxes: new Map(), // node key -> its <g>
    nodes: {}, // node key -> its latest record
    run: null,
    clockOffset: 0, // server time - browser time, in seconds
    selected: null,
    source: null,
    over: false,
    zoom: 1,
  };

  // ------------------------------------------------------------------ helpers

  function apiUrl(path) {
    const query = new URLSearchParams();
    if (token) query.set("token", token);
    if (runId) query.set("run", runId);
    const text = query.toString();
    return text ? `${path}?${text}` : path;
  }

  function pageUrl(run) {
    const query = new URLSearchParams();
    if (token) query.set("token", token);
    if (run) query.set("run", run);
    const text = query.toString();
    return text ? `/?${text}` : "/";
  }

  async function getJSON(path) {
    const response = await fetch(apiUrl(path), { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
    return body;
  }

  function svgElement(name, attributes, parent) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) element.setAttribute(key, value);
    if (parent) parent.appendChild(element);
    return element;
  }

  function htmlElement(name, text, parent) {
    const element = document.createElement(name);
    if (text !== undefined && text !== null) element.textContent = text;
    if (parent) parent.appendChild(element);
    return element;
  }

  function fit(text, width) {
    const room = Math.max(3, Math.floor((width - 16) / CHAR_WIDTH));
    return text.length <= room ? text : `${text.slice(0, room - 1)}\u2026`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "\u2014";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  function clock(time) {
    if (time === null || time === undefined) return "\u2014";
    const date = new Date(time * 1000);
    return date.toLocaleTimeString(undefined, { hour12: false }) + `.${String(date.getMilliseconds()).padStart(3, "0")}`;
  }

  function showNotice(text, kind) {
    const notice = $("notice");
    notice.textContent = text || "";
    notice.dataset.kind = kind || "info";
    notice.hidden = !text;
  }

  function setConnection(text) {
    $("connection").textContent = text;
  }

  // ------------------------------------------------------------------ the graph

  function drawGraph(graph) {
    const svg = $("graph");
    svg.replaceChildren();
    const { width, height } = graph.layout;
    const defs = svgElement("defs", {}, svg);
    for (const [id, cls] of [["arrow", "arrow"], ["arrow-error", "arrow error"]]) {
      const marker = svgElement("marker", {
        id, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse",
      }, defs);
      svgElement("path", { d: "M 0 0 L 10 5 L 0 10 z", class: cls }, marker);
    }
    const links = svgElement("g", { class: "links" }, svg);
    const labels = svgElement("g", { class: "link-labels" }, svg);
    const nodes = svgElement("g", { class: "nodes" }, svg);

    view.byKey = new Map(graph.nodes.map((node) => [node.key, node]));
    view.layerRight = new Map(); // layer -> the right edge of its rightmost box
    for (const node of graph.nodes) {
      view.layerRight.set(node.layer, Math.max(view.layerRight.get(node.layer) || 0, node.x + node.width));
    }
    view.backLanes = 0;
    view.drawnWidth = width;
    // On a grid (a very large graph) the boxes are not placed by their links: those are not drawn.
    if (graph.layout.kind !== "grid") for (const link of graph.links) drawLink(link, links, labels);
    view.boxes = new Map();
    for (const node of graph.nodes) drawNode(node, nodes);
    graph.layout.drawnWidth = view.drawnWidth;
    svg.setAttribute("viewBox", `0 0 ${view.drawnWidth} ${height}`);
  }

  // A path through `points` whose corners are rounded with `radius`.
  function rounded(points, radius) {
    let d = `M ${points[0][0]} ${points[0][1]}`;
    for (let i = 1; i < points.length - 1; i++) {
      const [px, py] = points[i - 1];
      const [x, y] = points[i];
      const [nx, ny] = points[i + 1];
      const before = Math.hypot(x - px, y - py);
      const after = Math.hypot(nx - x, ny - y);
      const r = Math.min(radius, before / 2, after / 2);
      if (r <= 0) continue;
      d += ` L ${x + ((px - x) / before) * r} ${y + ((py - y) / before) * r}`;
      d += ` Q ${x} ${y} ${x + ((nx - x) / after) * r} ${y + ((ny - y) / after) * r}`;
    }
    const last = points[points.length - 1];
    return `${d} L ${last[0]} ${last[1]}`;
  }

  function widen(right) {
    view.drawnWidth = Math.max(view.drawnWidth, right + 16);
  }

  function drawLink(link, parent, labels) {
    const s = view.byKey.get(link.source);
    const t = view.byKey.get(link.target);
    if (!s || !t) return;
    let d;
    let middle;
    let anchor = "middle";
    if (link.source === link.target) {
      const x = s.x + s.width;
      const y0 = s.y + s.height * 0.25;
      const y1 = s.y + s.height * 0.75;
      d = `M ${x} ${y0} C ${x + 40} ${y0 - 20}, ${x + 40} ${y1 + 20}, ${x} ${y1}`;
      middle = [x + 34, s.y + s.height / 2];
      anchor = "start";
      widen(x + 40 + (link.label ? link.label.length * 6.4 : 0));
    } else if (link.back || t.y <= s.y) {
      // A link back up (it closes a loop) leaves its source downwards, runs up in a lane of its own
      // right of every box of the layers it spans, and enters its target from above.
      const low = Math.min(s.layer, t.layer);
      const high = Math.max(s.layer, t.layer);
      let right = 0;
      for (let layer = low; layer <= high; layer++) right = Math.max(right, view.layerRight.get(layer) || 0);
      const lane = right + 26 + 14 * view.backLanes++;
      const sx = s.x + s.width / 2;
      const sy = s.y + s.height;
      const tx = t.x + t.width / 2;
      const ty = t.y;
      const step = 14;
      d = rounded([[sx, sy], [sx, sy + step], [lane, sy + step], [lane, ty - step], [tx, ty - step], [tx, ty]], 10);
      middle = [lane + 5, (sy + ty) / 2];
      anchor = "start";
      widen(lane + (link.label ? 5 + link.label.length * 6.4 : 0));
    } else {
      const sx = s.x + s.width / 2;
      const sy = s.y + s.height;
      const tx = t.x + t.width / 2;
      const ty = t.y;
      const bend = Math.max(24, (ty - sy) / 2);
      d = `M ${sx} ${sy} C ${sx} ${sy + bend}, ${tx} ${ty - bend}, ${tx} ${ty}`;
      // The label goes beside the lower part of the link, where the links of a fan have parted.
      middle = bezier([sx, sy], [sx, sy + bend], [tx, ty - bend], [tx, ty], 0.62);
      if (Math.abs(tx - sx) > 4) {
        anchor = tx > sx ? "start" : "end";
        middle[0] += tx > sx ? 6 : -6;
      } else {
        anchor = "start";
        middle[0] += 6;
      }
    }
    const classes = ["link"];
    if (link.on_error) classes.push("on-error");
    if (link.conditional) classes.push("conditional");
    if (link.back) classes.push("back");
    svgElement("path", {
      d,
      class: classes.join(" "),
      "marker-end": link.on_error ? "url(#arrow-error)" : "url(#arrow)",
      "data-source": link.source,
      "data-target": link.target,
    }, parent);
    if (link.label) {
      const text = svgElement("text", {
        x: middle[0], y: middle[1], class: `link-label${link.on_error ? " on-error" : ""}`, "text-anchor": anchor,
        "dominant-baseline": "middle",
      }, labels);
      text.textContent = link.label;
    }
  }

  function bezier(p0, p1, p2, p3, t) {
    const u = 1 - t;
    const a = u * u * u;
    const b = 3 * u * u * t;
    const c = 3 * u * t * t;
    const d = t * t * t;
    return [a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]];
  }

  function drawNode(node, parent) {
    const group = svgElement("g", {
      class: "node", "data-node-id": node.key, "data-state": "pending", transform: `translate(${node.x} ${node.y})`,
      tabindex: "0", role: "button",
    }, parent);
    const tip = svgElement("title", {}, group);
    tip.textContent = node.task ? `${node.label}\n${node.task}` : node.label;
    svgElement("rect", { width: node.width, height: node.height, rx: 8, ry: 8 }, group);
    const label = svgElement("text", {
      x: node.width / 2, y: node.height / 2, "text-anchor": "middle", "dominant-baseline": "central", class: "label",
    }, group);
    label.textContent = fit(node.label, node.width);
    const count = svgElement("text", { x: node.width - 6, y: 11, "text-anchor": "end", class: "count" }, group);
    count.textContent = "";
    group.addEventListener("click", (event) => { event.stopPropagation(); select(node.key); });
    group.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") select(node.key); });
    view.boxes.set(node.key, group);
  }

  // ------------------------------------------------------------------ state

  function applyNodes(nodes) {
    for (const [key, record] of Object.entries(nodes)) {
      view.nodes[key] = record;
      const group = view.boxes.get(key);
      if (!group) continue;
      if (group.getAttribute("data-state") !== record.state) group.setAttribute("data-state", record.state);
      const count = group.querySelector(".count");
      const text = record.firings > 1 ? `\u00d7${record.firings}` : "";
      if (count.textContent !== text) count.textContent = text;
    }
    if (view.selected !== null && view.selected in nodes) renderPanel();
  }

  function applyRun(run, now) {
    view.run = run;
    view.clockOffset = now - Date.now() / 1000;
    const badge = $("run-state");
    badge.dataset.state = run.state;
    badge.textContent = run.state;
    document.body.dataset.runState = run.state;
    $("run-message").textContent = run.message || "";
    const total = Math.max(run.total, 1);
    const cancelled = run.cancelled || 0;
    $("bar-done").style.width = `${(100 * run.done) / total}%`;
    $("bar-failed").style.width = `${(100 * run.failed) / total}%`;
    $("bar-cancelled").style.width = `${(100 * cancelled) / total}%`;
    $("progress-text").textContent = `${run.done + run.failed + cancelled}/${run.total}`;
    const counts = [];
    if (run.running) counts.push(`${run.running} running`);
    if (run.failed) counts.push(`${run.failed} failed`);
    if (cancelled) counts.push(`${cancelled} cancelled`);
    $("counts").textContent = counts.join(" \u00b7 ");
    const cancel = $("cancel");
    cancel.hidden = !(run.cancellable && run.state === "running");
    tick();
    if (run.state !== "running" && !view.over) {
      // The stream stays open: the server may still tell why the run ended. It closes it when
      // it stops, and the page then stops listening (see connect).
      view.over = true;
      setConnection("the run is over");
    }
  }

  function tick() {
    const run = view.run;
    if (!run || run.started === null) {
      $("elapsed").textContent = "";
      return;
    }
    const end = run.ended !== null ? run.ended : Date.now() / 1000 + view.clockOffset;
    $("elapsed").textContent = duration(Math.max(0, end - run.started));
  }

  function connect() {
    const source = new EventSource(apiUrl("/api/events"));
    view.source = source;
    source.addEventListener("snapshot", (event) => {
      const data = JSON.parse(event.data);
      view.nodes = {};
      applyNodes(data.nodes);
      applyRun(data.run, data.now);
      if (!view.over) setConnection("live");
    });
    source.addEventListener("batch", (event) => {
      const data = JSON.parse(event.data);
      applyNodes(data.nodes);
      applyRun(data.run, data.now);
    });
    source.addEventListener("open", () => { if (!view.over) setConnection("live"); });
    source.addEventListener("error", () => {
      if (view.over) source.close();
      else setConnection("connection lost: reconnecting\u2026");
    });
  }

  // ------------------------------------------------------------------ the panel

  function select(key) {
    if (view.selected !== null) view.boxes.get(view.selected)?.classList.remove("selected");
    view.selected = key;
    if (key === null) {
      $("panel").hidden = true;
      return;
    }
    view.boxes.get(key)?.classList.add("selected");
    $("panel").hidden = false;
    renderPanel();
  }

  function renderPanel() {
    const key = view.selected;
    const node = view.byKey.get(key);
    const record = view.nodes[key] || { state: "pending" };
    $("panel-title").textContent = node ? node.label : key;
    const fields = $("panel-fields");
    fields.replaceChildren();
    const start = view.run ? view.run.started : null;
    const relative = (time) => (time === null || time === undefined || start === null ? "" : ` (+${duration(time - start)})`);
    const rows = [
      ["state", null],
      ["node id", node ? JSON.stringify(node.id) : key],
      ["task", node && node.task ? `${node.task_type}: ${node.task}` : "\u2014"],
      ["firings", String(record.firings || 0)],
      ["attempts", record.attempts ? String(record.attempts) : "\u2014"],
      ["first start", `${clock(record.started)}${relative(record.started)}`],
      ["last end", `${clock(record.ended)}${relative(record.ended)}`],
      ["duration", duration(record.duration)],
      ["worker", record.worker_pid ? `pid ${record.worker_pid}${record.worker_host ? ` on ${record.worker_host}` : ""}` : "\u2014"],
    ];
    if (record.reused) rows.push(["reused", `${record.reused} firing${record.reused > 1 ? "s" : ""} from the journal`]);
    for (const [name, value] of rows) {
      htmlElement("dt", name, fields);
      const cell = htmlElement("dd", null, fields);
      if (name === "state") {
        const badge = htmlElement("span", record.state, cell);
        badge.className = "badge";
        badge.id = "panel-state";
        badge.dataset.state = record.state;
      } else {
        cell.textContent = value;
      }
    }
    $("panel-error-section").hidden = !record.error;
    $("panel-error").textContent = record.error || "";
    const trace = $("panel-traceback");
    trace.textContent = record.traceback || "";
    trace.hidden = !record.traceback;
  }

  // ------------------------------------------------------------------ pan and zoom

  function setZoom(zoom) {
    const graph = view.graph;
    if (!graph) return;
    view.zoom = Math.min(4, Math.max(0.05, zoom));
    const svg = $("graph");
    svg.style.width = `${graph.layout.drawnWidth * view.zoom}px`;
    svg.style.height = `${graph.layout.height * view.zoom}px`;
  }

  function fitZoom() {
    const graph = view.graph;
    const canvas = $("canvas");
    if (!graph) return 1;
    return Math.min(1, (canvas.clientWidth - 8) / graph.layout.drawnWidth, (canvas.clientHeight - 8) / graph.layout.height);
  }

  function enablePanning() {
    const canvas = $("canvas");
    let drag = null;
    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0 || event.target.closest(".node")) return;
      drag = { x: event.clientX, y: event.clientY, left: canvas.scrollLeft, top: canvas.scrollTop };
      canvas.classList.add("dragging");
    });
    window.addEventListener("pointermove", (event) => {
      if (!drag) return;
      canvas.scrollLeft = drag.left - (event.clientX - drag.x);
      canvas.scrollTop = drag.top - (event.clientY - drag.y);
    });
    window.addEventListener("pointerup", () => { drag = null; canvas.classList.remove("dragging"); });
    canvas.addEventListener("wheel", (event) => {
      if (!event.ctrlKey) return;
      event.preventDefault();
      setZoom(view.zoom * (event.deltaY < 0 ? 1.15 : 1 / 1.15));
    }, { passive: false });
    canvas.addEventListener("click", (event) => { if (!event.target.closest(".node")) select(null); });
    $("zoom-in").addEventListener("click", () => setZoom(view.zoom * 1.25));
    $("zoom-out").addEventListener("click", () => setZoom(view.zoom / 1.25));
    $("zoom-fit").addEventListener("click", () => setZoom(fitZoom()));
    $("panel-close").addEventListener("click", () => select(null));
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") select(null); });
  }

  async function cancelRun() {
    if (!window.confirm("Cancel this run? Its running tasks are stopped.")) return;
    const button = $("cancel");
    button.disabled = true;
    try {
      const response = await fetch(apiUrl("/api/cancel"), { method: "POST", headers: { "X-Aioflow-Request": "cancel" } });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        showNotice(body.error || `the run could not be cancelled (HTTP ${response.status})`, "error");
        button.disabled = false;
      }
    } catch (error) {
      showNotice(`the run could not be cancelled: ${error.message}`, "error");
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ pages

  async function showRun() {
    document.body.dataset.view = "run";
    $("run-view").hidden = false;
    if (view.info.mode === "journal") {
      const back = $("back");
      back.href = pageUrl(null);
      back.hidden = false;
    }
    const graph = await getJSON("/api/graph");
    view.graph = graph;
    $("title").textContent = graph.label;
    document.title = `${graph.label} \u2014 aioflow`;
    if (graph.layout.note) showNotice(graph.layout.note, "info");
    drawGraph(graph);
    enablePanning();
    setZoom(fitZoom() < 0.6 ? 0.6 : fitZoom());
    $("cancel").addEventListener("click", cancelRun);
    window.setInterval(tick, 500);
    connect();
  }

  async function showRuns() {
    document.body.dataset.view = "list";
    $("list-view").hidden = false;
    $("title").textContent = view.info.title;
    document.title = `${view.info.title} \u2014 aioflow`;
    $("run-state").hidden = true;
    const runs = await getJSON("/api/runs");
    const body = document.querySelector("#runs tbody");
    body.replaceChildren();
    for (const run of runs) {
      const row = htmlElement("tr", null, body);
      row.dataset.runId = run.run_id;
      row.dataset.state = run.state;
      const link = htmlElement("a", run.run_id, htmlElement("td", null, row));
      link.href = pageUrl(run.run_id);
      link.className = "run-link";
      htmlElement("td", run.graph_id, row);
      htmlElement("td", new Date(run.started * 1000).toLocaleString(undefined, { hour12: false }), row);
      const badge = htmlElement("span", run.state, htmlElement("td", null, row));
      badge.className = "badge";
      badge.dataset.state = run.state;
      for (const value of [run.finished, run.failed, run.started_firings]) htmlElement("td", String(value), row).className = "num";
    }
    $("no-runs").hidden = runs.length > 0;
    setConnection("");
  }

  async function main() {
    try {
      view.info = await getJSON("/api/info");
      if (view.info.mode === "journal" && !runId) await showRuns();
      else await showRun();
    } catch (error) {
      showNotice(error.message, "error");
      $("title").textContent = "aioflow";
    }
  }

  main();
})();
