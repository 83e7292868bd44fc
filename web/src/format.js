// Pure formatting helpers shared by the map and the table (unit-tested with vitest).

/** "1.5 kB" style byte counts. */
export function fmtBytes(n) {
  let size = Number(n) || 0;
  for (const unit of ["B", "kB", "MB", "GB"]) {
    if (size < 1000 || unit === "GB") {
      return unit === "B" ? `${Math.round(size)} B` : `${size.toFixed(1)} ${unit}`;
    }
    size /= 1000;
  }
  return `${n} B`;
}

/** "12:04:05.123" local time of a Unix-seconds timestamp. */
export function fmtTime(t) {
  const d = new Date(t * 1000);
  const pad = (x, n = 2) => String(x).padStart(n, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** The name of a flow endpoint: ns/pod, node:NAME, the external's name, or the IP. */
export function endpointName(e) {
  if ((e.kind === "pod" || e.kind === "host-network-pod") && e.pod_name) {
    return `${e.namespace}/${e.pod_name}`;
  }
  if (e.kind === "node") return `node:${e.name || e.node_name || e.ip}`;
  return e.name || e.ip;
}

/** The map-level name of an endpoint (workload, not pod): matches the map's node labels. */
export function endpointGroup(e) {
  if ((e.kind === "pod" || e.kind === "host-network-pod") && e.namespace) {
    const name = e.workload ? e.workload.name : e.pod_name;
    return `${e.namespace}/${name}`;
  }
  return endpointName(e);
}

/** "ip:port" with IPv6 brackets. */
export function addr(ip, port) {
  if (port === null || port === undefined) return ip;
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** A one-line L7 summary of a flow: "GET /path → 200" or "DNS api.example.com A rcode 0". */
export function l7Text(l7) {
  if (!l7) return "";
  if (l7.http) {
    const h = l7.http;
    return `${h.method || "?"} ${h.url || ""} → ${h.code ?? "…"}`.trim();
  }
  if (l7.dns) {
    const d = l7.dns;
    return `DNS ${d.query} ${(d.qtypes || []).join(",")} ${d.rcode === null || d.rcode === undefined ? "…" : `rcode ${d.rcode}`}`;
  }
  return "";
}

/** NAT undone: "via 10.96.0.3:9000 snat 172.18.0.1:61234". */
export function natText(nat) {
  if (!nat) return "";
  const parts = [];
  if (nat.original_destination) parts.push(`via ${addr(nat.original_destination.ip, nat.original_destination.port)}`);
  if (nat.translated_source) parts.push(`snat ${addr(nat.translated_source.ip, nat.translated_source.port)}`);
  return parts.join(" ");
}

/** Distinct observing nodes of a flow, comma-separated. */
export function nodesText(flow) {
  return [...new Set((flow.observations || []).map((o) => o.node_name))].join(",");
}
