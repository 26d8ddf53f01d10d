"""Lightning DDP on two CPU processes (gloo): the rank-sharded batch sampler, and gradient
synchronisation, against a single process at the same global batch (issue 12, item 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.conftest import write_image_store
from whatsreal.pairing import build_pairing
from whatsreal.store import ObservationStore

# Each run is a script of its own: Lightning's DDP launcher re-executes the command line
# for rank 1, which must be a script and not the pytest process.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from whatsreal.train.counterfactual import CounterfactualTrainConfig, fit_counterfactual

    store, out, devices, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    losses, rows = [], []

    def params(module):
        return {k: v.detach().clone() for k, v in module.model.named_parameters()}

    class Record(L.Callback):
        def on_train_start(self, trainer, module):
            self.start = params(module)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))
            rows.append(batch["anchor_row"].tolist())

        def on_train_end(self, trainer, module):
            torch.save(
                {"start": self.start, "end": params(module)},
                f"{out}/params_rank{trainer.global_rank}.pt",
            )

    cfg = CounterfactualTrainConfig(
        preset="tiny", batch_size=batch, max_steps=4, accelerator="cpu", devices=devices,
        val_every=1000, ckpt_every=1000, progress=False, val=0.1, test=0.1, lr=1e-3,
    )
    fit_counterfactual(store, out, cfg, callbacks=[Record()])
    dist = torch.distributed
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    with open(f"{out}/losses_rank{rank}.json", "w") as f:
        json.dump({"losses": losses, "rows": rows}, f)
    """
)


def _run(script, store, out, devices: int, batch: int) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(store), str(out), str(devices), str(batch)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=out.parent,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_at_the_same_global_batch(tmp_path):
    store = write_image_store(tmp_path / "ddp.store", n_sources=80, shape=(2, 32, 32))
    build_pairing(ObservationStore(store))
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    ddp.mkdir()
    _run(script, store, single, devices=1, batch=8)
    _run(script, store, ddp, devices=2, batch=4)  # 2 ranks x 4 = the same global batch of 8

    one = json.loads((single / "losses_rank0.json").read_text())
    ranks = [json.loads((ddp / f"losses_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(one["losses"]) == 4 and all(len(r["losses"]) == 4 for r in ranks)
    for step in range(4):
        # the sampler shards each global batch: the ranks' halves are disjoint and together
        # they are the single process's batch
        a, b = (set(r["rows"][step]) for r in ranks)
        assert len(a) == len(b) == 4 and not a & b
        assert a | b == set(one["rows"][step])
    # The loss is a per-sample mean, so the mean of the ranks' losses estimates the single
    # process's. They differ only through the flow-matching noise each rank draws and the
    # encoders' BatchNorm statistics (over 4 samples instead of 8; SyncBatchNorm needs a GPU).
    mean = np.mean([r["losses"] for r in ranks], axis=0)
    np.testing.assert_allclose(mean, one["losses"], rtol=0.05)
    assert abs(mean.mean() / np.mean(one["losses"]) - 1) < 0.03
    assert np.ptp(one["losses"]) > 0  # the comparison is not of a constant

    # Gradients are all-reduced: the ranks read different data (their losses differ), yet
    # both start and end with the same weights, and those weights moved.
    assert not np.allclose(ranks[0]["losses"], ranks[1]["losses"])
    p0, p1 = (torch.load(ddp / f"params_rank{r}.pt") for r in (0, 1))
    ps = torch.load(single / "params_rank0.pt")
    moved = 0.0
    for k in p0["end"]:
        torch.testing.assert_close(p0["start"][k], ps["start"][k], rtol=0, atol=0)
        torch.testing.assert_close(p0["end"][k], p1["end"][k], rtol=0, atol=0)
        moved = max(moved, float((p0["end"][k] - p0["start"][k]).abs().max()))
    assert moved > 1e-4
    assert (ddp / "model").is_dir()  # rank 0 saved the EMA model
