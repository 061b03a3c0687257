"""What a generation backend must do. ``hf`` implements it; vLLM or an OpenAI-compatible server can
plug in later without touching the runner, because every request carries its own α."""
from __future__ import annotations

from typing import Iterator, Protocol, Sequence

from cotbench.prompts import Messages
from cotbench.records import Generation, GenerationRequest


class Backend(Protocol):
    model_id: str  # what the user asked for, as recorded in results ("HuggingFaceTB/SmolLM2-135M-Instruct")
    valve_id: str  # "" without a valve, else "<name>@<fingerprint>"
    tokenizer: object  # the model's tokenizer (chat template; thinking tokens where the engine gives no ids)

    @classmethod
    def from_config(cls, config) -> "Backend":
        """The engine as a run's settings (``RunConfig``) ask for it: model, valve, device, engine options."""
        ...

    def render(self, messages: Messages) -> tuple[str, bool]:
        """(prompt text, add_special_tokens): the chat template when the model has one, else plain text."""
        ...

    def n_params(self) -> int:
        """Exact parameter count of the base model; valve parameters are not added."""
        ...

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Generation]]:
        """Generations batch by batch, in any order; each ``request_id`` exactly once."""
        ...

    def describe(self) -> dict:
        """Settings that determine outputs beyond the request (dtype, device, ...), for the run record."""
        ...

    def close(self) -> None:
        """Release engine processes and memory (optional; the runner calls it when it made the backend)."""
        ...

    # Optional: ``stats() -> dict``, what the engine measured about itself (workers, per-worker tokens/s), kept
    # in the run's metadata as ``engine_stats``; information only, never part of a sample's key.
    # Optional: ``model_identity() -> str``, what generates when the model spec's files do not say (a served
    # model: keys.py); without it the runner identifies the model by the content of the files --model names.
    # Optional: ``numerics() -> dict``, settings that change only floating-point rounding (batch size,
    # scheduler, threads, kernels), recorded with each sample (``Sample.numerics``), never keyed.
