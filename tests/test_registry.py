"""One door each: the model preset registry (create_model, list_models) and the ODE solvers."""

from __future__ import annotations

import math

import pytest
import torch

import whatsreal
from whatsreal.errors import ConfigError
from whatsreal.models import registry
from whatsreal.models.contrastive import CONTRASTIVE_PRESETS, build_contrastive_model
from whatsreal.models.counterfactual import COUNTERFACTUAL_PRESETS, build_counterfactual_model
from whatsreal.models.flow import (
    SOLVERS,
    Dopri5,
    Euler,
    Heun,
    Midpoint,
    Solver,
    get_solver,
    integrate,
    register_solver,
)
from whatsreal.models.registry import (
    ModelFamily,
    create_model,
    list_models,
    preset_config,
    register_family,
)

FAMILIES = (
    "counterfactual_image",
    "counterfactual_series",
    "contrastive_dual",
    "contrastive_single",
)


def _data_args(name: str) -> dict[str, int]:
    """Data-dependent arguments that fit a family: channels and image size or series length."""
    if name.startswith("counterfactual_image"):
        return {"in_channels": 2, "size": 16}
    if name.startswith("counterfactual_series"):
        return {"in_channels": 1, "size": 32}
    return {"in_channels": 2, "length": 32}


def _build_directly(name: str, **kw: int):
    """The same model through the family's own build_* function."""
    family, preset = name.split(".")
    if family.startswith("counterfactual"):
        modality = family.split("_")[1]
        return build_counterfactual_model(preset, modality, kw["in_channels"], kw["size"])
    single = family == "contrastive_single"
    return build_contrastive_model(preset, kw["in_channels"], kw["length"], single_latent=single)


# --------------------------------------------------------------------------- presets
def test_list_models_names_every_preset_of_every_table():
    names = list_models()
    assert names == sorted(names) and whatsreal.list_models() == names
    expected = {
        f"counterfactual_{m}.{p}" for p in COUNTERFACTUAL_PRESETS for m in ("image", "series")
    }
    expected |= {f"contrastive_{k}.{p}" for p in CONTRASTIVE_PRESETS for k in ("dual", "single")}
    assert set(names) == expected
    assert {n.split(".")[0] for n in names} == set(FAMILIES)
    assert list_models("*.tiny") == sorted(f"{f}.tiny" for f in FAMILIES)
    assert list_models("counterfactual_*.cpu") == [
        "counterfactual_image.cpu",
        "counterfactual_series.cpu",
    ]
    assert list_models("nothing*") == []


def test_a_preset_added_to_a_table_is_listed_without_a_second_edit(monkeypatch):
    monkeypatch.setitem(CONTRASTIVE_PRESETS, "small", {**CONTRASTIVE_PRESETS["tiny"], "width": 8})
    assert {"contrastive_dual.small", "contrastive_single.small"} <= set(list_models())
    model = create_model("contrastive_dual.small", in_channels=1, length=16)
    assert model.config["width"] == 8


@pytest.mark.parametrize("name", list_models())
def test_every_preset_builds_the_architecture_build_does(name):
    kw = _data_args(name)
    with torch.device("meta"):  # no memory or init time, even for the paper UNet
        a, b = create_model(name, **kw), _build_directly(name, **kw)
    assert type(a) is type(b) and a.config == b.config
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }
    cfg = preset_config(name)
    assert cfg and all(a.config[k] == v for k, v in cfg.items() if k not in ("encoder", "decoder"))


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_presets_match_build_weight_for_weight(family):
    name = f"{family}.tiny"
    kw = _data_args(name)
    torch.manual_seed(0)
    a = whatsreal.create_model(name, **kw)
    torch.manual_seed(0)
    b = _build_directly(name, **kw)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_overrides_replace_and_merge_preset_values():
    m = create_model(
        "counterfactual_series.tiny", in_channels=2, size=32, token_dim=4, encoder={"width": 8}
    )
    assert m.config["token_dim"] == 4 and m.config["modality"] == "series"
    assert m.config["encoder"]["width"] == 8
    assert (
        m.config["encoder"]["depth"] == COUNTERFACTUAL_PRESETS["tiny"]["series"]["encoder"]["depth"]
    )
    single = create_model("contrastive_single.tiny", in_channels=1, length=16, latent_dim=3)
    assert type(single).__name__ == "SingleLatentModel" and single.config["latent_dim"] == 3


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"did you mean 'counterfactual_image\.cpu'"):
        create_model("counterfactual_imag.cpu", in_channels=1, size=16)
    with pytest.raises(ConfigError, match=r"'contrastive_dual\.(cpu|tiny|paper)'"):
        whatsreal.create_model("contrastive_dual")
    with pytest.raises(ConfigError, match="list_models"):
        create_model("resnet50")


