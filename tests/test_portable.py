"""Files cotbench ships or commits name nothing of the machine they were made on."""
import re
import subprocess
from pathlib import Path

import pytest

from cotbench.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
# An absolute path into a home, temp or project folder of some machine (not a URL, not a relative path).
ABSOLUTE = re.compile(r"(?<![\w.~:/-])(?:/(?:home|root|tmp|work|Users|mnt|opt|srv|var/folders|private)/[\w.-]"
                      r"|[A-Z]:\\\\(?:Users|home)\\\\)")


def _tracked_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / n for n in names if not n.startswith(("tests/", ".ci/"))]


def test_no_shipped_or_committed_file_holds_an_absolute_path():
    offenders = []
    for path in _tracked_files():
        if not path.is_file() or path.suffix in (".png", ".safetensors", ".bin", ".so"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(REPO)}: {m.group(0)}…" for m in ABSOLUTE.finditer(text)]
    assert not offenders, offenders


def test_the_shipped_valve_names_its_base_portably():
    import json

    config = json.loads((REPO / "cotbench/valve/default/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_run_settings_record_the_shipped_valve_by_name():
    settings = RunConfig().to_dict()
    assert settings["valve"] == "default" and settings["model"] == "smollm2"
    assert RunConfig(**{**settings, "tasks": tuple(settings["tasks"])}).valve == RunConfig().valve  # and it reads back
