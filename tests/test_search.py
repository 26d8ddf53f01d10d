"""Embeddings to Parquet, FAISS search by id and by FITS cutout, and anomaly scores (issue 13)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_image_store
from whatsreal.cli.main import main
from whatsreal.errors import IndexFormatError, QueryError
from whatsreal.infer import embed as embed_mod
from whatsreal.infer.embed import embed_rows, embed_store
from whatsreal.models.base import load_pretrained
from whatsreal.models.contrastive import build_contrastive_model
from whatsreal.models.counterfactual import build_counterfactual_model
from whatsreal.search import (
    SearchIndex,
    build_index,
    build_vector_index,
    iforest_scores,
    knn_scores,
    search_by_file,
    search_by_id,
    top_anomalies,
    whiten,
)
from whatsreal.store import ObservationStore, StoreWriter

SHAPE = (4, 16, 16)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny image store, a tiny counterfactual model saved beside it, and its embeddings."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("search")
    store = write_image_store(root / "img.store", n_sources=40, shape=SHAPE, seed=1)
    torch.manual_seed(0)
    model = build_counterfactual_model("tiny", "image", SHAPE[0], SHAPE[1]).eval()
    model.save_pretrained(root / "model")
    out = embed_store(root / "model", store, root / "emb.parquet", batch_size=16, part_rows=32)
    index = build_index(out)
    return {"root": root, "store": store, "model": root / "model", "emb": out, "index": index}


def _write_series_store(path, n_sources=24, length=32):
    rng = np.random.default_rng(0)
    with StoreWriter(path, shape=(1, length), instruments={"a": ["v"], "b": ["v"]}) as w:
        for inst in ("a", "b"):
            flux = rng.normal(size=(n_sources, 1, length)).astype(np.float32)
            w.append(flux, source_id=np.arange(n_sources), instrument=inst)
    return path


def _brute_force(vectors, query, k, exclude=None):
    d = np.sqrt(((vectors - query) ** 2).sum(axis=1))
    if exclude is not None:
        d[exclude] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


def _clustered(n, dim, n_clusters, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * 3.0
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32)


# -- embed ---------------------------------------------------------------------------------
def test_embed_writes_ids_positions_and_both_latents(image_run):
    table = pq.read_table(image_run["emb"])
    store = ObservationStore(image_run["store"])
    model = load_pretrained(image_run["model"])
    assert table.column_names == [
        "row",
        "obs_id",
        "source_id",
        "instrument",
        "ra",
        "dec",
        "physics_latent",
        "instrument_latent",
    ]
    assert table.num_rows == store.n_obs == 80
    np.testing.assert_array_equal(table.column("row").to_numpy(), np.arange(store.n_obs))
    np.testing.assert_array_equal(table.column("source_id").to_numpy(), store.source_id)
    names = np.asarray(store.instruments)[store.instrument]
    assert table.column("instrument").to_pylist() == names.tolist()
    np.testing.assert_allclose(table.column("ra").to_numpy(), store.table["ra"])
    phys = np.stack(table.column("physics_latent").to_numpy(zero_copy_only=False))
    assert phys.shape == (80, model.latent_dim)
    ref = embed_rows(model, store)
    np.testing.assert_allclose(phys, ref["physics"], rtol=1e-4, atol=1e-5)
    meta = json.loads(table.schema.metadata[b"whatsreal.embeddings"])
    assert meta["spaces"] == {"physics": model.latent_dim, "instrument": model.latent_dim}
    assert meta["shape"] == list(SHAPE)
    assert not embed_mod.parts_folder(image_run["emb"]).exists()  # parts cleaned up


def test_embed_resumes_after_an_interruption(image_run, monkeypatch):
    out = image_run["root"] / "resumed.parquet"
    real = embed_mod._write_part
    calls = []

    def dies_after_one(path, table):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(path)
        real(path, table)

    monkeypatch.setattr(embed_mod, "_write_part", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        embed_store(image_run["model"], image_run["store"], out, batch_size=16, part_rows=32)
    assert not out.exists()  # nothing half-written
    parts = embed_mod.parts_folder(out)
    assert sorted(p.name for p in parts.glob("part-*.parquet")) == ["part-000000.parquet"]

    written = []

    def counts(path, table):
        written.append(path.name)
        real(path, table)

    monkeypatch.setattr(embed_mod, "_write_part", counts)
    embed_store(image_run["model"], image_run["store"], out, batch_size=16, part_rows=32)
    assert written == ["part-000001.parquet", "part-000002.parquet"]  # 80 rows = 3 parts
    assert not parts.exists()
    a, b = pq.read_table(out), pq.read_table(image_run["emb"])
    assert a.num_rows == 80
    np.testing.assert_array_equal(a.column("row").to_numpy(), b.column("row").to_numpy())
    np.testing.assert_allclose(
        np.stack(a.column("instrument_latent").to_numpy(zero_copy_only=False)),
        np.stack(b.column("instrument_latent").to_numpy(zero_copy_only=False)),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(FileExistsError, match="overwrite"):
        embed_store(image_run["model"], image_run["store"], out)


def test_inference_model_folds_batchnorm_without_changing_latents(one_thread):
    import torch

    from whatsreal.infer.embed import embed_array, inference_model

    torch.manual_seed(0)
    model = build_counterfactual_model("tiny", "image", 4, 16).eval()
    for m in model.modules():  # trained-looking statistics, so a wrong fold would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).normal(size=(6, *SHAPE)).astype(np.float32)
    ref = embed_array(model, x)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    fast = inference_model(model)
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert left < n_bn / 4
    out = embed_array(fast, x)
    for key in ref:
        np.testing.assert_allclose(out[key], ref[key], rtol=1e-4, atol=1e-4)


def test_inference_model_bf16_close_to_fp32(one_thread):
    import torch

    from whatsreal.infer.embed import embed_array, inference_model

    torch.manual_seed(0)
    model = build_counterfactual_model("tiny", "image", 4, 16).eval()
    x = np.random.default_rng(1).normal(size=(6, *SHAPE)).astype(np.float32)
    ref = embed_array(model, x)
    low = inference_model(model, precision=torch.bfloat16)
    stem = next(p for p in low.physics_encoder.parameters() if p.ndim == 4)
    assert stem.is_contiguous(memory_format=torch.channels_last)  # bf16's layout
    out = embed_array(low, x, autocast=torch.bfloat16)
    for key in ref:
        assert out[key].dtype == np.float32
        err = np.abs(out[key] - ref[key]).max() / np.abs(ref[key]).max()
        assert 0 < err < 0.05, (key, err)  # bf16, so not bit-identical, but close


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's CPU backend needs a C++ compiler",
)
def test_compiled_embeddings_match_the_eager_ones(image_run, tmp_path):
    # batch 12 over 32-row parts: two full batches and a padded one of 8 per part
    out = embed_store(
        image_run["model"],
        image_run["store"],
        tmp_path / "c.parquet",
        batch_size=12,
        part_rows=32,
        compile=True,
    )
    table, ref = pq.read_table(out), pq.read_table(image_run["emb"])
    meta = json.loads(table.schema.metadata[embed_mod.EMBEDDINGS_META_KEY])
    assert meta["compiled"] is True and meta["model_class"] == "CounterfactualModel"
    for col in ("physics_latent", "instrument_latent"):
        got = np.stack(table[col].to_numpy(zero_copy_only=False))
        want = np.stack(ref[col].to_numpy(zero_copy_only=False))
        assert got.shape == want.shape == (80, got.shape[1])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["counterfactual", "contrastive", "single"])
def test_embed_light_curve_models(tmp_path, kind, one_thread, image_run):
    store = _write_series_store(tmp_path / "lc.store")
    if kind == "counterfactual":
        model = build_counterfactual_model("tiny", "series", 1, 32)
    else:
        model = build_contrastive_model("tiny", 1, 32, single_latent=kind == "single")
    model.eval().save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match=r"takes 1 channels.*\(4, 16, 16\)"):
        embed_store(tmp_path / "m", image_run["store"], tmp_path / "wrong.parquet")
    out = embed_store(tmp_path / "m", store, tmp_path / "lc.parquet", part_rows=20)
    table = pq.read_table(out)
    latents = ["latent"] if kind == "single" else ["physics_latent", "instrument_latent"]
    assert table.column_names == ["row", "obs_id", "source_id", "instrument", *latents]
    assert table.num_rows == 48
    index = SearchIndex(build_index(out))
    assert index.space == ("latent" if kind == "single" else "physics")
    result = search_by_id(index, 3, k=4, instrument="b")
    assert len(result.neighbours) == 4
    assert all(n["row"] != result.query["row"] for n in result.neighbours)


# -- search --------------------------------------------------------------------------------
def test_search_returns_the_exact_neighbours(image_run):
    for space in ("physics", "instrument"):
        index = SearchIndex(image_run["index"], space)
        assert index.meta["kind"] == "flat" and index.meta["metric"] == "l2"
        vectors = index.embeddings.vectors(space)
        for source in (0, 7, 33):
            result = search_by_id(index, source, k=6, instrument="legacy")
            pos = index.embeddings.locate(source, "legacy")
            want, dist = _brute_force(vectors, vectors[pos], 6, exclude=pos)
            assert [n["row"] for n in result.neighbours] == want.tolist()
            np.testing.assert_allclose(
                [n["distance"] for n in result.neighbours], dist, rtol=1e-4, atol=1e-5
            )
            assert {n["instrument"] for n in result.neighbours} <= {"hsc", "legacy"}


def test_ivf_and_hnsw_are_chosen_above_the_threshold_and_recall_is_high():
    x = _clustered(3000, 16, 30)
    rng = np.random.default_rng(1)
    queries = x[rng.choice(3000, 200, replace=False)] + 0.1 * rng.normal(size=(200, 16))
    assert build_vector_index(x, exact_max=10_000).kind == "flat"
    exact = build_vector_index(x, kind="flat")
    _, truth = exact.search(queries, 10)
    ivf = build_vector_index(x, exact_max=1000)
    assert ivf.kind == "ivf" and ivf.params["nlist"] > 1
    hnsw = build_vector_index(x, kind="hnsw")
    for approx in (ivf, hnsw):
        _, got = approx.search(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
        assert recall >= 0.9, (approx.kind, recall)


def test_index_kind_override_is_saved(image_run, tmp_path):
    out = build_index(image_run["emb"], tmp_path / "ix", spaces=["physics"], exact_max=50)
    index = SearchIndex(out, "physics")
    assert index.meta["kind"] == "ivf" and index.meta["count"] == 80
    assert sorted(p.name for p in out.iterdir()) == ["physics.faiss", "physics.json"]
    assert index.embeddings_path == image_run["emb"].resolve()
    hnsw = build_index(image_run["emb"], tmp_path / "hn", spaces=["physics"], kind="hnsw")
    assert SearchIndex(hnsw).meta["kind"] == "hnsw"


def _write_cutout(path, flux, bands="g,r,i,z", instrument="hsc"):
    from astropy.io import fits

    header = fits.Header()
    header["SOURCE"] = 5
    header["INSTRUME"] = instrument
    header["BANDS"] = bands
    fits.PrimaryHDU(np.asarray(flux, dtype=np.float32), header=header).writeto(path)
    return path


def test_query_by_fits_file_matches_the_stored_row(image_run, tmp_path):
    store = ObservationStore(image_run["store"])
    index = SearchIndex(image_run["index"], "physics")
    pos = index.embeddings.locate(5, "hsc")
    cutout = _write_cutout(tmp_path / "q.fits", store.read([pos])["flux"][0])
    result = search_by_file(index, cutout, k=3)
    first = result.neighbours[0]
    assert first["row"] == pos and first["distance"] < 1e-3
    from whatsreal.search.query import embed_cutout, read_cutout

    flux, info = read_cutout(cutout, SHAPE, store.bands)
    assert info["bands"] == list("griz") and info["instrument"] == "hsc"
    z = embed_cutout(image_run["model"], flux)
    for space in ("physics", "instrument"):
        np.testing.assert_allclose(
            z[space], index.embeddings.vectors(space)[pos], rtol=1e-4, atol=1e-5
        )


def test_bf16_embeddings_are_close_and_file_queries_reuse_the_precision(image_run, tmp_path):
    out = embed_store(image_run["model"], image_run["store"], tmp_path / "bf.parquet", bf16=True)
    index = SearchIndex(build_index(out), "physics")
    assert index.embeddings.meta["autocast"] == "bfloat16"
    fp32 = SearchIndex(image_run["index"], "physics").embeddings.vectors("physics")
    low = index.embeddings.vectors("physics")
    assert not np.array_equal(low, fp32)
    assert np.abs(low - fp32).max() <= 0.05 * np.abs(fp32).max()
    store = ObservationStore(image_run["store"])
    cutout = _write_cutout(tmp_path / "q.fits", store.read([11])["flux"][0])
    first = search_by_file(index, cutout, k=1).neighbours[0]
    assert first["row"] == 11 and first["distance"] < 1e-4


def test_bad_queries_give_clear_errors(image_run, tmp_path):
    store = ObservationStore(image_run["store"])
    index = SearchIndex(image_run["index"], "physics")
    with pytest.raises(QueryError, match="source_id 9999 is not in"):
        search_by_id(index, 9999)
    with pytest.raises(QueryError, match="no observation by 'lsst'"):
        search_by_id(index, 3, instrument="lsst")
    flux = store.read([0])["flux"][0]
    bad_shape = _write_cutout(tmp_path / "small.fits", flux[:, :12, :12])
    with pytest.raises(QueryError, match=r"shape \(4, 12, 12\).*\(4, 16, 16\)"):
        search_by_file(index, bad_shape)
    transposed = _write_cutout(tmp_path / "t.fits", np.moveaxis(flux, 0, -1))
    with pytest.raises(QueryError, match="transposed"):
        search_by_file(index, transposed)
    bad_bands = _write_cutout(tmp_path / "bands.fits", flux, bands="u,g,r,i")
    with pytest.raises(QueryError, match=r"bands \['u', 'g', 'r', 'i'\]"):
        search_by_file(index, bad_bands)
    with pytest.raises(QueryError, match="no index of the 'latent' space"):
        SearchIndex(image_run["index"], "latent")
    # an empty index: embeddings with no rows
    table = pq.read_table(image_run["emb"])
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0), empty)
    empty_index = SearchIndex(build_index(empty), "physics")
    with pytest.raises(IndexFormatError, match="empty"):
        search_by_id(empty_index, 0)
    with pytest.raises(IndexFormatError, match="empty"):
        top_anomalies(empty_index)
    # a stale index: its embeddings were rewritten after it was built
    small = tmp_path / "small.parquet"
    pq.write_table(table.slice(0, 5), small)
    stale = SearchIndex(build_index(small), "physics")
    pq.write_table(table.slice(0, 10), small)
    with pytest.raises(IndexFormatError, match="rebuild it"):
        search_by_id(stale, 0)


# -- anomalies -----------------------------------------------------------------------------
def test_anomaly_scores_rank_an_obvious_outlier_first():
    x = _clustered(600, 8, 5, seed=3)
    x[137] = 40.0  # far from every cluster
    for scores in (knn_scores(x, k=5), iforest_scores(x)):
        assert int(np.argmax(scores)) == 137
        assert scores.shape == (600,)
    # the knn score excludes self: duplicates of one point score 0
    dup = np.repeat(x[:1], 4, axis=0)
    assert np.allclose(knn_scores(np.vstack([dup, x[1:50]]), k=3)[:4], 0.0)


def test_cli_embed_index_search_sheet_anomalies(image_run, tmp_path, capsys):
    emb = tmp_path / "cli.parquet"
    args = ["embed", "--model", str(image_run["model"]), "--store", str(image_run["store"])]
    assert main([*args, "--out", str(emb), "--quiet"]) == 0
    assert main(["index", str(emb), "--space", "physics,instrument"]) == 0
    index_dir = tmp_path / "cli.index"
    capsys.readouterr()
    sheet = tmp_path / "sheet.png"
    cmd = ["search", "--index", str(index_dir), "--query", "4", "--space", "instrument"]
    assert main([*cmd, "-k", "5", "--json", "--sheet", str(sheet)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["space"] == "instrument" and len(out["results"]) == 5
    dists = [r["distance"] for r in out["results"]]
    assert dists == sorted(dists) and out["query"]["source_id"] == 4
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["search", "--index", str(index_dir), "--query", "4", "-k", "3"]) == 0
    assert "physics neighbours of source 4" in capsys.readouterr().out
    assert main(["search", "--index", str(index_dir), "--query", "12345"]) == 2
    assert "source_id 12345 is not in" in capsys.readouterr().err
    cmd = ["anomalies", "--index", str(index_dir), "--method", "iforest", "--top", "4"]
    assert main([*cmd, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert len(rows) == 4 and [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    # --whiten scores the whitened space: the k-NN scores of whiten(vectors), exactly
    cmd = ["anomalies", "--index", str(index_dir), "--whiten", "--top", "80", "--json"]
    assert main(cmd) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["whitened"] is True
    vectors = SearchIndex(index_dir, "physics").embeddings.vectors("physics")
    want = knn_scores(whiten(vectors), k=10)
    got = {r["row"]: r["score"] for r in out["results"]}
    np.testing.assert_allclose([got[i] for i in range(80)], want, rtol=1e-5)
