// The details panel of the selected node or edge.
import { fmtBytes } from "./format.js";

function line(dl, key, value) {
  if (value === undefined || value === null || value === "" || (Array.isArray(value) && !value.length)) return;
  const dt = document.createElement("dt");
  dt.textContent = key;
  const dd = document.createElement("dd");
  dd.textContent = Array.isArray(value) ? value.join(", ") : String(value);
  dl.append(dt, dd);
}

function counts(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
}

/** Fill `panel` with the selection's facts, or hide it. */
export function renderDetails(panel, sel) {
  panel.hidden = !sel;
  if (!sel) return;
  const m = sel.model;
  const title = document.createElement("h3");
  title.textContent = sel.kind === "edge" ? `${m.source} → ${m.target}` : m.id;
  const dl = document.createElement("dl");
  if (sel.kind === "node") {
    line(dl, "kind", m.kind);
    line(dl, "namespace", m.namespace);
    line(dl, "IPs", m.ips);
    line(dl, "DNS names", m.dns_names);
    line(dl, "connections in / out", `${m.connections_in} / ${m.connections_out}`);
    line(dl, "bytes", fmtBytes(m.bytes));
    line(dl, "dropped", m.dropped || null);
  } else {
    line(dl, "ports", m.ports);
    line(dl, "services", m.services);
    line(dl, "connections", m.connections);
    line(dl, "bytes", fmtBytes(m.bytes));
    line(dl, "verdicts", counts(m.verdicts));
    line(dl, "masqueraded to", m.snat);
    if (m.l7 && m.l7.http) {
      line(dl, "HTTP codes", counts(m.l7.http.codes));
      line(dl, "HTTP methods", counts(m.l7.http.methods));
      line(dl, "HTTP paths", m.l7.http.paths);
    }
    if (m.l7 && m.l7.dns) {
      line(dl, "DNS names", m.l7.dns.names);
      line(dl, "DNS rcodes", counts(m.l7.dns.rcodes));
    }
  }
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.textContent = "Flows below are filtered to this selection; click the chip to clear.";
  panel.replaceChildren(title, dl, hint);
}
