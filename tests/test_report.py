"""Summary rows, tables, plots and the leaderboard: intervals on every figure, comparisons with the base, and
rows with ungraded or timed-out samples kept apart, flagged in every output and drawn hollow."""
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from cotbench.report.html import render
from cotbench.report.leaderboard import rows_from_summary
from cotbench.report.plots import curve_figure, plot_curves
from cotbench.report.tables import findings, format_table, summary_frame
from report_samples import sweep


def _row(frame, alpha):
    return frame[frame["alpha"] == alpha].iloc[0]


def test_every_row_has_intervals_and_the_paired_comparison():
    frame = summary_frame(sweep(), 0.1)
    base, mid = _row(frame, 0.0), _row(frame, 0.5)
    assert base["accuracy_pct"] == pytest.approx(100 / 3) and mid["accuracy_pct"] == pytest.approx(200 / 3)
    for r in (base, mid):
        assert r["accuracy_ci_low"] < r["accuracy_pct"] < r["accuracy_ci_high"]
        assert r["mean_tokens_ci_low"] < r["mean_tokens"] < r["mean_tokens_ci_high"]
        assert r["acu_ci_low"] < r["acu"] < r["acu_ci_high"] and r["bootstrap_resamples"] == 2000
    assert pd.isna(base["accuracy_change_pct"])  # the base is not compared with itself
    assert mid["base"] == "α=0" and mid["accuracy_change_pct"] == pytest.approx(100 / 3)
    assert mid["accuracy_change_ci_low"] > 0 and mid["mcnemar_p"] < 0.05 and bool(mid["distinguishable"])
    assert mid["token_reduction_ratio"] == pytest.approx(base["mean_tokens"] / mid["mean_tokens"])
    assert mid["token_reduction_ci_low"] > 2
    # truncation as censoring: α = 0 truncated every fifth response (i % 5 == 0, and i % 3 == 0 right at 0, 15)
    assert base["truncation_pct"] == pytest.approx(20.0)
    assert base["accuracy_non_truncated_pct"] == pytest.approx(100 * 8 / 24)
    assert base["ockscore"] < base["accuracy_pct"] and mid["aes"] > 0
    assert base["length_spearman_rho"] == pytest.approx(-1.0)
    assert list(frame.sort_values("alpha")["on_pareto"]) == [False, True, True]
    assert mid["budget_auc"] > base["budget_auc"]


def test_distinguishable_uses_holms_correction_over_the_curve():
    """Four α points against the base, one with p just under 0.05 alone: after Holm's correction over the four
    comparisons it is no longer distinguishable, though its raw p and its interval say so."""
    from report_samples import sample

    samples = [sample(0.0, i, i % 4 == 0, 100) for i in range(40)]
    for alpha in (0.25, 0.5, 0.75):  # the same as the base: p = 1
        samples += [sample(alpha, i, i % 4 == 0, 90) for i in range(40)]
    # 6 more right than the base and none fewer: McNemar p = 2 × 0.5^6 = 0.031; the smallest of four, × 4 = 0.125
    samples += [sample(1.0, i, i % 4 == 0 or i < 8, 80) for i in range(40)]
    frame = summary_frame(samples, 0.1)
    last = _row(frame, 1.0)
    assert last["mcnemar_p"] < 0.05 and last["accuracy_change_ci_low"] > 0
    assert last["mcnemar_p_holm"] == pytest.approx(min(1.0, 4 * last["mcnemar_p"]))
    assert not bool(last["distinguishable"]) and last["n_paired"] == 40
    assert "after Holm's correction" in findings(frame)[-1] and "borderline" in findings(frame)[-1]


def test_findings_say_in_words_what_is_distinguishable():
    frame = summary_frame(sweep(), 0.1)
    lines = findings(frame)
    assert len(lines) == 2
    assert "α=0.5" in lines[0] and "distinguishable from noise" in lines[0] and "not" not in lines[0]
    assert "shorter than at α=0" in lines[0] and "McNemar exact p" in lines[0]


