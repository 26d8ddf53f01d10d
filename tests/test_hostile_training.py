"""Hostile but realistic use of training and configs: NaN batches, diverged weights, kills
and resumes, a truncated checkpoint, a changed model on resume, YAML 1.1 numbers, typos and
zero sizes. Tiny models on a tiny store; each test asserts what a silent failure would break."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from whatsreal.cli.main import main
from whatsreal.config import build_dataclass
from whatsreal.errors import ConfigError, ModelFileError, NonFiniteError
from whatsreal.models.counterfactual import build_counterfactual_model
from whatsreal.pipelines.lightcurves import LightCurveTrackConfig, track_config
from whatsreal.sampling import collate_views
from whatsreal.store import ObservationStore
from whatsreal.train.contrastive import ContrastiveTrainConfig
from whatsreal.train.counterfactual import (
    CounterfactualTrainConfig,
    build_for_store,
    fit_counterfactual,
    logged_steps,
)
from whatsreal.train.guards import RunCSVLogger, read_checkpoint, read_metrics, stop_if_not_finite
from whatsreal.train.runs import resolve_run_config

from .conftest import write_image_store

BASE = dict(
    preset="tiny",
    batch_size=8,
    val_every=2,
    val_batches=1,
    ckpt_every=2,
    log_every=1,
    progress=False,
    val=0.1,
    test=0.1,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_image_store(
        tmp_path_factory.mktemp("store") / "s.store", n_sources=48, shape=(2, 16, 16)
    )


def _yaml(path: Path, store: Path, out: Path, **train) -> Path:
    lines = [f"model: counterfactual\nstore: {store}\nout: {out}\ntrain:"]
    lines += [f"  {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in train.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(**kw) -> CounterfactualTrainConfig:
    return CounterfactualTrainConfig(**{**BASE, "lr": 1e-3, **kw})


@pytest.fixture(scope="module")
def run_dir(store, tmp_path_factory):
    """A finished 4-step run, trained through the CLI from YAML that says ``lr: 1e-3``
    (YAML 1.1 reads that as a string); checkpoints at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = _yaml(tmp / "cfg.yaml", store, tmp / "run", **{**BASE, "lr": "1e-3", "max_steps": 4})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", str(cfg)]) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))  # copy2 keeps the mtimes


def _train_steps(run: Path) -> list[int]:
    return [int(r["step"]) for r in read_metrics(run / "logs" / "metrics.csv") if r["train/total"]]


class _Count(L.Callback):
    def __init__(self) -> None:
        self.n = 0

    def on_train_batch_end(self, *args) -> None:
        self.n += 1


# -- finite losses and weights --------------------------------------------------------------------


def test_lr_1e_3_in_yaml_trains_and_is_saved_as_a_number(run_dir):
    saved = (run_dir / "config.yaml").read_text()
    assert "lr: 0.001" in saved
    assert (run_dir / "model" / "config.json").is_file()
    assert _train_steps(run_dir) == [0, 1, 2, 3]
    assert logged_steps(run_dir) == 4


def test_nan_batch_stops_training_with_step_and_rows_and_saves_no_weights(
    store, tmp_path, monkeypatch, capsys, one_thread
):
    import whatsreal.train.counterfactual as tc

    calls, poisoned = [], []

    def poisoning_collate(items):
        batch = collate_views(items)
        calls.append(1)
        if len(calls) == 3:  # the batch of step 2 (no validation runs before step 6)
            batch["anchor"][1] = float("nan")
            poisoned.append(int(batch["anchor_row"][1]))
        return batch

    monkeypatch.setattr(tc, "collate_views", poisoning_collate)
    out = tmp_path / "run"
    cfg = _yaml(tmp_path / "c.yaml", store, out, **{**BASE, "max_steps": 6, "val_every": 6})
    assert main(["train", "--config", str(cfg)]) == 2  # nonzero exit, one-line message
    errors = [x for x in capsys.readouterr().err.splitlines() if "whatsreal train: error" in x]
    assert len(errors) == 1 and "at step 2" in errors[0]
    assert f"store rows [{poisoned[0]}]" in errors[0]
    assert not (out / "model").exists()
    steps = [read_checkpoint(p)["global_step"] for p in (out / "checkpoints").glob("*.ckpt")]
    assert steps and max(steps) == 2  # the last checkpoint is the one before the NaN


