// The flow table: one row per connection, newest first; optional live follow over SSE.
import { addr, endpointGroup, endpointName, fmtBytes, fmtTime, l7Text, natText, nodesText } from "./format.js";

const MAX_ROWS = 500;
// Observations of one connection from several nodes may start a few ms apart; the store
// merges those within 10 s (podflow.store.correlate.SPLIT_GAP), and so does the table.
const SAME_CONNECTION_S = 10;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function row(f) {
  const tr = document.createElement("tr");
  tr.dataset.testid = "flow-row";
  tr.dataset.src = endpointGroup(f.source);
  tr.dataset.dst = endpointGroup(f.destination);
  tr.dataset.key = `${f.flow_id}|${f.time}`;
  if (f.verdict === "DROPPED") tr.className = "dropped";
  else if (f.verdict === "ERROR") tr.className = "errors";
  const svc = f.destination_service;
  const bytes = f.traffic.to_destination.bytes + f.traffic.to_source.bytes;
  tr.append(
    cell(fmtTime(f.time)),
    cell(`${endpointName(f.source)} ${addr(f.source.ip, f.source.port)}`),
    cell(`${endpointName(f.destination)} ${addr(f.destination.ip, f.destination.port)}`),
    cell(svc ? `${svc.namespace}/${svc.name}` : ""),
    cell(`${f.destination.port ?? ""}/${f.protocol}`),
    cell(f.verdict + (f.drop_reason_desc ? ` (${f.drop_reason_desc})` : ""), "verdict"),
    cell(fmtBytes(bytes), "num"),
    cell(l7Text(f.l7)),
    cell(natText(f.nat)),
    cell(nodesText(f)),
  );
  return tr;
}

/** The table in `tbody`, keeping one row per connection (a newer version replaces it). */
export class FlowTable {
  constructor(tbody, onChange) {
    this.tbody = tbody;
    this.onChange = onChange;
    this.flows = new Map();
    this.source = null;
  }

  /** Replace everything by `flows` (oldest first, as the API returns them). */
  set(flows) {
    this.flows = new Map(flows.map((f) => [`${f.flow_id}|${f.time}`, f]));
    this.render();
  }

  /** Add or update flows that arrived live (a connection seen again replaces its row). */
  merge(flows) {
    for (const f of flows) {
      for (const [key, old] of this.flows) {
        if (f.flow_id && old.flow_id === f.flow_id && Math.abs(old.time - f.time) <= SAME_CONNECTION_S) {
          this.flows.delete(key);
        }
      }
      this.flows.set(`${f.flow_id}|${f.time}`, f);
    }
    while (this.flows.size > MAX_ROWS) this.flows.delete(this.flows.keys().next().value);
    this.render();
  }

  render() {
    const list = [...this.flows.values()].sort((a, b) => b.time - a.time);
    this.tbody.replaceChildren(...list.map(row));
    this.onChange(list);
  }

  /** Follow `/api/flows/stream?query`; call `onStatus(text)` on store status changes. */
  follow(query, onStatus) {
    this.stop();
    const es = new EventSource(`api/flows/stream?${query}`);
    let pending = [];
    let timer = null;
    es.addEventListener("flow", (ev) => {
      pending.push(JSON.parse(ev.data));
      if (!timer) {
        timer = setTimeout(() => { this.merge(pending); pending = []; timer = null; }, 200);
      }
    });
    es.addEventListener("status", (ev) => onStatus(JSON.parse(ev.data).store));
    es.onerror = () => onStatus("reconnecting");
    this.source = es;
  }

  stop() {
    if (this.source) this.source.close();
    this.source = null;
  }
}
