"""Declared report sections: one spec per section, in display order.

Every section of a report page is declared once, by a :class:`SectionSpec`: its
id (the HTML anchor), its title (heading and table-of-contents entry), the view
fields it reads, when it counts as measured, a builder that turns the view into
the context of its partial template (figures, notes), and that partial
(``templates/section-<id>.html.j2``). A :class:`SectionList` holds the specs of
one kind of page in display order; the renderer and the page templates loop over
it and know no section by name. The lists themselves are in
:mod:`reports._sections_run` and :mod:`reports._sections_compare`.

Adding a section is a view field, one spec, one partial and, optionally, one
figure function (CONTRIBUTING.md, "Add a report section").
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._checks import set_field
from ._errors import ReportError

__all__ = ["Context", "Section", "SectionList", "SectionSpec", "no_context"]

#: The view model a page shows (:class:`~reports.RunReport` or :class:`~reports.CompareReport`).
V = TypeVar("V")
#: What a section's builder hands to its partial template, where it is ``ctx``.
Context = Mapping[str, Any]

_ID = re.compile(r"[a-z][a-z0-9-]*")


def no_context(view: object) -> Context:
    """The builder of a section whose partial reads the view alone."""
    return {}


def _has_data(obj: object, path: str) -> bool:
    head, _, rest = path.partition(".")
    value = getattr(obj, head)
    if not rest:
        return bool(value)
    return any(_has_data(item, rest) for item in value)


@dataclass(frozen=True)
class SectionSpec(Generic[V]):
    """One section of a report page: what it reads, how it is drawn, when it is measured.

    Attributes:
        id: HTML id and table-of-contents anchor, e.g. ``"erf-maps"``; unique on a page.
        title: Heading and table-of-contents label.
        reads: The view fields the section shows, e.g. ``("attention_distance", "erf")``;
            a single name is accepted. A dotted path reads a field of every element of a
            tuple field: ``"runs.erf"`` is the ``erf`` of every run.
        build: View → the context of the partial template, where it is ``ctx``: rendered
            figures, notes on what was left out. Called only for a measured section.
        measured: View → whether the section has anything to show; ``None`` (the default)
            means "some field in ``reads`` holds data". A section that is not measured
            shows ``empty_note`` instead of its partial.
        template: The partial, relative to ``templates/``; defaults to
            ``section-<id>.html.j2`` (beside the page templates: the package data
            ``templates/*`` ships no subfolder). It sees ``view`` (the whole view model),
            ``ctx`` and ``section``.
        empty_note: What a section that is not measured says; empty for the generic
            sentence ("Not measured in this run: ...").
        toc_tag: Tag after a not-measured section's table-of-contents entry.
    """

    id: str
    title: str
    reads: tuple[str, ...] | str
    build: Callable[[V], Context] = no_context
    measured: Callable[[V], bool] | None = None
    template: str = ""
    empty_note: str = ""
    toc_tag: str = "not measured"

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise ReportError(
                f"section id {self.id!r} is not a lower-case HTML id (letters, digits, '-'), "
                "e.g. 'erf-maps'"
            )
        reads = (self.reads,) if isinstance(self.reads, str) else tuple(self.reads)
        if not reads or not all(isinstance(r, str) and r for r in reads):
            raise ReportError(
                f"section {self.id!r}: reads must name the view fields it shows, got {self.reads!r}"
            )
        set_field(self, "reads", reads)
        if not self.template:
            set_field(self, "template", f"section-{self.id}.html.j2")

    def is_measured(self, view: V) -> bool:
        """Whether the section has anything to show for ``view``."""
        if self.measured is not None:
            return self.measured(view)
        return any(_has_data(view, path) for path in self.reads)

    def section(self, view: V) -> Section:
        """This section of ``view`` as the page template needs it (figures drawn if measured)."""
        measured = self.is_measured(view)
        return Section(
            id=self.id,
            title=self.title,
            measured=measured,
            template=self.template,
            context=self.build(view) if measured else {},
            empty_note=self.empty_note,
            toc_tag=self.toc_tag,
        )


@dataclass(frozen=True)
class Section:
    """One section of one page, ready for the template.

    Attributes:
        id: HTML id and table-of-contents anchor.
        title: Heading and table-of-contents label.
        measured: False for a section that shows ``empty_note`` (or the generic sentence).
        template: The partial included for a measured section.
        context: The builder's output, ``ctx`` in the partial; empty when not measured.
        empty_note: Sentence of a section that is not measured; empty for the generic one.
        toc_tag: Table-of-contents tag of a section that is not measured.
    """

    id: str
    title: str
    measured: bool
    template: str
    context: Context
    empty_note: str
    toc_tag: str


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _element_type(cls: type, name: str) -> type | None:
    """The record type of a ``tuple[Record, ...]`` field, if it is one."""
    hint = typing.get_type_hints(cls).get(name)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and isinstance(args[0], type):
        return args[0] if dataclasses.is_dataclass(args[0]) else None
    return None


def _check_path(view_type: type, spec: SectionSpec[Any], path: str) -> None:
    cls: type | None = view_type
    parts = path.split(".")
    for i, name in enumerate(parts):
        if cls is None:
            raise ReportError(
                f"section {spec.id!r} reads {path!r}, but {'.'.join(parts[:i])!r} "
                "is not a tuple of records"
            )
        names = _field_names(cls)
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ReportError(
                f"section {spec.id!r} reads {path!r}, but {cls.__name__} has no field "
                f"{name!r}{hint} (fields: {', '.join(names)})"
            )
        cls = _element_type(cls, name) if i + 1 < len(parts) else None


@dataclass(frozen=True)
class SectionList(Generic[V]):
    """The sections of one kind of page, in display order; ids are unique.

    Attributes:
        view_type: The view model the page shows; every spec's ``reads`` must name its fields.
        specs: The specs, in display (and table-of-contents) order.
    """

    view_type: type[V]
    specs: tuple[SectionSpec[V], ...]

    def __post_init__(self) -> None:
        specs = tuple(self.specs)
        set_field(self, "specs", specs)
        seen: set[str] = set()
        for spec in specs:
            if spec.id in seen:
                raise ReportError(
                    f"two sections of the {self.view_type.__name__} page have the id "
                    f"{spec.id!r}: give the new one another id"
                )
            seen.add(spec.id)
            for path in spec.reads:
                _check_path(self.view_type, spec, path)

    def __iter__(self) -> Iterator[SectionSpec[V]]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, section_id: str) -> SectionSpec[V]:
        by_id = {spec.id: spec for spec in self.specs}
        try:
            return by_id[section_id]
        except KeyError:
            close = difflib.get_close_matches(section_id, by_id, n=3)
            raise KeyError(
                f"no section {section_id!r} on the {self.view_type.__name__} page"
                + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
            ) from None

    @property
    def ids(self) -> tuple[str, ...]:
        """The section ids, in display order."""
        return tuple(spec.id for spec in self.specs)

    def with_section(self, spec: SectionSpec[V], *, after: str | None = None) -> SectionList[V]:
        """A copy with ``spec`` added after the section ``after`` (default: at the end).

        Raises:
            ReportError: When a section with the same id exists.
            KeyError: When ``after`` names no section.
        """
        specs = list(self.specs)
        at = len(specs) if after is None else specs.index(self[after]) + 1
        specs.insert(at, spec)
        return SectionList(self.view_type, tuple(specs))

    def sections(self, view: V) -> list[Section]:
        """Every section of ``view``, in order, with the figures of the measured ones drawn."""
        if not isinstance(view, self.view_type):
            raise ReportError(
                f"these sections show a {self.view_type.__name__}, got {type(view).__name__}"
            )
        return [spec.section(view) for spec in self.specs]