def test_diverged_weights_are_never_written_to_a_checkpoint(store, tmp_path, one_thread):
    class Poison(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step == 1:  # the optimiser step that ends at checkpoint step 2
                with torch.no_grad():
                    next(pl_module.model.parameters()).fill_(float("nan"))

    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"step 2.*checkpoint"):
        fit_counterfactual(store, out, _cfg(max_steps=4), callbacks=[Poison()])
    assert not list(out.rglob("*.ckpt")) and not (out / "model").exists()


def test_save_pretrained_refuses_nan_weights_and_keeps_the_old_model(tmp_path):
    model = build_counterfactual_model("tiny", "image", 2, 16)
    model.save_pretrained(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    with torch.no_grad():
        model.null_token.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="null_token"):
        model.save_pretrained(tmp_path / "m")
    with pytest.raises(NonFiniteError):
        model.save_pretrained(tmp_path / "new")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    assert not (tmp_path / "new").exists()


def test_finite_loss_guard_names_contrastive_rows_and_divergence():
    class Trainer:
        world_size, global_step, global_rank = 1, 17, 0

    x = torch.zeros(4, 1, 8)
    x[2, 0, 3] = float("nan")
    batch = {"x": x, "row": torch.tensor([5, 9, 40, 41])}
    with pytest.raises(NonFiniteError, match=r"step 17.*store rows \[40\]"):
        stop_if_not_finite(torch.tensor(float("nan")), batch, Trainer())
    batch["x"] = torch.zeros(4, 1, 8)  # finite inputs: the model diverged
    with pytest.raises(NonFiniteError, match=r"inf at step 17.*\[5, 9, 40, 41\].*diverged"):
        stop_if_not_finite(torch.tensor(float("inf")), batch, Trainer())
    stop_if_not_finite(torch.tensor(0.5), batch, Trainer())  # a finite loss passes


# -- resume ---------------------------------------------------------------------------------------


def test_kill_and_resume_keeps_every_step_of_metrics_csv(run_dir, store, tmp_path, one_thread):
    run = _copy(run_dir, tmp_path)
    log = run / "logs" / "metrics.csv"
    original = {r["step"]: r["train/total"] for r in read_metrics(log) if r["train/total"]}

    class Kill(L.Callback):  # dies in step 7, after rows past the last checkpoint (6) exist
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 8:
                raise RuntimeError("killed")

    cfg = _cfg(max_steps=9, ckpt_every=3)
    with pytest.raises(RuntimeError, match="killed"):
        fit_counterfactual(store, run, cfg, callbacks=[Kill()])
    assert _train_steps(run) == [0, 1, 2, 3, 4, 5, 6]  # step 6 will be done again
    fit_counterfactual(store, run, cfg)
    rows = read_metrics(log)
    assert _train_steps(run) == list(range(9))  # every step, once, in order
    assert [int(r["step"]) for r in rows if r["val/total"]] == [1, 3, 5, 7]
    kept = {r["step"]: r["train/total"] for r in rows if r["train/total"] and r["step"] in original}
    assert kept == original  # the first run's rows, not recomputed ones


