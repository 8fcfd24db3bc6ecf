"""What a PromQL query uses, read by a real PromQL parser (`promql-parser`, PyPI: the Rust
`promql-parser` crate of GreptimeDB, which follows Prometheus' own grammar).

`query_uses(query)` parses the query (a syntax error raises) and returns every metric name it
selects, the label names each selector matches on, and the label names of every `by`,
`without`, `on` and `ignoring` clause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import promql_parser


@dataclass
class QueryUses:
    metrics: set[str] = field(default_factory=set)
    matchers: dict[str, set[str]] = field(default_factory=dict)
    """Label names matched on, per metric name."""
    grouping: set[str] = field(default_factory=set)
    """Label names of by/without/on/ignoring clauses."""


def _labels(modifier: Any) -> list[str]:
    labels = getattr(modifier, "labels", None)
    return list(labels or [])


def _walk(node: Any, uses: QueryUses) -> None:
    if isinstance(node, promql_parser.VectorSelector):
        assert node.name, f"a selector without a metric name: {node}"
        uses.metrics.add(node.name)
        names = {m.name for m in node.matchers.matchers} | {
            m.name for group in node.matchers.or_matchers for m in group
        }
        uses.matchers.setdefault(node.name, set()).update(names - {"__name__"})
    elif isinstance(node, promql_parser.MatrixSelector):
        _walk(node.vector_selector, uses)
    elif isinstance(node, promql_parser.AggregateExpr):
        if node.modifier is not None:
            uses.grouping.update(_labels(node.modifier))
        _walk(node.expr, uses)
        if node.param is not None:
            _walk(node.param, uses)
    elif isinstance(node, promql_parser.BinaryExpr):
        if node.modifier is not None and node.modifier.matching is not None:
            uses.grouping.update(_labels(node.modifier.matching))
        _walk(node.lhs, uses)
        _walk(node.rhs, uses)
    elif isinstance(node, promql_parser.Call):
        for argument in node.args:
            _walk(argument, uses)
    elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        _walk(node.expr, uses)
    elif isinstance(node, (promql_parser.NumberLiteral, promql_parser.StringLiteral)):
        return
    else:
        raise TypeError(f"unexpected PromQL node {type(node).__name__}: {node}")


def query_uses(query: str) -> QueryUses:
    uses = QueryUses()
    _walk(promql_parser.parse(query), uses)
    return uses
