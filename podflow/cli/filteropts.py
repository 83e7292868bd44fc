"""The filter options of the reading commands, built from :class:`FilterSpec`'s declaration.

Each FilterSpec field declares its metavar, help and short flag once
(:class:`~podflow.query.filter.Declared`, read through
:func:`~podflow.query.params.filter_fields`); :func:`with_filters` turns them into typer
options of a command: it replaces the command's keyword-only ``filters`` parameter, in the
signature typer reads, by one option per field (``--to-port PORT``, ``-n NS`` ...) and calls
the command with ``filters={name: values}``, which :func:`podflow.query.params.spec_from_multi`
parses exactly as the HTTP API parses its query string.

Example::

    @app.command()
    @with_filters()
    def observe(store: Store = None, *, filters: FilterValues) -> None:
        spec = spec_from_multi(filters)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

import typer

from podflow.query.params import FieldInfo, filter_fields

PANEL = "Filters"
"""The help panel the filter options are listed in."""

FilterValues = dict[str, Any]
"""What a command decorated with :func:`with_filters` receives: ``{field: values or None}``."""

_F = TypeVar("_F", bound=Callable[..., Any])


def option(info: FieldInfo, panel: str = PANEL) -> inspect.Parameter:
    """The typer option of one filter field, as a keyword-only parameter defaulting to None."""
    decls = [info.flag, *([info.short] if info.short else [])]
    if not info.repeated:
        kind: Any = str | None   # parsed by spec_from_multi (a time, the last value ...)
    elif info.kind == "int":
        kind = list[int] | None
    else:
        kind = list[str] | None
    opt = typer.Option(*decls, metavar=info.metavar, help=info.help, rich_help_panel=panel)
    return inspect.Parameter(info.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind, opt])


def with_filters(only: Iterable[str] | None = None) -> Callable[[_F], _F]:
    """Give a command one option per filter field (or the fields in ``only``, in spec order).

    The command declares ``*, filters: FilterValues`` and receives the values there.
    """
    wanted = None if only is None else set(only)
    infos = [f for f in filter_fields().values() if wanted is None or f.name in wanted]
    if wanted is not None and wanted - {f.name for f in infos}:
        raise ValueError(f"not filter fields: {sorted(wanted - {f.name for f in infos})}")
    names = [f.name for f in infos]

    def decorate(command: _F) -> _F:
        sig = inspect.signature(command, eval_str=True)
        if "filters" not in sig.parameters:
            raise TypeError(f"{command.__name__} has no keyword-only 'filters' parameter")
        params = [p for p in sig.parameters.values() if p.name != "filters"]
        params += [option(f) for f in infos]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            filters = {n: kwargs.pop(n, None) for n in names}
            return command(*args, filters=filters, **kwargs)

        new = sig.replace(parameters=params)
        run.__signature__ = new  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        if new.return_annotation is not inspect.Signature.empty:
            run.__annotations__["return"] = new.return_annotation
        return run  # type: ignore[return-value]

    return decorate
