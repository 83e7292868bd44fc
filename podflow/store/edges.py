"""Service-map edges over the ``connections`` table, aggregated in two steps.

:data:`podflow.store.sql.EDGES_SQL` groups merged rows by map-node keys it derives
per row (string CASEs) and then builds a histogram and a distinct list per edge: over 10M
connections most of the time goes into those per-row string operations. The store instead
numbers the distinct *edge ends* of its connections at write time (the raw columns the
map-node rules read, :data:`~podflow.store.schema.EDGE_END_COLUMNS`, in table ``edge_ends``)
and keeps that number in ``connections.edge_id``. A map query then:

1. groups the matching connections by ``(edge_id, verdict, nat_snat_ip)`` (integers and
   two small strings: as cheap as a plain GROUP BY), summing counts, bytes and packets;
2. joins the few resulting rows to ``edge_ends`` and applies servicemap's own map-node rules
   (``end_sql``: the rules stay in one place and apply at query time, so changing them
   needs no rewrite of stored data; a rule reading a column not listed here fails loudly);
3. folds them into edges exactly as ``EDGES_SQL`` would (same output columns, read by
   :func:`~podflow.store.sql.edge_from_row`).

Tests keep ``DuckDBStore.map_edges`` equal to :func:`~podflow.query.servicemap.build_edges`.
"""

from __future__ import annotations

import duckdb

from podflow.store.schema import EDGE_END_COLUMNS
from podflow.store.sql import end_sql

_COLS = ", ".join(EDGE_END_COLUMNS)
_SAME = " AND ".join(f"c.{c} IS NOT DISTINCT FROM e.{c}" for c in EDGE_END_COLUMNS)


def number_edges(con: duckdb.DuckDBPyConnection) -> None:
    """Give every connection without an ``edge_id`` one (adding new edge ends as needed)."""
    con.execute(f"""INSERT INTO edge_ends
        SELECT (SELECT coalesce(max(edge_id), 0) FROM edge_ends) + row_number() OVER (), *
        FROM (SELECT {_COLS} FROM connections WHERE edge_id IS NULL
              EXCEPT SELECT {_COLS} FROM edge_ends)""")
    con.execute(f"UPDATE connections c SET edge_id = e.edge_id FROM edge_ends e "
                f"WHERE c.edge_id IS NULL AND {_SAME}")


_KEYS = "s_kind, s_ns, s_wl, s_key, d_kind, d_ns, d_wl, d_key, service, dst_port, protocol"


def edges_sql(where: str) -> str:
    """The edges of the connections matching ``where`` (rows as ``EDGES_SQL`` gives)."""
    return f"""
WITH pre AS (SELECT edge_id, verdict, nat_snat_ip, count(*) AS n,
                    sum(bytes_to_dst + bytes_to_src) AS b,
                    sum(packets_to_dst + packets_to_src) AS p, min(time) AS f,
                    max(coalesce(end_time, time)) AS l
             FROM connections WHERE {where} GROUP BY edge_id, verdict, nat_snat_ip),
ends AS (SELECT *, {end_sql("src", "s")}, {end_sql("dst", "d")},
                CASE WHEN svc_name IS NOT NULL THEN coalesce(svc_namespace, '') || '/' ||
                svc_name END AS service
         FROM pre JOIN edge_ends USING (edge_id)),
per_verdict AS (SELECT {_KEYS}, verdict, sum(n)::BIGINT AS n, sum(b) AS b, sum(p) AS p, min(f) AS f,
                       max(l) AS l, max(s_xname) AS s_xname, max(d_xname) AS d_xname,
                       list(nat_snat_ip) FILTER (WHERE d_kind = 'external'
                                                 AND nat_snat_ip IS NOT NULL) AS ips
                FROM ends GROUP BY {_KEYS}, verdict)
SELECT s_kind, s_ns, s_wl, s_key, max(s_xname) AS s_xname,
       d_kind, d_ns, d_wl, d_key, max(d_xname) AS d_xname,
       service, dst_port AS port, protocol, sum(n) AS connections, sum(b) AS bytes,
       sum(p) AS packets, list_sort(list_distinct(flatten(list(ips)))) AS snat,
       map(list(verdict ORDER BY verdict), list(n ORDER BY verdict)) AS verdicts,
       min(f) AS first_seen, max(l) AS last_seen
FROM per_verdict GROUP BY {_KEYS}"""
