"""Label ids, the abstain vote and the taxonomy."""

from __future__ import annotations

import re
from dataclasses import dataclass

from labelloop.programs.errors import ConfigError

ABSTAIN = -1
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")  # a NUL character or a lone surrogate (not valid Unicode)


@dataclass(frozen=True)
class Taxonomy:
    """An ordered label set; a label's id is its position.

    Raises ConfigError (a ValueError) unless the names are at least two distinct, non-blank strings and
    there is one string description per name; neither may hold a NUL character or a lone surrogate.
    """

    names: tuple[str, ...]
    descriptions: tuple[str, ...]

    def __post_init__(self):
        for field in ("names", "descriptions"):
            values = getattr(self, field)
            if not isinstance(values, (tuple, list)):
                raise ConfigError(f"taxonomy {field}: expected a tuple of strings, got {type(values).__name__}")
            object.__setattr__(self, field, tuple(values))  # a list would make the frozen taxonomy unhashable
            for i, value in enumerate(values):
                if not isinstance(value, str) or (field == "names" and not value.strip()):
                    raise ConfigError(f"taxonomy label {i + 1}: expected its {field[:-1]} as "
                                      f"{'non-blank ' if field == 'names' else ''}text, got {value!r:.80}")
                found = _BAD_CHARACTER.search(value)
                if found:
                    what = "a NUL character" if found.group() == "\x00" else "a lone surrogate (not valid Unicode)"
                    raise ConfigError(f"taxonomy label {i + 1}: its {field[:-1]} holds {what} at position {found.start()}")
        if len(self.names) < 2:
            raise ConfigError(f"a taxonomy needs at least 2 labels, got {len(self.names)}: {list(self.names)}")
        if len(set(self.names)) != len(self.names):
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ConfigError(f"taxonomy label names must be unique; repeated: {dupes}")
        if len(self.descriptions) != len(self.names):
            raise ConfigError(f"taxonomy needs one description per label: {len(self.names)} names, "
                              f"{len(self.descriptions)} descriptions")

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
