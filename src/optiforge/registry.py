"""Name → object registries shared by data, models, optimizers and stages.

A registry is a plain mapping users may extend (``DATASETS.register("mine")``);
lookups of unknown names raise a :class:`ConfigError` naming the closest match.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from optiforge.errors import ConfigError

T = TypeVar("T")


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or ''."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry(Generic[T]):
    """A named collection of builders. ``kind`` names the collection in errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            self._items[name] = item
            return item

        return add

    def add(self, name: str, item: T) -> None:
        self._items[name] = item

    def get(self, name: str, field: str | None = None) -> T:
        if name not in self._items:
            where = f"{field}: " if field else ""
            raise ConfigError(
                f"{where}unknown {self.kind} '{name}'{closest(name, self.names())}; allowed: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_factory(path: str, field: str) -> Callable:
    """Import ``"package.module:function"`` and return the callable."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{field}: '{path}' is not of the form 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{field}: cannot import module '{module_name}' ({error})") from None
    except (Exception, SystemExit) as error:  # the user's module failed while importing: their code, named
        raise ConfigError(f"{field}: importing module '{module_name}' raised {type(error).__name__}: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"{field}: module '{module_name}' has no callable '{attribute}'")
    return factory
