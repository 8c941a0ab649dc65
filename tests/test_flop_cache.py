"""FLOP counts kept in the store by what determines them: a run whose counts are known counts
nothing and never imports torch._dynamo (what building the meta twin costs, about 2.5 s), and
an edited model's source makes a new key."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from carbonbench.energy.carbon import resolve
from carbonbench.execution.protocol import CaseDone
from carbonbench.execution.runner import RunOptions, new_run_id
from carbonbench.execution.supervisor import Supervisor
from carbonbench.models import build, registry
from carbonbench.models.flops import count_key
from carbonbench.results.store import SCHEMA_VERSION, Store
from tests.helpers import fast_suite

FIXTURES = Path(__file__).parent / "fixtures" / "stores"

# In a fresh interpreter (sys.modules as a worker's): learn counts for every phase's key, then
# build the workloads and take one step of each, as a worker of a later round or run does.
# Training phases come last: torch.optim itself imports torch._dynamo (its Optimizer's
# add_param_group and zero_grad are wrapped in torch._disable_dynamo), whatever we count.
KNOWN_COUNTS = """
import sys
import torch
from carbonbench.execution.workloads import make_workload
from carbonbench.models import build, flops

model = build("gpt", "tiny", "fused")
flops.learn({
    flops.count_key("step", model, 2, 8): [7, 21],
    flops.count_key("generate", model, 2, 8, 4): [5, 3],
})
def check(phase, count):
    w = make_workload(model, phase, batch=2, seq_len=8, device=torch.device("cpu"), new_tokens=4)
    w.step()
    assert w.work.flops == count, (phase, w.work.flops)
for phase, count in {"infer": 7, "prefill": 5, "decode": 3}.items():
    check(phase, count)
assert "torch._dynamo" not in sys.modules, "torch._dynamo imported"
for phase in ("train", "train-to-target"):
    check(phase, 21)
print("ok")
"""


def test_a_run_whose_counts_are_known_does_not_import_dynamo() -> None:
    done = subprocess.run(
        [sys.executable, "-c", KNOWN_COUNTS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _supervise(suite, db: Path) -> tuple[list, list[CaseDone]]:
    events: list = []
    supervisor = Supervisor(
        suite,
        db,
        resolve(intensity=100.0),
        RunOptions(),
        run_id=new_run_id(),
        on_event=events.append,
    )
    assert supervisor.run().status == "ok"
    with Store(db, create=False) as store:
        rows = store.rows(supervisor.run_id)
    return rows, [e for e in events if isinstance(e, CaseDone)]


def test_a_second_run_counts_nothing_and_stores_the_same_flops(tmp_path) -> None:
    suite = fast_suite(archs=("gpt",), phases=("infer", "generate"))
    db = tmp_path / "s.sqlite"
    first, first_done = _supervise(suite, db)
    with Store(db) as store:
        kept = store.db.execute("SELECT * FROM flop_counts ORDER BY key").fetchall()
    assert {json.loads(k)["kind"] for k, _, _ in kept} == {"step", "generate"}
    assert any(done.flops for done in first_done)  # the first run's worker counted

    second, second_done = _supervise(suite, db)
    assert second_done and all(done.flops == {} for done in second_done)  # nothing counted
    with Store(db) as store:
        assert store.db.execute("SELECT * FROM flop_counts ORDER BY key").fetchall() == kept
    per_step = {r.case_id: r.flops / r.steps for r in first}  # windows differ in steps
    assert per_step == {r.case_id: r.flops / r.steps for r in second}
    assert len(per_step) == 3 and all(f > 0 for f in per_step.values())


ARCH = """
from dataclasses import dataclass

from torch import nn

from carbonbench.models import Architecture


@dataclass(frozen=True)
class Config:
    vocab: int = 16
    d_model: int = 8


class Linear(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.embed, self.out = nn.Embedding(c.vocab, c.d_model), nn.Linear(c.d_model, c.vocab)

    def forward(self, tokens):
        return self.out(self.embed(tokens))


RECORD = Architecture(
    name="linear",
    description="embedding and a linear layer",
    kind="language-model",
    config_cls=Config,
    sizes={"tiny": Config()},
    builders={"reference": Linear},
)
"""


def test_an_edited_model_source_makes_a_new_key(tmp_path, monkeypatch) -> None:
    module = tmp_path / "flop_cache_arch.py"
    module.write_text(ARCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "flop_cache_arch:RECORD"
    try:
        model = build(spec)
        before = count_key("step", model, 2, 8)
        assert count_key("step", model, 2, 8) == before  # the same file: the same key
        module.write_text(ARCH.replace("vocab: int = 16", "vocab: int = 16  # edited"))
        after = count_key("step", model, 2, 8)
    finally:
        registry.ARCHITECTURES.pop(spec, None)
        sys.modules.pop("flop_cache_arch", None)
    assert after != before
    old, new = json.loads(before), json.loads(after)
    assert old.pop("code") != new.pop("code") and old == new
    assert old["source"] == spec and old["impl"] == "reference" and old["shape"] == [2, 8]


def test_migration_3_keeps_counts_in_a_schema_2_store(tmp_path) -> None:
    shutil.copyfile(FIXTURES / "schema-2.sqlite", tmp_path / "old.sqlite")
    with Store(tmp_path / "old.sqlite") as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
        assert store.flop_counts() == {}
        store.add_flop_counts({"a": [1, 2], "b": [3, 4]})
        store.add_flop_counts({"a": [9, 9]})  # a key kept keeps its first counts
        assert store.flop_counts() == {"a": [1, 2], "b": [3, 4]}
