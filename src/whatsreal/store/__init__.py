"""The observation store: the one on-disk contract between data and models."""

from whatsreal.store.reader import Neighbours, ObservationStore, open_store
from whatsreal.store.verify import VerifyReport, verify_store
from whatsreal.store.writer import StoreWriter

__all__ = [
    "Neighbours",
    "ObservationStore",
    "StoreWriter",
    "VerifyReport",
    "open_store",
    "verify_store",
]
