"""Carbon intensity look-ups and the synthetic data sources."""

from __future__ import annotations

import math

import pytest
import torch

from carbonbench.energy.carbon import J_PER_KWH, equivalents, resolve
from carbonbench.execution.data import BOS, CorpusSource, MarkovSource, ReversalTask, target_loss


def test_intensity_from_each_source() -> None:
    assert resolve(intensity=100.0).intensity.source == "given by the user (g CO2e/kWh)"
    usa = resolve(country="usa").intensity
    assert usa.g_per_kwh == pytest.approx(369.473) and usa.year == 2023 and usa.region == "USA"
    assert resolve(country="FRA").intensity.g_per_kwh == pytest.approx(56.039)
    gcp = resolve(cloud="gcp:europe-west1").intensity
    assert gcp.g_per_kwh > 0 and "codecarbon cloud table" in gcp.source
    world = resolve().intensity
    assert world.g_per_kwh == 475.0 and "world average" in world.source


def test_the_tables_read_directly_are_those_codecarbon_loads() -> None:
    """Carbon intensities (world, country, cloud region) and CPU TDPs come from codecarbon's
    files without its DataSource (which loads every table, with pandas): they must be the
    very tables it loads."""
    from codecarbon.input import DataSource

    from carbonbench.energy.codecarbon_data import csv_rows, json_table

    source = DataSource()
    mix = json_table("private_infra", "global_energy_mix.json")
    assert mix == source.get_global_energy_mix_data()
    per_source = json_table("private_infra", "carbon_intensity_per_source.json")
    assert per_source == source.get_carbon_intensity_per_source_data()
    cpus = source.get_cpu_power_data()
    rows = csv_rows("hardware", "cpu_power.csv")
    assert [r["Name"] for r in rows] == [str(n) for n in cpus["Name"]]
    assert [r["TDP"] for r in rows] == [str(t) for t in cpus["TDP"]]
    cloud = source.get_cloud_emissions_data()
    regions = csv_rows("cloud", "impact.csv")
    for column in ("provider", "region", "source"):
        assert [r[column] for r in regions] == list(cloud[column])
    assert [float(r["impact"]) for r in regions] == [float(x) for x in cloud["impact"]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"country": "XYZ"}, "unknown country 'XYZ'"),
        ({"cloud": "aws:us-east-1"}, "no carbon data for cloud region 'aws:us-east-1'"),
        ({"cloud": "gcp"}, "cloud must be PROVIDER:REGION"),
        ({"intensity": 10.0, "country": "FRA"}, "at most one of"),
        ({"pue": 0.9}, "PUE must be >= 1.0"),
        ({"intensity": -1.0}, "must be >= 0"),
    ],
)
def test_bad_carbon_settings(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(**kwargs)


def test_co2e_is_kwh_times_pue_times_intensity() -> None:
    carbon = resolve(intensity=400.0, pue=1.5)
    assert carbon.co2e_g(J_PER_KWH) == pytest.approx(600.0)
    assert carbon.kwh(7.2e6) == 2.0
    km, source = equivalents(248.548)["km driven by an average passenger car"]
    assert km == pytest.approx(1.0, rel=1e-3) and "EPA" in source


def test_markov_entropy_rate_matches_the_empirical_one() -> None:
    source = MarkovSource(48, seed=3, branching=4)
    tokens = source.sample(4000, 100)
    prev, nxt = tokens[:, :-1].flatten(), tokens[:, 1:].flatten()
    counts = torch.zeros(48, 48).index_put_((prev, nxt), torch.ones(len(prev)), accumulate=True)
    p = counts / counts.sum(1, keepdim=True)
    pi = counts.sum(1) / counts.sum()
    logs = torch.where(p > 0, p * p.log(), torch.zeros_like(p))
    assert float(-(pi[:, None] * logs).sum()) == pytest.approx(source.entropy_rate, rel=0.01)
    assert 0 < source.entropy_rate < math.log(4)


def test_markov_is_seeded_and_batches_shift_by_one() -> None:
    a, b = MarkovSource(64, seed=1), MarkovSource(64, seed=1)
    assert torch.equal(a.sample(3, 20), b.sample(3, 20))
    batch = MarkovSource(64).lm_batch(2, 10)
    (inputs,) = batch.inputs
    assert inputs.shape == batch.targets.shape == (2, 10)
    assert torch.equal(inputs[:, 1:], batch.targets[:, :-1])


def test_reversal_task_teacher_forcing() -> None:
    batch = ReversalTask(MarkovSource(32)).batch(2, 6)
    src, tgt_in = batch.inputs
    assert torch.equal(batch.targets, src.flip(1))
    assert (tgt_in[:, 0] == BOS).all() and torch.equal(tgt_in[:, 1:], batch.targets[:, :-1])


def test_corpus_bytes_and_errors(tmp_path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("hello carbon " * 20)
    windows = CorpusSource(path).sample(4, 16)
    assert windows.shape == (4, 16) and int(windows.max()) < 256
    with pytest.raises(ValueError, match="fewer than one sequence"):
        CorpusSource(path).sample(1, 10_000)
    with pytest.raises(ValueError, match="cannot read corpus"):
        CorpusSource(tmp_path / "missing.txt")


def test_target_loss() -> None:
    assert target_loss(2.0, 1.1, None) == pytest.approx(2.2)
    assert target_loss(None, 1.1, 3.0) == 3.0
    with pytest.raises(ValueError, match="no known entropy rate"):
        target_loss(None, 1.1, None)
