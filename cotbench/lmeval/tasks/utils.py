"""Thin glue for lm-eval: every function is cotbench's own (cotbench/lmeval/glue.py)."""
from functools import partial

from cotbench.lmeval.glue import acu_aggregation, dataset, doc_to_text, judged_mean, process_results, total  # noqa: F401

gsm8k_dataset = partial(dataset, "gsm8k")
math500_dataset = partial(dataset, "math500")
aime24_dataset = partial(dataset, "aime24")
arithmetic_dataset = partial(dataset, "arithmetic")
