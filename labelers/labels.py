"""Label ids, the abstain vote and the taxonomy."""

from __future__ import annotations

from dataclasses import dataclass

ABSTAIN = -1


@dataclass(frozen=True)
class Taxonomy:
    """An ordered label set; a label's id is its position."""

    names: tuple[str, ...]
    descriptions: tuple[str, ...]

    def __post_init__(self):
        if len(self.names) < 2:
            raise ValueError(f"a taxonomy needs at least 2 labels, got {len(self.names)}: {list(self.names)}")
        if len(set(self.names)) != len(self.names):
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"taxonomy label names must be unique; repeated: {dupes}")
        if len(self.descriptions) != len(self.names):
            raise ValueError("taxonomy needs one description per label")

    def __len__(self) -> int:
        return len(self.names)

    def texts(self) -> list[str]:
        """Each label's name, with its description when it has one (what label embeddings are made of).

        >>> Taxonomy(("a", "b"), ("first", "")).texts()
        ['a: first', 'b']
        """
        return [f"{n}: {d}" if d else n for n, d in zip(self.names, self.descriptions)]

    def id(self, name: str) -> int:
        """The id of a label name, or a clear error naming the known labels."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown label {name!r}; the taxonomy has {list(self.names)}") from None
