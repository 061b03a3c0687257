"""Every figure in the README and the docs is backed by a committed results file that holds it.

A figure is a number with a unit of time, size, speed, share or ratio (`27.3 s`, `1.76×`, `58 %`, `2.4 GB`,
`1,538 tokens/s`), or any number in a table whose caption (the paragraph above it) or cells name a results
file. The block that holds a figure (a paragraph, a list item, a table with its caption) must name the file it
comes from, a path under `benchmarks/results/` or `reports/`, and that file must hold the number (rounded as
written; a percentage may be held as a fraction) and a record of its own making: the date, the commit and the
machine. A short allow-list keeps definitions (the 5 s default deadline, 95 % intervals) out of this.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 500

# Definitions and settings, not measurements: each says what cotbench does, not how fast or how well it did.
ALLOWED = {
    "5 s",  # --grade-timeout's default
    "0.75 s",  # a grading worker is killed this long past its deadline
    "1 MB",  # the largest hostile grading input the tests use
    "95 %",  # every interval's level
    "80 GB",  # a GPU's memory, in the Ray sizing example
    "10 %",  # the rule for keeping a fast path (>= 10 % end to end)
    "80 %",  # the power a detectable difference is stated at
    "4 MiB",  # a samples file larger than this is written compressed
    "900 s", "300 s",  # the vLLM engine's start and wait deadlines
    "1 %",  # the share of grader errors a report calls out
}
UNITS = (r"(?:%|ms|s|seconds?|min|minutes?|h|hours?|GB|MB|GiB|MiB|KB|tokens/s|GFLOP/s|TFLOP/s|"
         r"verdicts per second)")
NUMBER = r"\d[\d,]*(?:\.\d+)?"
# a number (or a range a–b) with a unit after it; not part of a word, a version or a path
# (a ratio's × follows its number directly: `1.76×`; `100 × accuracy` is a formula)
UNIT_FIGURE = re.compile(rf"(?<![\w.\-/^]){NUMBER}(?:\s?[–-]\s?{NUMBER})?(?:×|\s?{UNITS}(?![\w/]))")
TABLE_NUMBER = re.compile(rf"(?<![\w.\-/^<]){NUMBER}(?![\w./\-])")  # "<0.001": a bound, not a value
SOURCE = re.compile(r"(?:benchmarks/results|reports)/[\w./-]+?\.(?:json|md|csv)")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _blocks(text: str):
    """(kind, lines) for each paragraph, list item and table; fenced code is left out; a table carries the
    paragraph just above it as its caption."""
    blocks, current, kind, fenced = [], [], None, False

    def close():
        nonlocal current, kind
        if current:
            blocks.append((kind, current))
        current, kind = [], None

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            close()
            fenced = not fenced
            continue
        if fenced:
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            close()
            continue
        line_kind = "table" if stripped.startswith("|") else "text"
        if line_kind != kind or (line_kind == "text" and re.match(r"\s{0,3}(?:[-*]|\d+\.)\s", line)):
            close()
            kind = line_kind
        current.append(line)
    close()
    out = []
    for i, (kind, lines) in enumerate(blocks):
        caption = blocks[i - 1][1] if kind == "table" and i and blocks[i - 1][0] == "text" else []
        out.append((kind, lines, caption))
    return out


def _figures(kind: str, lines: list[str], sourced: bool) -> list[str]:
    text = "\n".join(lines)
    text = re.sub(r"`[^`]*`", " ", text)  # code spans: commands, options, paths
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = DATE.sub(" ", text)
    if kind == "table" and sourced:
        body = [row for row in lines[2:]]  # the header and its rule hold labels, not figures
        cells = re.sub(r"`[^`]*`", " ", DATE.sub(" ", "\n".join(body)))
        return TABLE_NUMBER.findall(cells)
    return [m.group(0) for m in UNIT_FIGURE.finditer(text)]


def _values(figure: str) -> list[tuple[float, int, bool]]:
    """(value, decimals written, is a percentage) of each number in a figure."""
    percent = figure.rstrip().endswith("%")
    return [(float(n.replace(",", "")), len(n.split(".")[1]) if "." in n else 0, percent)
            for n in re.findall(NUMBER, figure)]


def _numbers(path: Path) -> list[float]:
    return [abs(float(n)) for n in re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", path.read_text(encoding="utf-8"))]


def _held(value: float, decimals: int, percent: bool, numbers: list[float]) -> bool:
    half = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(x - value) <= half or (percent and abs(100 * x - value) <= half) for x in numbers)


def _provenance(path: Path) -> list[str]:
    """What a results file lacks of its own record: the date, the commit and the machine."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ["a JSON record (date, commit, machine)"]
    keys: set[str] = set()

    def walk(node, depth=0):
        if isinstance(node, dict) and depth < 3:
            keys.update(node)
            for value in node.values():
                walk(value, depth + 1)

    walk(data)
    return [k for k in ("date", "commit") if k not in keys] + ([] if keys & {"machine", "cpu"} else ["machine"])


def _problems() -> list[str]:
    problems = []
    for doc in DOCS:
        for kind, lines, caption in _blocks(doc.read_text(encoding="utf-8")):
            sources = sorted(set(SOURCE.findall("\n".join(caption + lines))))
            figures = [f for f in _figures(kind, lines, bool(sources)) if f.strip() not in ALLOWED]
            if not figures:
                continue
            where = f"{doc.relative_to(ROOT)}: {lines[0].strip()[:70]!r}"
            if not sources:
                problems.append(f"{where}: figures {figures} name no results file")
                continue
            missing = [s for s in sources if not (ROOT / s).is_file()]
            if missing:
                problems.append(f"{where}: no such file {missing}")
                continue
            for source in sources:
                if lacking := _provenance(ROOT / source):
                    problems.append(f"{where}: {source} does not record its {', '.join(lacking)}")
            numbers = [x for s in sources for x in _numbers(ROOT / s)]
            for figure in figures:
                if not all(_held(v, d, p, numbers) for v, d, p in _values(figure)):
                    problems.append(f"{where}: {figure!r} is not in {', '.join(sources)}")
    return problems


def test_every_figure_names_a_results_file_that_holds_it():
    problems = _problems()
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_guide_not_a_diary():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES


@pytest.mark.parametrize("text,expected", [
    ("took 27.3 s on one machine", ["27.3 s"]),
    ("between 37.5–41.5 s and 1.76× and 58 % and 1,538 tokens/s", ["37.5–41.5 s", "1.76×", "58 %", "1,538 tokens/s"]),
    ("Python 3.11, x86-64-v3, SmolLM2-135M, 2x + 3, 10⁻⁶", []),
])
def test_figures_are_found_and_names_are_not(text, expected):
    assert _figures("text", [text], False) == expected


def test_a_figure_without_its_file_or_not_in_it_is_caught(tmp_path, monkeypatch):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "run.json").write_text(json.dumps({"machine": {"cpu": "x", "date": "d", "commit": "c"}, "wall_s": 41.46,
                                                  "share": 0.583}))
    (results / "bare.json").write_text(json.dumps({"wall_s": 12.0}))
    doc = tmp_path / "README.md"
    doc.write_text("It took 41.5 s and 58 % (`benchmarks/results/run.json`).\n\nIt took 9.9 s.\n\n"
                   "Also 41.6 s (`benchmarks/results/run.json`).\n\nAnd 12.0 s (`benchmarks/results/bare.json`).\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "DOCS", [doc])
    problems = _problems()
    assert len(problems) == 3, problems
    assert "name no results file" in problems[0] and "'41.6 s' is not in" in problems[1]
    assert "does not record its date, commit, machine" in problems[2]
