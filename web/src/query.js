// Building API query strings from the UI state (pure; unit-tested).

/**
 * Parse the free-form filter box: whitespace-separated KEY=VALUE tokens, where KEY is one of
 * the server's filter fields (GET /api/filters). Returns {pairs, errors}.
 */
export function parseFilterText(text, fieldNames) {
  const pairs = [];
  const errors = [];
  for (const token of (text || "").trim().split(/\s+/).filter(Boolean)) {
    const eq = token.indexOf("=");
    if (eq <= 0 || eq === token.length - 1) {
      errors.push(`"${token}": expected KEY=VALUE`);
      continue;
    }
    const key = token.slice(0, eq).replace(/-/g, "_");
    if (fieldNames && !fieldNames.includes(key)) {
      errors.push(`unknown filter "${key}"`);
      continue;
    }
    pairs.push([key, token.slice(eq + 1)]);
  }
  return { pairs, errors };
}

/** Pairs for a filter object {field: [values]} as the map returns for nodes and edges. */
export function filterPairs(filter) {
  const out = [];
  for (const [key, values] of Object.entries(filter || {})) {
    for (const v of values) out.push([key, String(v)]);
  }
  return out;
}

/** The common filter of map and table: namespaces (OR), time window, typed filters. */
export function basePairs({ namespaces = [], window = "", filterPairs: extra = [] }) {
  const out = namespaces.map((ns) => ["namespace", ns]);
  if (window) out.push(["since", window]);
  return out.concat(extra);
}

/** "a=1&a=2&b=3" from pairs. */
export function toQuery(pairs) {
  return new URLSearchParams(pairs).toString();
}