def test_resume_with_another_model_or_split_is_refused_and_touches_nothing(
    run_dir, store, tmp_path, capsys
):
    run = _copy(run_dir, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    cfg = _yaml(tmp_path / "c.yaml", store, run, **{**BASE, "max_steps": 8})
    assert main(["train", "--config", str(cfg), "--train.model_overrides.token_dim", "4"]) == 2
    err = capsys.readouterr().err
    assert "resolved_model.token_dim is 8 in the run, 4 now" in err
    assert main(["train", "--config", str(cfg), "--train.val", "0.2"]) == 2
    assert "train.val is 0.1 in the run, 0.2 now" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(ConfigError, match=re.escape("train.split_seed is 0 in the run, 1 now")):
        fit_counterfactual(store, run, _cfg(split_seed=1, max_steps=8))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(
    run_dir, store, tmp_path, one_thread
):
    run = _copy(run_dir, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # a kill while it was written
    count = _Count()
    with pytest.warns(UserWarning, match=r"last\.ckpt.*unreadable"):
        fit_counterfactual(store, run, _cfg(max_steps=6), callbacks=[count])
    assert count.n == 2  # resumed at step 4, not from scratch
    assert _train_steps(run) == list(range(6))
    for path in (run / "checkpoints").glob("*.ckpt"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match=r"every checkpoint is unreadable.*last\.ckpt"):
        fit_counterfactual(store, run, _cfg(max_steps=8))


def test_contrastive_resume_keeps_its_log_and_refuses_another_model(tmp_path, one_thread):
    from whatsreal.pipelines.lightcurves import _epochs
    from whatsreal.simulate.lightcurves import lightcurve_sim_config, write_lightcurve_store
    from whatsreal.train.contrastive import fit_contrastive

    sim = lightcurve_sim_config("tiny", n_lightcurves=300, n_stars=30)
    lc = write_lightcurve_store(tmp_path / "lc.store", sim)
    kw = dict(preset="tiny", sources_per_batch=8, views_per_source=3, progress=False)
    run = tmp_path / "run"
    fit_contrastive(lc, run, ContrastiveTrainConfig(**kw, max_epochs=1))
    first = [r for r in read_metrics(run / "logs" / "metrics.csv") if r["train/total"]]
    fit_contrastive(lc, run, ContrastiveTrainConfig(**kw, max_epochs=2), resume=True)
    rows = read_metrics(run / "logs" / "metrics.csv")
    assert [r["epoch"] for r in rows if r["train/total"]] == ["0", "1"]
    kept = next(r for r in rows if r["train/total"])
    assert (kept["step"], kept["train/total"]) == (first[0]["step"], first[0]["train/total"])
    assert _epochs(run) == 2
    config = (run / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match=re.escape("train.single_latent is False in the run")):
        fit_contrastive(lc, run, ContrastiveTrainConfig(**kw, single_latent=True), resume=True)
    assert (run / "config.yaml").read_bytes() == config


def test_log_keeps_earlier_rows_and_drops_a_line_cut_short(tmp_path):
    path = tmp_path / "logs" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("a,step\r\n1.0,0\r\n2.0,1\r\n3.0,2\r\n4.0")  # the last line was cut
    assert [r["step"] for r in read_metrics(path)] == ["0", "1", "2"]
    logger = RunCSVLogger(tmp_path, resume_step=2)
    logger.log_metrics({"a": 5.0, "b": 1.0}, step=2)
    rows = read_metrics(path)
    expected = [("0", "1.0", ""), ("1", "2.0", ""), ("2", "5.0", "1.0")]
    assert [(r["step"], r["a"], r["b"]) for r in rows] == expected
    RunCSVLogger(tmp_path).log_metrics({"a": 7.0}, step=0)  # a fresh run starts anew
    assert [(r["step"], r["a"]) for r in read_metrics(path)] == [("0", "7.0")]


# -- typed configs --------------------------------------------------------------------------------


def test_yaml_and_cli_values_take_their_field_types(tmp_path, store):
    cfg = _yaml(tmp_path / "c.yaml", store, tmp_path / "o", lr="1e-3", max_steps="75_000")
    full = resolve_run_config(cfg)
    assert full["train"]["lr"] == 0.001 and isinstance(full["train"]["lr"], float)
    assert full["train"]["max_steps"] == 75_000
    over = ["train.lr=1e-4", "train.progress=no", "train.devices=1", "train.max_minutes=null"]
    train = resolve_run_config(cfg, over)["train"]
    assert train["lr"] == 1e-4 and train["progress"] is False and train["devices"] == 1
    assert train["max_minutes"] is None
    direct = CounterfactualTrainConfig(lr="3e-4", batch_size="16", channels_last="false")
    assert (direct.lr, direct.batch_size, direct.channels_last) == (3e-4, 16, False)
    model = build_for_store(
        ObservationStore(store), _cfg(model_overrides={"hybrid_weight": "5e-1"})
    )
    assert model.config["hybrid_weight"] == 0.5


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"batch_size": "eight"}, "train.batch_size must be an integer; got 'eight'"),
        ({"val_every": 0}, "train.val_every must be >= 1; got 0"),
        ({"batch_size": 0}, "train.batch_size must be >= 1; got 0"),
        ({"lr": 0}, "train.lr must be > 0; got 0.0"),
        ({"lr": "nan"}, "train.lr must be a finite number"),
        ({"val": 1.5}, "train.val must be >= 0 and < 1"),
        ({"batching": "skyy"}, "did you mean 'sky'"),
        ({"lrr": 1e-3}, "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    ],
)
def test_bad_values_and_unknown_keys_name_the_key(tmp_path, store, train, message):
    cfg = _yaml(tmp_path / "c.yaml", store, tmp_path / "o", **train)
    with pytest.raises(ConfigError) as info:
        resolve_run_config(cfg)
    assert message in str(info.value) and str(cfg) in str(info.value)


