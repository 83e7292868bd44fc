// The interactive service map: Cytoscape with a dagre (left-to-right) layout.
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";
import svg from "cytoscape-svg";
import { diffIds, toElements } from "./elements.js";

cytoscape.use(dagre);
cytoscape.use(svg);

const STYLE = [
  { selector: "node", style: {
    label: "data(label)", "text-wrap": "wrap", "text-valign": "bottom", "text-margin-y": 4,
    "font-size": 11, color: "#1f2933", "background-color": "#3b82f6", width: 34, height: 34,
    "border-width": 2, "border-color": "#1e40af" } },
  { selector: "node.pod", style: { "background-color": "#93c5fd" } },
  { selector: "node.service", style: { shape: "round-rectangle", "background-color": "#a78bfa", "border-color": "#5b21b6", width: 40, height: 24 } },
  { selector: "node.external", style: { shape: "diamond", "background-color": "#fbbf24", "border-color": "#92400e" } },
  { selector: "node.world", style: { shape: "ellipse", "background-color": "#d1d5db", "border-color": "#4b5563", width: 44, height: 44 } },
  { selector: "node.unknown", style: { shape: "diamond", "background-color": "#e5e7eb", "border-color": "#6b7280" } },
  { selector: "node.node", style: { shape: "rectangle", "background-color": "#34d399", "border-color": "#065f46" } },
  { selector: "node.has-drops", style: { "border-color": "#dc2626", "border-width": 4 } },
  { selector: "edge", style: {
    width: "data(width)", "curve-style": "bezier", "target-arrow-shape": "triangle",
    "line-color": "#94a3b8", "target-arrow-color": "#94a3b8", label: "data(label)",
    "font-size": 9, color: "#334155", "text-background-color": "#ffffff",
    "text-background-opacity": 0.85, "text-background-padding": 2, "text-rotation": "autorotate" } },
  { selector: "edge.l7", style: { "line-style": "solid", "line-color": "#64748b" } },
  { selector: "edge.errors", style: { "line-color": "#f97316", "target-arrow-color": "#f97316" } },
  { selector: "edge.dropped", style: { "line-color": "#dc2626", "target-arrow-color": "#dc2626", color: "#b91c1c" } },
  { selector: ":selected", style: { "overlay-color": "#2563eb", "overlay-opacity": 0.18, "overlay-padding": 6 } },
];

const MAX_FIT_ZOOM = 1.4;
const LAYOUT = { name: "dagre", rankDir: "LR", nodeSep: 40, rankSep: 120, edgeSep: 12, animate: false, fit: true, padding: 30 };

/** Create the map in `container`; `onSelect({kind: "node"|"edge"|null, model})` on clicks. */
export function createMap(container, onSelect) {
  const cy = cytoscape({
    container, style: STYLE, elements: [], minZoom: 0.2, maxZoom: 3,
    boxSelectionEnabled: false,
  });
  cy.on("tap", "node", (ev) => onSelect({ kind: "node", model: ev.target.data("model") }));
  cy.on("tap", "edge", (ev) => onSelect({ kind: "edge", model: ev.target.data("model") }));
  cy.on("tap", (ev) => { if (ev.target === cy) onSelect({ kind: null, model: null }); });
  return cy;
}

/** Show `model` (GET /api/map): update data in place, re-layout only when ids changed. */
export function updateMap(cy, model) {
  const elements = toElements(model);
  const { added, removed, relayout } = diffIds(cy.elements().map((e) => e.id()), elements.map((e) => e.data.id));
  cy.batch(() => {
    for (const id of removed) cy.getElementById(id).remove();
    const fresh = new Set(added);
    // nodes before edges so an edge's ends exist when it is added
    cy.add(elements.filter((el) => fresh.has(el.data.id)));
    for (const el of elements) {
      if (fresh.has(el.data.id)) continue;
      const existing = cy.getElementById(el.data.id);
      existing.data(el.data);
      existing.classes(el.classes);
    }
  });
  if (relayout) {
    cy.layout(LAYOUT).run();
    if (cy.zoom() > MAX_FIT_ZOOM) {
      cy.zoom(MAX_FIT_ZOOM);
      cy.center();
    }
  }
}

/** The graph as plain ids, for tests and for the JSON export's summary. */
export function graphIds(cy) {
  return {
    nodes: cy.nodes().map((n) => n.id()).sort(),
    edges: cy.edges().map((e) => e.id()).sort(),
  };
}
