// Export the map as PNG (Cytoscape's renderer), SVG (cytoscape-svg) or the JSON model.

function download(name, blob) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function stamp() {
  return new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
}

/** Save the whole map as a PNG file. */
export function exportPng(cy) {
  download(`podflow-map-${stamp()}.png`, cy.png({ full: true, scale: 2, bg: "#ffffff", output: "blob" }));
}

/** Save the whole map as an SVG file. */
export function exportSvg(cy) {
  const text = cy.svg({ full: true, scale: 1, bg: "#ffffff" });
  download(`podflow-map-${stamp()}.svg`, new Blob([text], { type: "image/svg+xml" }));
}

/** Save the model the map was drawn from (GET /api/map) and the query that produced it. */
export function exportJson(model, query) {
  const body = JSON.stringify({ query, ...model }, null, 2);
  download(`podflow-map-${stamp()}.json`, new Blob([body], { type: "application/json" }));
}