def test_ungraded_and_timed_out_samples_are_kept_out_of_accuracy_and_flagged():
    frame = summary_frame(sweep(ungraded_at=0.5, n_ungraded=6, timeout_at=1.0), 0.1)
    mid, short = _row(frame, 0.5), _row(frame, 1.0)
    assert (mid["n"], mid["n_graded"], mid["n_ungraded"], mid["n_timeout"]) == (30, 24, 6, 0)
    assert not bool(mid["complete"])
    right = sum(1 for i in range(6, 30) if i % 3 != 2)
    assert mid["accuracy_pct"] == pytest.approx(100 * right / 24)  # over the graded 24, not the 30
    assert (short["n"], short["n_graded"], short["n_timeout"]) == (30, 29, 1) and not bool(short["complete"])
    assert bool(_row(frame, 0.0)["complete"])
    table = format_table(frame)
    assert "| α=0.5 * |" in table and "| α=1 * |" in table and "| α=0 |" in table
    page = render(frame, sweep(ungraded_at=0.5, n_ungraded=6), {"config": {}}, [])
    assert page.count("<tr class='incomplete'>") == 2 and "α=0.5 *" in page
    board = rows_from_summary(frame, "test", {})
    assert list(board.sort_values("alpha")["complete"]) == ["yes", "no", "no"]
    assert list(board.sort_values("alpha")["n"]) == [30, 24, 29]
    assert all(v.startswith("[") for v in board["accuracy_ci"]) and all(v.startswith("[") for v in board["acu_ci"])


def test_a_row_with_nothing_graded_says_so_and_is_not_drawn(tmp_path):
    frame = summary_frame(sweep(ungraded_at=1.0, n_ungraded=30), 0.1)
    empty = _row(frame, 1.0)
    assert (empty["n"], empty["n_graded"]) == (30, 0) and pd.isna(empty["accuracy_pct"]) and not bool(empty["complete"])
    assert "| α=1 * | 30 | 0 |" in format_table(frame)
    assert len(rows_from_summary(frame, "test", {})) == 2  # nothing to rank on the leaderboard
    figure = curve_figure(frame[frame["n_graded"] > 0], "accuracy_pct", "accuracy")
    assert {t.get_text() for t in figure.axes[0].texts} == {"α=0", "α=0.5"}
    written = plot_curves(frame, tmp_path)
    assert {p.suffix for p in written} == {".png", ".svg"} and all(p.stat().st_size > 0 for p in written)


def _markers(figure):
    """(face colour, marker) of every single-point marker on the first axes."""
    return [(line.get_markerfacecolor(), line.get_marker()) for line in figure.axes[0].lines
            if len(line.get_xdata()) == 1 and line.get_marker() in ("o", "*")]  # not the error bars' caps


def test_incomplete_points_are_hollow_and_the_base_is_a_star():
    frame = summary_frame(sweep(ungraded_at=0.5, n_ungraded=6), 0.1)
    markers = _markers(curve_figure(frame, "accuracy_pct", "accuracy"))
    assert len(markers) == 3
    hollow = [m for m in markers if m[0] == "none"]
    assert len(hollow) == 1 and hollow[0][1] == "o"  # α = 0.5, with ungraded samples
    assert sum(1 for face, marker in markers if marker == "*" and to_rgba(face)[3] > 0) == 1  # the base, filled
    complete = _markers(curve_figure(summary_frame(sweep(), 0.1), "accuracy_pct", "accuracy"))
    assert not [m for m in complete if m[0] == "none"]


def test_error_bars_on_both_axes():
    frame = summary_frame(sweep(), 0.1)
    ax = curve_figure(frame, "acu", "ACU").axes[0]
    bars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == 3 and all(c.has_xerr and c.has_yerr for c in bars)