def test_unknown_keys_at_every_level_suggest_the_closest(tmp_path, store, capsys):
    cfg = _yaml(tmp_path / "c.yaml", store, tmp_path / "o", max_steps=3)
    with pytest.raises(ConfigError, match="unknown config key 'trian'; did you mean 'train'"):
        resolve_run_config(cfg, ["trian.lr=1"])
    assert main(["train", "--config", str(cfg), "--train.val_evry", "3"]) == 2
    assert "did you mean 'train.val_every'?" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--train.val_every", "0"]) == 2
    assert "train.val_every must be >= 1; got 0" in capsys.readouterr().err
    with pytest.raises(
        ConfigError, match=re.escape("did you mean 'train.model_overrides.hybrid_weight'")
    ):
        build_for_store(ObservationStore(store), _cfg(model_overrides={"hybrid_wieght": 1.0}))
    with pytest.raises(ConfigError, match="did you mean 'umap_points'"):
        track_config("tiny", umap_pionts=5)
    with pytest.raises(ConfigError, match=re.escape("did you mean 'train.patience'")):
        track_config("tiny", train={"patiense": 3})


def test_track_and_contrastive_configs_are_typed():
    cfg = track_config("tiny", train={"lr": "1e-3"}, sizes=["10", 30])
    assert cfg.train.lr == 0.001 and cfg.sizes == (10, 30)
    assert cfg.train.sources_per_batch == 16  # the preset's other training keys stay
    with pytest.raises(ConfigError, match=r"sizes must be >= 1"):
        track_config("tiny", sizes=[10, 0])
    with pytest.raises(ConfigError, match=re.escape("train.views_per_source must be >= 1")):
        build_dataclass(LightCurveTrackConfig, {"train": {"views_per_source": 0}})
    with pytest.raises(
        ConfigError, match=re.escape("train.max_epochs must be an integer; got 2.5")
    ):
        ContrastiveTrainConfig(max_epochs=2.5)
    assert ContrastiveTrainConfig(max_steps=None).max_steps is None


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "lightcurves", "--out", "x", "--n", "0"],
        ["simulate", "galaxies", "--out", "x", "--n", "-5"],
        ["simulate", "galaxies", "--out", "x", "--workers", "0"],
        ["counterfactual", "--model", "m", "--store", "s", "--to", "hsc", "--n-samples", "0"],
        ["counterfactual", "--model", "m", "--store", "s", "--to", "hsc", "--nfe", "0"],
        ["demo", "--minutes", "0"],
        ["demo", "--minutes", "inf"],
        ["simulate", "lightcurves", "--out", "x", "--seed", "-1"],
    ],
)
def test_cli_refuses_zero_counts_and_sizes(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err and f"argument {argv[-2]}" in err
    assert not list(tmp_path.iterdir())  # refused before anything was written
