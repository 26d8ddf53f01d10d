"""Shared fixtures: tiny stores written through the real writer."""

from __future__ import annotations

import numpy as np
import pytest

from whatsreal.store import StoreWriter


def simulated_galaxy_store(tmp_path_factory, name: str, n: int, seed: int):
    """A paired HSC x Legacy store of ``n`` simulated galaxies (one worker, no progress)."""
    from whatsreal.pairing import build_pairing
    from whatsreal.simulate.galaxies import simulate_galaxies
    from whatsreal.store import ObservationStore

    path = tmp_path_factory.mktemp(name) / "gal.store"
    simulate_galaxies(path, n=n, surveys=("hsc", "legacy"), seed=seed, workers=1, progress=False)
    build_pairing(ObservationStore(path))
    return ObservationStore(path)


def write_image_store(path, n_sources=200, shape=(4, 8, 8), seed=0, positions=True, drop=0.0):
    """Two instruments over the same sources on a small sky patch; returns the path."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(150.0, 150.4, n_sources)
    dec = rng.uniform(2.0, 2.4, n_sources)
    with StoreWriter(
        path,
        shape=shape,
        instruments={"hsc": list("griz")[: shape[0]], "legacy": list("griz")[: shape[0]]},
        arrays=("ivar",),
        positions=positions,
        config={"test": True},
    ) as w:
        for inst in ("hsc", "legacy"):
            keep = rng.uniform(size=n_sources) >= (drop if inst == "legacy" else 0.0)
            n = int(keep.sum())
            w.append(
                rng.normal(size=(n, *shape)).astype(np.float32),
                source_id=np.flatnonzero(keep),
                instrument=inst,
                ra=ra[keep] if positions else None,
                dec=dec[keep] if positions else None,
                ivar=np.ones((n, *shape), np.float32),
                meta={"psf_fwhm": rng.uniform(0.5, 1.5, n)},
            )
    return path


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: small models are faster so, and it stops two busy
    cores from stalling each other."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def image_store(tmp_path):
    return write_image_store(tmp_path / "img.store")
