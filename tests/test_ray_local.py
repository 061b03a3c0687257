"""`--ray local` from Python: the cluster the sweep started is stopped when the sweep ends, however it ends."""
import pytest

from cotbench.config import RunConfig
from cotbench.errors import ConfigError
from cotbench.runner import run_sweep

ray = pytest.importorskip("ray", reason="install cotbench[ray]")


@pytest.fixture(autouse=True)
def no_cluster_yet():
    if ray.is_initialized():  # another module's cluster: this test is about one the sweep starts itself
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_a_local_cluster_started_by_run_sweep_is_shut_down_after_it(tiny_model, tmp_path):
    config = RunConfig(model=str(tiny_model), tasks=("arithmetic",), n_generated=2, max_new_tokens=4, dtype="float32",
                       grade_workers=0, ray="local", workers=1, out=str(tmp_path / "run"))
    assert run_sweep(config, progress=False).summary["n"].sum() == 2
    assert not ray.is_initialized()


def test_a_local_cluster_is_shut_down_when_its_workers_cannot_start(tiny_model, tmp_path):
    config = RunConfig(model=str(tiny_model), tasks=("arithmetic",), n_generated=2, max_new_tokens=4, grade_workers=0,
                       ray="local", workers=64, worker_cpus=4, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="do not fit"):
        run_sweep(config, progress=False)
    assert not ray.is_initialized()