def test_missing_data_arguments_are_named_with_how_to_pass_them():
    with pytest.raises(ConfigError, match=r"size \(time samples\)") as err:
        create_model("counterfactual_series.cpu", in_channels=1)
    assert "in_channels=..., size=..." in str(err.value) and "scale" in str(err.value)
    with pytest.raises(ConfigError, match=r"in_channels \(bands.*length \(time samples\)"):
        create_model("contrastive_dual.tiny")


def test_wrong_options_name_the_key_and_the_fix():
    with pytest.raises(ConfigError, match="'length' for 'size'"):
        create_model("contrastive_single.tiny", in_channels=1, size=32)
    with pytest.raises(ConfigError, match="'width' for 'widht'"):
        create_model("contrastive_dual.tiny", in_channels=1, length=32, widht=8)
    with pytest.raises(ConfigError, match="'modality' is set by the family"):
        create_model("counterfactual_image.tiny", in_channels=1, size=16, modality="series")


def test_a_new_family_is_one_register_call(monkeypatch):
    presets = {"small": {"bias": False}}
    family = ModelFamily(
        name="toy_linear",
        model_class=torch.nn.Linear,
        presets=lambda: presets,
        build=lambda preset, **kw: torch.nn.Linear(**{**presets[preset], **kw}),
        required={"in_features": "inputs", "out_features": "outputs"},
    )
    monkeypatch.setitem(registry._FAMILIES, "toy_linear", family)  # removed after the test
    assert register_family(family) is family and "toy_linear.small" in list_models()
    layer = create_model("toy_linear.small", in_features=3, out_features=2)
    assert layer.weight.shape == (2, 3) and layer.bias is None
    with pytest.raises(ConfigError, match=r"without '\.'"):
        register_family(ModelFamily("a.b", torch.nn.Linear, dict, torch.nn.Linear, {}))


# --------------------------------------------------------------------------- solvers
def test_solver_registry_maps_names_to_classes():
    assert {"euler": Euler, "heun": Heun, "midpoint": Midpoint, "dopri5": Dopri5}.items() <= (
        SOLVERS.items()
    )
    assert [SOLVERS[n].evals_per_step for n in ("euler", "heun", "midpoint")] == [1, 2, 2]
    assert Dopri5.adaptive and not Heun.adaptive
    assert isinstance(get_solver("heun"), Heun)
    assert isinstance(get_solver(Midpoint), Midpoint)
    heun = Heun()
    assert get_solver(heun) is heun
    assert get_solver("dopri5", rtol=1e-5).rtol == 1e-5
    with pytest.raises(ConfigError, match="did you mean 'heun'"):
        get_solver("huen")
    with pytest.raises(TypeError, match="Solver object"):
        get_solver(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="set them on the object"):
        get_solver(Dopri5(), rtol=1e-5)
    with pytest.raises(ConfigError, match="nfe >= 2"):
        integrate(lambda x, t: x, torch.ones(1, 1), "midpoint", nfe=1)


# dx/dt = -x from dyadic starts: every step is exact in binary floating point, so the
# hand-computed values are the bit-exact answers. Euler's step multiplies by 1 - h; Heun's
# and midpoint's by 1 - h + h^2 / 2 (5/8 at h = 1/2).
X0 = torch.tensor([[1.0, -2.0], [0.5, 4.0]], dtype=torch.float64)
EXACT_STEPS = {"euler": (4, (3 / 4) ** 4), "heun": (2, (5 / 8) ** 2), "midpoint": (2, (5 / 8) ** 2)}


