// The map model (GET /api/map) -> Cytoscape elements (pure; unit-tested).

const KIND_LABEL = { node: "node", service: "svc", world: "world", unknown: "?" };

/** Two-line label: the name, then the namespace or the kind. */
export function nodeLabel(n) {
  const second = n.namespace || KIND_LABEL[n.kind] || (n.ips && n.ips.length > 1 ? `${n.ips.length} IPs` : "");
  return second ? `${n.label}\n${second}` : String(n.label);
}

/** Edge label: ports, and a drop marker. */
export function edgeLabel(e) {
  const ports = e.ports.slice(0, 3).join(" ") + (e.ports.length > 3 ? " …" : "");
  return e.dropped ? `${ports}  ✖${e.dropped}` : ports;
}

/** Cytoscape elements for a graph model, with classes for kinds and drops. */
export function toElements(model) {
  const nodes = model.nodes.map((n) => ({
    group: "nodes",
    data: { id: n.id, label: nodeLabel(n), kind: n.kind, model: n },
    classes: [n.kind, n.dropped ? "has-drops" : ""].filter(Boolean).join(" "),
  }));
  const edges = model.edges.map((e) => ({
    group: "edges",
    data: {
      id: e.id, source: e.source, target: e.target, label: edgeLabel(e),
      width: Math.min(8, 1.5 + Math.log10(1 + e.connections) * 2), model: e,
    },
    classes: [e.dropped ? "dropped" : "", e.errors ? "errors" : "", e.l7 && (e.l7.http || e.l7.dns) ? "l7" : ""]
      .filter(Boolean).join(" "),
  }));
  return nodes.concat(edges);
}

/** What changed between two element lists: ids to add, remove, and whether layout must rerun. */
export function diffIds(oldIds, newIds) {
  const before = new Set(oldIds);
  const after = new Set(newIds);
  const added = [...after].filter((id) => !before.has(id));
  const removed = [...before].filter((id) => !after.has(id));
  return { added, removed, relayout: added.length > 0 || removed.length > 0 };
}
