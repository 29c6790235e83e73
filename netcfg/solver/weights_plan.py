"""What a solver's ``weights:`` rules would do to a net, per rule, and its printing (the
train log, and ``netcfg weights``'s dry run); weights.py computes it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from netcfg.errors import ConfigError

__all__ = ["RuleReport", "WeightsPlan", "layer_of", "first_names", "is_counter"]


@dataclass
class RuleReport:
    """What one rule does: file blobs matched (file name, net name), left out, unused, mismatched."""

    index: int
    file: Path
    total: int = 0
    matched: list[tuple[str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)                      # by include/exclude
    unused: list[tuple[str, str]] = field(default_factory=list)           # (file name, renamed) not in the net
    mismatched: list[tuple[str, str, list[int], list[int]]] = field(default_factory=list)  # file, net, shapes
    with_layer: list[tuple[str, str]] = field(default_factory=list)       # fit, but a blob of their layer does not
    overridden: int = 0                                                    # net blobs a later rule fills again
    hint: str | None = None                                                # for the unused: the rename_map to add
    counters: int = 0                                                      # BatchNorm's num_batches_tracked in the file

    @property
    def renamed(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.matched if a != b]

    def counted(self) -> RuleReport:
        """The report as printed: without BatchNorm's counters (copied with their layer), as the
        net's total counts none, so that '41 matched' and '41 of 41 net blobs filled' agree."""
        def keep(xs: list) -> list:
            return [x for x in xs if not is_counter(x if isinstance(x, str) else x[0])]

        return replace(self, total=self.total - self.counters, matched=keep(self.matched), excluded=keep(self.excluded),
                       unused=keep(self.unused), mismatched=keep(self.mismatched))


@dataclass
class WeightsPlan:
    """Every rule's report, the net blobs nobody fills, and what strict rules refuse."""

    rules: list[RuleReport]
    missing: list[str]
    total: int                                             # net blobs (num_batches_tracked not counted)
    copies: dict[str, Any] = field(default_factory=dict)   # net name -> file tensor (a later rule wins)
    refusals: list[ConfigError] = field(default_factory=list)
    test_only: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # TEST blob, shape, TRAIN's

    def lines(self, *, full: bool = False) -> list[str]:
        """The report: every name when ``full`` (the dry run), the first few otherwise (the train log)."""
        show = (lambda xs: ", ".join(xs)) if full else first_names
        out = []
        for r in (r.counted() for r in self.rules):
            counters = f", not counting its {r.counters} num_batches_tracked" if r.counters else ""
            out.append(f"rule {r.index + 1}: {r.file} ({r.total} blobs{counters}): {len(r.matched)} matched, "
                       f"{len(r.renamed)} renamed, {len(r.excluded)} excluded, {len(r.unused)} unused, "
                       f"{len(r.mismatched)} shape mismatches")
            plain = [b for a, b in r.matched if a == b]
            if plain:
                out.append(f"  matched ({len(plain)}): {show(plain)}")
            if r.renamed:
                out.append(f"  renamed ({len(r.renamed)}): {show([f'{a} -> {b}' for a, b in r.renamed])}")
            if r.excluded:
                out.append(f"  excluded by include/exclude ({len(r.excluded)}): {show(r.excluded)}")
            if r.unused:
                out.append(f"  unused, no such blob in the net ({len(r.unused)}): "
                           f"{show([a if a == b else f'{a} (as {b})' for a, b in r.unused])}")
            if r.hint:
                out.append(f"  hint: {r.hint}")
            if r.mismatched:
                out.append(f"  shape mismatch, left as initialised ({len(r.mismatched)}): "
                           + show([f"{b} (file {fs}, net {ns})" for _, b, fs, ns in r.mismatched]))
            if r.with_layer:
                out.append(f"  left as initialised with their layer, which has a shape mismatch "
                           f"({len(r.with_layer)}): {show([b for _, b in r.with_layer])}")
            if r.overridden:
                out.append(f"  {r.overridden} of these are filled again by a later rule (the last rule wins)")
        if self.missing:
            out.append(f"missing, left as initialised ({len(self.missing)}): {show(self.missing)}")
        if self.test_only:  # filling by name reaches the TRAIN net's blob of that name only
            out.append(f"TEST net only, another shape than the TRAIN net's blob of that name, left as initialised "
                       f"({len(self.test_only)}): {show([f'{n} (TEST {t}, TRAIN {tr})' for n, t, tr in self.test_only])}")
        filled = sum(not is_counter(n) for n in self.copies)
        out.append(f"weights: {filled} of {self.total} net blobs filled from {len(self.rules)} rule(s)")
        return out


def layer_of(blob: str) -> str:
    """The layer of a ``<layer>.<blob>`` name (a layer's name may hold dots: ``layer2.block1.bn1``)."""
    return blob.rsplit(".", 1)[0]


def is_counter(blob: str) -> bool:
    """BatchNorm's ``num_batches_tracked``: torch's counter, not a weight, so never counted nor
    reported on its own (the one test of it, for the plan, the copy and the Caffe import alike)."""
    return blob.endswith("num_batches_tracked")


def first_names(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more; `netcfg weights` lists all)" if len(names) > n else "")
