"""One style for every plugin registry: named entries with help text and a lazy target.

Sources (:data:`podflow.sources.registry.SOURCES`), CNI profiles
(:data:`podflow.cni.detect.PROFILES`), metrics handlers
(:data:`podflow.metrics.registry.HANDLERS`) and lab datapaths
(:data:`podflow.lab.datapath.DATAPATHS`) are each a :class:`Registry` of :class:`Plugin`
entries: a name, one help text, and where the plugin lives as a ``"module:attribute"``
string. Declaring a registry imports nothing; :meth:`Plugin.load` imports the one module
asked for (no import side effects, principle 4 of the design).

A registry whose plugins are used one way subclasses :class:`Plugin` with one typed method
that loads and calls the target (``SourceInfo.create(opts)``,
``ProfileDetector.detect(snapshot, node, inventory)``, ``HandlerInfo.create(registry,
options, ttl)``, ``DatapathInfo.create()``).

Example::

    >>> reg = Registry("codec", [Plugin("json", "JSON text.", "json:dumps")])
    >>> sorted(reg), reg["json"].help, reg.load("json")({"a": 1})
    (['json'], 'JSON text.', '{"a": 1}')
    >>> reg.entry("xml")
    Traceback (most recent call last):
    ...
    KeyError: "unknown codec 'xml'; known: json"
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar


@dataclass(frozen=True, slots=True)
class Plugin:
    """One registry entry: a name, its help, and where its implementation lives."""

    name: str
    """The name users give (``--sources conntrack``, ``--metrics flow``, ``cni: macvlan``)."""
    help: str
    """What it does (shown by ``--help``, ``--explain`` and the docs)."""
    target: str
    """``"package.module:attribute"``: the factory, class or function, imported on use."""

    def load(self) -> Any:
        """Import the target's module and return the attribute."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


P = TypeVar("P", bound=Plugin)


class Registry(Mapping[str, P], Generic[P]):
    """The plugins of one kind, by name, in declaration order."""

    def __init__(self, kind: str, plugins: Iterable[P]) -> None:
        """``kind`` names the plugins in error messages (``"source"``, ``"metric"``)."""
        self.kind = kind
        self._plugins = {p.name: p for p in plugins}

    def __getitem__(self, name: str) -> P:
        return self._plugins[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._plugins)

    def __len__(self) -> int:
        return len(self._plugins)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._plugins)})"

    def entry(self, name: str) -> P:
        """The entry named ``name``; KeyError naming the known ones if there is none."""
        try:
            return self._plugins[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self)}") from None

    def load(self, name: str) -> Any:
        """The implementation of ``name`` (see :meth:`Plugin.load`)."""
        return self.entry(name).load()

    def describe(self) -> str:
        """One ``name: help`` line per plugin."""
        return "\n".join(f"{p.name}: {p.help}" for p in self._plugins.values())
