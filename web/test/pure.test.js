import { describe, expect, it } from "vitest";
import { endpointGroup, fmtBytes, l7Text, natText } from "../src/format.js";
import { basePairs, filterPairs, parseFilterText, toQuery } from "../src/query.js";
import { diffIds, edgeLabel, toElements } from "../src/elements.js";

describe("format", () => {
  it("formats bytes and endpoints", () => {
    expect(fmtBytes(512)).toBe("512 B");
    expect(fmtBytes(1500)).toBe("1.5 kB");
    expect(endpointGroup({ kind: "pod", namespace: "shop", pod_name: "fe-1", workload: { name: "fe" } })).toBe("shop/fe");
    expect(endpointGroup({ kind: "external", ip: "1.2.3.4", name: "db" })).toBe("db");
  });
  it("summarises L7 and NAT", () => {
    expect(l7Text({ http: { method: "GET", url: "/a", code: 200 } })).toBe("GET /a → 200");
    expect(natText({ original_destination: { ip: "10.96.0.3", port: 9000 }, translated_source: null })).toBe("via 10.96.0.3:9000");
  });
});

describe("query", () => {
  it("parses the filter box against known fields", () => {
    const { pairs, errors } = parseFilterText("to_port=9000 label=app=fe bogus=1 x", ["to_port", "label"]);
    expect(pairs).toEqual([["to_port", "9000"], ["label", "app=fe"]]);
    expect(errors.length).toBe(2);
  });
  it("builds repeated parameters", () => {
    const pairs = basePairs({ namespaces: ["a", "b"], window: "5m", filterPairs: filterPairs({ to_port: [1] }) });
    expect(toQuery(pairs)).toBe("namespace=a&namespace=b&since=5m&to_port=1");
  });
});

describe("elements", () => {
  const model = {
    nodes: [{ id: "a", label: "a", kind: "workload", namespace: "ns", dropped: 0 },
      { id: "b", label: "b", kind: "external", dropped: 2, ips: ["1.1.1.1"] }],
    edges: [{ id: "a->b", source: "a", target: "b", ports: ["443/TCP"], connections: 9, dropped: 2, errors: 0, l7: { http: null, dns: null } }],
  };
  it("marks drops and labels edges", () => {
    const els = toElements(model);
    expect(els.find((e) => e.data.id === "b").classes).toContain("has-drops");
    expect(els.find((e) => e.data.id === "a->b").classes).toContain("dropped");
    expect(edgeLabel(model.edges[0])).toBe("443/TCP  ✖2");
  });
  it("diffs ids", () => {
    expect(diffIds(["a", "b"], ["b", "c"])).toEqual({ added: ["c"], removed: ["a"], relayout: true });
  });
});