@pytest.mark.parametrize("name", ["euler", "heun", "midpoint"])
@pytest.mark.parametrize("by", ["name", "object"])
def test_fixed_step_solvers_take_the_hand_computed_steps(name, by):
    steps, factor = EXACT_STEPS[name]
    solver = name if by == "name" else SOLVERS[name]()
    x1, used = integrate(lambda x, t: -x, X0, solver, nfe=4)
    assert torch.equal(x1, X0 * factor)
    assert used == 4 and steps * SOLVERS[name].evals_per_step == 4
    if SOLVERS[name].evals_per_step == 2:  # an odd budget leaves one evaluation unused
        x1, used = integrate(lambda x, t: -x, X0, solver, nfe=5)
        assert torch.equal(x1, X0 * factor) and used == 4


@pytest.mark.parametrize(
    ("name", "times"),
    [
        ("euler", [0, 0.25, 0.5, 0.75]),
        ("heun", [0, 0.5, 0.5, 1]),
        ("midpoint", [0, 0.25, 0.5, 0.75]),
    ],
)
def test_solvers_evaluate_on_the_uniform_grid(name, times):
    seen = []

    def velocity(x, t):
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    integrate(velocity, X0, name, nfe=4)
    assert seen == times


@pytest.mark.parametrize("name", ["heun", "midpoint"])
def test_second_order_solvers_are_exact_on_a_velocity_linear_in_t(name):
    # dx/dt = 1 + 2t  =>  x(1) = x(0) + 2, with no truncation error for trapezoid or midpoint.
    x1, _ = integrate(lambda x, t: (1 + 2 * t)[:, None].expand_as(x), X0, name, nfe=8)
    assert torch.equal(x1, X0 + 2)


def test_dopri5_by_name_and_by_object_agree():
    def velocity(x, t):
        return -2 * t[:, None] * x

    a, na = integrate(velocity, X0, "dopri5", rtol=1e-7, atol=1e-9)
    b, nb = integrate(velocity, X0, Dopri5(rtol=1e-7, atol=1e-9))
    assert torch.equal(a, b) and na == nb > 0
    torch.testing.assert_close(a, X0 * math.exp(-1), rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="set them on the object"):
        integrate(velocity, X0, Dopri5(), rtol=1e-5)


class RK4(Solver):
    """Classical fourth-order Runge-Kutta, written as a user would."""

    name = "rk4"
    evals_per_step = 4

    def step(self, velocity, x, t, h):
        k1 = velocity(x, t)
        k2 = velocity(x + h / 2 * k1, t + h / 2)
        k3 = velocity(x + h / 2 * k2, t + h / 2)
        k4 = velocity(x + h * k3, t + h)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def test_a_user_solver_works_by_object_and_once_registered_by_name(monkeypatch):
    x1, used = integrate(lambda x, t: -x, X0, RK4(), nfe=40)
    assert used == 40
    err = [
        (integrate(lambda x, t: -x, X0, RK4(), nfe=n)[0] - X0 * math.exp(-1)).abs().max()
        for n in (40, 80)
    ]
    assert float(err[0]) < 1e-5 and float(err[0] / err[1]) == pytest.approx(16, rel=0.1)
    monkeypatch.setitem(SOLVERS, "rk4", RK4)  # restored after the test
    assert register_solver(RK4) is RK4
    x2, _ = integrate(lambda x, t: -x, X0, "rk4", nfe=40)
    assert torch.equal(x1, x2)
    with pytest.raises(ConfigError, match="non-empty 'name'"):
        register_solver(type("Nameless", (Solver,), {}))


def test_model_counterfactual_passes_a_solver_object_through():
    class CountingEuler(Euler):
        steps = 0

        def step(self, velocity, x, t, h):
            type(self).steps += 1
            return super().step(velocity, x, t, h)

    model = create_model("counterfactual_series.tiny", in_channels=1, size=32).eval()
    g = torch.Generator().manual_seed(0)
    views = torch.randn(2, 2, 1, 32, generator=g).abs()
    inst = torch.randn(2, 3, 1, 32, generator=g).abs()
    by_name = model.counterfactual(views, inst, n_samples=2, solver="euler", nfe=3, seed=1)
    by_obj = model.counterfactual(views, inst, n_samples=2, solver=CountingEuler(), nfe=3, seed=1)
    assert CountingEuler.steps == 3
    assert torch.equal(by_name, by_obj)