def test_labels_never_overlap_even_for_crowded_points():
    frame = summary_frame(sweep(), 0.1)
    crowded = pd.concat([frame.assign(alpha=frame["alpha"] + d, mean_tokens=frame["mean_tokens"] * (1 + d / 50))
                         for d in (0.0, 0.01, 0.02, 0.03)], ignore_index=True)
    figure = curve_figure(crowded, "accuracy_pct", "accuracy")
    renderer = figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in figure.axes[0].texts]
    assert len(boxes) == 12
    overlapping = [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
    assert not overlapping


def test_token_axis_goes_logarithmic_beyond_ten_fold():
    frame = summary_frame(sweep(), 0.1)  # about 440 vs 45 tokens
    assert curve_figure(frame, "acu", "ACU").axes[0].get_xscale() == "log"
    narrow = frame[frame["alpha"] < 1.0]  # about 4x
    assert curve_figure(narrow, "acu", "ACU").axes[0].get_xscale() == "linear"


def test_grader_errors_and_cut_responses_without_an_answer_are_counted_apart():
    from dataclasses import replace

    from cotbench.grading.grader import NO_COMMITMENT
    from report_samples import sample

    samples = sweep()
    errored = [i for i, s in enumerate(samples) if s.alpha == 0.5][:2]
    for i in errored:
        samples[i] = sample(0.5, int(samples[i].problem.problem_id), False, 50, status="error")
    cut = next(i for i, s in enumerate(samples) if s.alpha == 0.0 and not s.grade.correct)
    samples[cut] = replace(samples[cut], grade=replace(samples[cut].grade, reason=NO_COMMITMENT))
    frame = summary_frame(samples, 0.1)
    mid, base = _row(frame, 0.5), _row(frame, 0.0)
    assert (mid["n_error"], mid["n_timeout"], mid["n_graded"]) == (2, 0, 28) and not bool(mid["complete"])
    assert base["n_truncated_no_answer"] == 1 and base["n_error"] == 0
    said = findings(frame)
    assert any("the grader failed on 2 of 30 samples (6.7 %, above 1 %)" in line for line in said)
    assert "| 2 |" in format_table(frame)


def test_a_timed_out_response_counts_in_lengths_not_in_accuracy():
    """Responses the grader could not judge in time are often the long ones: leaving their tokens out would
    shorten mean tokens and raise ACU."""
    from report_samples import sample

    samples = [sample(0.0, i, i < 5, 100) for i in range(10)]
    samples += [sample(0.0, 10, False, 1000, status="timeout")]
    row = summary_frame(samples, 0.1).iloc[0]
    assert row["accuracy_pct"] == pytest.approx(50.0)  # 5 of the 10 judged
    assert row["mean_tokens"] == pytest.approx(2000 / 11)  # all 11 generated
    assert row["acu"] == pytest.approx(100 * 50.0 / (0.1 * 2000 / 11))
    assert row["acu_ci_low"] < row["acu"] < row["acu_ci_high"]
    assert row["mean_tokens_ci_high"] > 100


def test_each_row_says_where_its_accuracy_per_token_goes(tmp_path):
    from cotbench.report.outputs import _report

    summary = summary_frame(sweep(n=30), params_b=0.1)
    base, half = _row(summary, 0.0), _row(summary, 0.5)
    # α = 0: every fifth response cut at the cap (those are 1 in 3 right as well); α = 0.5: none cut
    assert base["completion_pct"] == pytest.approx(80.0) and half["completion_pct"] == pytest.approx(100.0)
    assert base["accuracy_cut_pct"] == pytest.approx(100 * 2 / 6)  # problems 0, 15 of 0, 5, ..., 25
    assert pd.isna(half["accuracy_cut_pct"])
    split = half["accuracy_change_by_completion_pct"] + half["accuracy_change_by_answers_pct"]
    assert split == pytest.approx(half["accuracy_change_pct"])
    text = _report(summary, {"config": {}}, [])
    assert "## Where accuracy per token goes" in text and "accuracy given completion %" in text
    assert "by how many responses ended on their own" in text


def test_a_comparison_says_what_difference_it_could_have_detected():
    from cotbench.report.tables import limit_advice

    summary = summary_frame(sweep(n=30), params_b=0.1)
    one = _row(summary, 1.0)  # α = 1 against α = 0 on 30 problems: −23.3 points, Holm p 0.065
    assert one["detectable_difference_pct"] > abs(one["accuracy_change_pct"])
    assert one["problems_needed"] > 30
    said = "\n".join(findings(summary))
    assert "this run detects differences of" in said and "would need about" in said
    assert f"--limit {int(one['problems_needed'])}" in limit_advice(summary)
