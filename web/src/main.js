// podflow web UI: the service map (top), the details of the selection, the flow table (bottom).
// State lives in `state`; every change calls refreshMap()/refreshFlows(). The graph model is
// exposed on window.__podflow for tests and for the curious (ids of nodes and edges).
import "./style.css";
import { createMap, graphIds, updateMap } from "./graph.js";
import { exportJson, exportPng, exportSvg } from "./exporting.js";
import { FlowTable } from "./table.js";
import { basePairs, filterPairs, parseFilterText, toQuery } from "./query.js";
import { renderDetails } from "./details.js";

const $ = (id) => document.getElementById(id);
const state = { fields: [], model: { nodes: [], edges: [] }, selection: null, mapQuery: "" };
const debug = (window.__podflow = { graph: { nodes: [], edges: [] }, model: null, flows: [], mapLoads: 0, flowLoads: 0, cy: null, errors: [] });

function showError(text) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
  if (text) debug.errors.push(text);
}

async function getJson(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function selectedNamespaces() {
  return [...$("namespaces").selectedOptions].map((o) => o.value);
}

/** The filter shared by map and table, or null (with a message) when the box is invalid. */
function commonPairs() {
  const { pairs, errors } = parseFilterText($("filters").value, state.fields);
  if (errors.length) {
    showError(`Filters: ${errors.join("; ")}`);
    return null;
  }
  return basePairs({ namespaces: selectedNamespaces(), window: $("window").value, filterPairs: pairs });
}

async function refreshMap() {
  const pairs = commonPairs();
  if (!pairs) return;
  if ($("services").checked) pairs.push(["services", "true"]);
  if ($("world").checked) pairs.push(["world", "true"]);
  state.mapQuery = toQuery(pairs);
  try {
    const model = await getJson(`api/map?${state.mapQuery}`);
    showError("");
    state.model = model;
    updateMap(debug.cy, model);
    debug.model = model;
    debug.graph = graphIds(debug.cy);
    debug.mapLoads += 1;
    const drops = model.edges.reduce((n, e) => n + e.dropped, 0);
    $("map-status").textContent = model.nodes.length
      ? `${model.nodes.length} nodes, ${model.edges.length} edges` + (drops ? `, ${drops} dropped` : "")
      : "no flows in this window yet";
    addNamespaces(model.nodes.map((n) => n.namespace).filter(Boolean));
    if (state.selection) {
      const fresh = [...model.nodes, ...model.edges].find((x) => x.id === state.selection.model.id);
      if (fresh) state.selection = { ...state.selection, model: fresh };
      renderDetails($("details"), state.selection);
    }
  } catch (err) {
    showError(`Map: ${err.message}`);
  }
}

function flowQuery() {
  const pairs = commonPairs();
  if (!pairs) return null;
  const sel = state.selection ? filterPairs(state.selection.model.filter) : [];
  return toQuery(pairs.concat(sel));
}

async function refreshFlows() {
  const query = flowQuery();
  if (query === null) return;
  try {
    const page = await getJson(`api/flows?limit=200&${query}`);
    table.set(page.flows);
    debug.flowLoads += 1;
  } catch (err) {
    showError(`Flows: ${err.message}`);
  }
  if ($("follow").checked) table.follow(`${query}&last=0`, (s) => { $("flow-count").dataset.store = s; });
  else table.stop();
}

function select(sel) {
  state.selection = sel && sel.kind ? sel : null;
  const chip = $("selection");
  if (state.selection) {
    chip.hidden = false;
    chip.textContent = `${state.selection.kind}: ${state.selection.model.id} ✕`;
    chip.dataset.id = state.selection.model.id;
  } else {
    chip.hidden = true;
    chip.dataset.id = "";
  }
  renderDetails($("details"), state.selection);
  refreshFlows();
}

function addNamespaces(names) {
  const box = $("namespaces");
  const have = new Set([...box.options].map((o) => o.value));
  for (const ns of [...new Set(names)].sort()) {
    if (!have.has(ns)) box.add(new Option(ns, ns));
  }
  box.size = Math.min(4, Math.max(1, box.options.length));
}

async function loadInventory() {
  try {
    const inv = await getJson("api/inventory");
    addNamespaces([...inv.pods.map((p) => p.namespace), ...inv.services.map((s) => s.namespace)]);
    const agents = inv.agents || [];
    $("agents").textContent = agents.length
      ? `${agents.length} agents · ${inv.cni_profiles.join(", ") || "profile ?"} · sources ${inv.sources.join(", ")}`
      : "no agent reports yet";
  } catch (err) {
    $("agents").textContent = `inventory: ${err.message}`;
  }
}

const table = new FlowTable($("flows").tBodies[0], (list) => {
  debug.flows = list;
  $("flow-count").textContent = `${list.length} shown`;
});

function init() {
  debug.cy = createMap($("map"), select);
  for (const id of ["namespaces", "window", "services", "world"]) {
    $(id).addEventListener("change", () => { refreshMap(); if (id !== "services" && id !== "world") refreshFlows(); });
  }
  $("filters").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { refreshMap(); refreshFlows(); } });
  $("refresh").addEventListener("click", () => { refreshMap(); refreshFlows(); });
  $("follow").addEventListener("change", refreshFlows);
  $("selection").addEventListener("click", () => { debug.cy.elements().unselect(); select(null); });
  $("export-png").addEventListener("click", () => exportPng(debug.cy));
  $("export-svg").addEventListener("click", () => exportSvg(debug.cy));
  $("export-json").addEventListener("click", () => exportJson(state.model, state.mapQuery));
  setInterval(() => { if ($("auto").checked && !document.hidden) refreshMap(); }, 5000);
  setInterval(() => { if (!document.hidden) loadInventory(); }, 15000);
  getJson("api/filters")
    .then((f) => { state.fields = f.map((x) => x.name); })
    .catch(() => {})
    .finally(() => { refreshMap(); refreshFlows(); loadInventory(); });
}

init();
