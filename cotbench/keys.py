"""What a stored sample is keyed by, and why: one policy for the store, the runner and the leaderboard.

A sample's key hashes everything that determines its generation:

- the **model's identity**, its content rather than its name: ``sha256:`` of a local model's config and
  weight files (``loading.content_fingerprint``), ``hub:<id>@<commit>`` for a Hub id (the revision it resolves
  to), ``served:<name>`` and the server's own id of it for ``--backend openai``;
- the **valve's identity**, the fingerprint of its adapter weights and output-changing config;
- α, the problem (task, id, gold answer), the rendered prompt, the sampling settings, the engine's
  ``describe()`` (backend, device, dtype), and a length-control method with every setting that changes its
  output (``methods.py``);
- which of the K samples of its (problem, point) it is (``--samples K``): sample 0 hashes as a run with one
  sample always did, so a run grows from K = 1 to K = 4 generating only samples 1 to 3. The key is also the
  request's id, from which each engine seeds the request's own generator (``backends.seeds.request_seed``): the K samples
  differ, and each reproduces whatever its batch mates.

Not keyed: names and paths (a renamed model directory or valve keeps its samples), a server's address (the
same server on another port keeps them), and settings that change only floating-point rounding (batch size,
threads, scheduler, kernels), which each sample records in its ``numerics`` field instead.

Stores written before keys held content keyed the model and the valve by name (``legacy_sample_key``); a
resumed run finds those samples under their old keys and re-keys them, saying so.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from cotbench.records import Problem, SamplingSettings


def sample_key(model: str, valve: str, alpha: float | None, problem: Problem, prompt: str,
               sampling: SamplingSettings, engine: dict, method: dict | None = None, index: int = 0) -> str:
    """32 hex digits. ``model``, ``valve``: their identities (``model_identity``, ``valve_identity``);
    ``engine``: the backend's ``describe()``; ``method``: a length-control baseline and its settings (valve
    points have none, and hash as they always did); ``index``: the sample's number among K (0 hashes as before)."""
    parts = [model, valve, alpha, problem.task, problem.problem_id, problem.gold, prompt,
             list(sampling.__dict__.values()), engine]
    parts += ([method] if method else []) + ([{"sample": index}] if index else [])
    material = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def legacy_sample_key(model_name: str, valve_id: str, *rest, **kwargs) -> str:
    """The key an older cotbench gave the same sample: the model's name and the valve's ``name@fingerprint``
    in place of their identities."""
    return sample_key(model_name, valve_id, *rest, **kwargs)


def valve_identity(valve_id: str) -> str:
    """A valve's identity from its ``name@fingerprint`` id: the fingerprint, so renaming it keeps samples."""
    return valve_id.rpartition("@")[2] if valve_id else ""


def model_identity(config) -> str:
    """The identity of the model a run's settings (``RunConfig``) name, before any loading: see the module
    docstring. A spec this machine cannot resolve to files or a revision keeps its name (``name:``)."""
    from cotbench.backends.loading import content_fingerprint, resolve_model
    from cotbench.errors import CotbenchError

    if config.backend == "openai":  # the server's weights, whatever --model names for the tokenizer
        return f"served:{config.served_model or config.model}"
    try:
        source = resolve_model(config.model)
    except CotbenchError:
        return f"name:{config.model}"  # a custom backend's own name for its model
    content = content_fingerprint(source)
    if content:
        return f"sha256:{content}"
    revision = hub_revision(source.location)
    return f"hub:{source.location}@{revision}" if revision else f"name:{config.model}"


def hub_revision(repo_id: str) -> str | None:
    """The commit a Hub id resolves to now: the Hub's answer when it can be reached (what transformers then
    downloads), else the local cache's (what it loads offline); None when neither knows the id."""
    import huggingface_hub

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes"):
        try:
            return huggingface_hub.HfApi().model_info(repo_id, timeout=10).sha
        except Exception:  # no network, no such repo, gated: the cache may still know it
            pass
    found = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    if isinstance(found, str):  # .../snapshots/<commit>/config.json
        return os.path.basename(os.path.dirname(found))
    return None


def run_identity(config, model: str) -> dict[str, Any]:
    """What a run directory must keep (``config.RUN_IDENTITY``), with the model (``model``, its identity) and
    the valve by content: a renamed directory resumes, the same path holding other weights is refused.
    ``model_content``, the fingerprint of the local files --model names, is what stores written before
    ``model_identity`` recorded; it is kept so that those stores are checked too."""
    from cotbench.backends.loading import content_fingerprint, resolve_model
    from cotbench.errors import CotbenchError
    from cotbench.valve.apply import valve_fingerprint

    settings = config.identity()
    if not model.startswith("name:"):
        settings.pop("model")
    if config.valve:
        settings.pop("valve")
        settings["valve_content"] = valve_fingerprint(config.valve)
    try:
        content = content_fingerprint(resolve_model(config.model))
    except CotbenchError:
        content = None
    return {**settings, "model_identity": model, "model_content": content}


def result_digest(settings: dict[str, Any], model: str = "") -> str:
    """12 hex digits naming a result's identity (``config.RESULT_IDENTITY`` of a run's config.yaml, the model
    by ``model``, its identity, where the run recorded one): equal digits, comparable numbers."""
    from cotbench.config import RESULT_IDENTITY, identity

    fields = identity(settings, RESULT_IDENTITY)
    if fields.get("samples") == 1:  # one sample per problem: the digest results had before K existed
        fields.pop("samples")
    if model and not model.startswith("name:"):
        fields["model"] = model
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
