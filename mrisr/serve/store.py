"""The planning scans a server keeps between connections, keyed by study, bounded in count and bytes.

On a scanner every series is its own connection: the planning series arrives first (config
``mrisr-planning``), the dynamic later (config ``mrisr``). The key that ties them is read from
the MRD XML header: the study instance UID and the frame of reference UID where the header has
them, else the patient ID. The store is least-recently-used: adding a scan beyond
``max_entries`` or ``max_bytes`` drops the oldest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from mrisr.io.volume import Volume

__all__ = ["PriorStore", "prior_key"]


def _text(value) -> str | None:
    if value is None:
        return None
    value = str(getattr(value, "value", value)).strip()
    return value or None


def prior_key(header) -> tuple[str, ...] | None:
    """The key a planning scan is stored under: ``("study", study UID, frame of reference UID)`` or
    ``("subject", patient ID)``; ``None`` when the header names neither (or is not parsed)."""
    study = _text(getattr(getattr(header, "studyInformation", None), "studyInstanceUID", None))
    frame = _text(getattr(getattr(header, "measurementInformation", None), "frameOfReferenceUID", None))
    if study or frame:
        return ("study", study or "", frame or "")
    subject = _text(getattr(getattr(header, "subjectInformation", None), "patientID", None))
    return ("subject", subject) if subject else None


def describe_key(key: tuple[str, ...] | None) -> str:
    if key is None:
        return "no study, frame of reference or patient ID"
    if key[0] == "study":
        return f"study {key[1] or '?'} / frame of reference {key[2] or '?'}"
    return f"patient {key[1]}"


class PriorStore:
    """Planning volumes by :func:`prior_key`, least recently used dropped first (thread-safe).

    Args:
        max_entries: scans kept at most.
        max_bytes: bytes of voxel data kept at most (a single larger scan is refused).
    """

    def __init__(self, max_entries: int = 8, max_bytes: int = 2 << 30) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"PriorStore: max_entries {max_entries} and max_bytes {max_bytes} must be >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, ...], Volume] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(volume: Volume) -> int:
        return int(volume.data.nbytes)

    def put(self, key: tuple[str, ...], volume: Volume) -> list[tuple[str, ...]]:
        """Store ``volume`` under ``key``; returns the keys dropped to make room.

        Raises:
            ValueError: a volume larger than ``max_bytes``.
        """
        size = self._size(volume)
        if size > self.max_bytes:
            raise ValueError(f"planning scan of {size} bytes exceeds the store's {self.max_bytes}-byte bound; "
                             "start the server with a larger --prior-store-mb")
        dropped = []
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = volume
            while len(self._items) > self.max_entries or sum(map(self._size, self._items.values())) > self.max_bytes:
                old, _ = self._items.popitem(last=False)
                dropped.append(old)
        return dropped

    def get(self, key: tuple[str, ...] | None) -> Volume | None:
        if key is None:
            return None
        with self._lock:
            volume = self._items.get(key)
            if volume is not None:
                self._items.move_to_end(key)
            return volume

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[tuple[str, ...]]:
        with self._lock:
            return list(self._items)
