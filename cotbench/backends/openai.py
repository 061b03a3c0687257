"""``--backend openai --base-url URL``: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, TGI,
a hosted API), through its ``/v1/completions`` endpoint.

- α is a served model name: ``--alpha-model`` (default ``alpha_{alpha}``, what ``cotbench valve export``
  writes and ``--serve`` prints) formats each α as the export names it (0.5 -> ``alpha_0.5``, -0.5 ->
  ``alpha_m0.5``). α = 0 uses ``alpha_0`` when the server has it (a zero adapter: exactly the base, and on
  vLLM-CPU safer than an adapter-less request), else ``--served-model`` (default: ``--model``). Without a
  valve every request goes to ``--served-model``. Every name is checked against the server's model list
  before anything is sent; a missing one is an error naming it and the URL.
- The prompt is rendered here with the model's chat template (``--model`` names the model for its tokenizer
  and parameter count), so the server sees exactly what ``--backend hf`` would run.
- Requests run ``--max-concurrency`` at a time (asyncio); the OpenAI client retries 429s, 5xx and dropped
  connections with exponential backoff (``--max-retries``) and gives up on a request after
  ``--request-timeout`` seconds; each finished request is handed to the store at once, so a server that
  dies mid-sweep costs only what was in flight, and the error names the URL.
- Token counts are the server's ``usage.completion_tokens``; a server without usage is an error unless
  ``--count-tokens tokenizer`` asks to count the text with the model's tokenizer (recorded in the run).
- The API key is read from the environment variable ``--api-key-env`` (default ``OPENAI_API_KEY``) and is never
  written anywhere.
"""
from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from typing import Iterator, Sequence

from cotbench.backends.loading import count_parameters, resolve_model, standard_checkpoint
from cotbench.errors import ConfigError, CotbenchError
from cotbench.backends.seeds import request_seed
from cotbench.prompts import Messages, render_plain
from cotbench.records import Generation, GenerationRequest
from cotbench.valve.serving import adapter_name

_DONE = object()


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, valve: str | None, base_url: str, served_model: str | None = None,
                 alpha_model: str = "alpha_{alpha}", max_concurrency: int = 8, request_timeout_s: float = 600.0,
                 max_retries: int = 5, count_tokens: str = "usage", api_key_env: str = "OPENAI_API_KEY"):
        from transformers import AutoTokenizer

        if not base_url:
            raise ConfigError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        if count_tokens not in ("usage", "tokenizer"):
            raise ConfigError(f"--count-tokens must be usage or tokenizer, got {count_tokens!r}")
        self.base_url = base_url.rstrip("/")
        source = resolve_model(model)
        location = standard_checkpoint(source) if source.gguf_file else source.location
        self.model_id = source.display_name
        self.served_model = served_model or model
        self.alpha_model, self.count_tokens = alpha_model, count_tokens
        self.max_concurrency, self.request_timeout_s, self.max_retries = max_concurrency, request_timeout_s, max_retries
        self.api_key = os.environ.get(api_key_env) or "EMPTY"  # local servers take any key
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        self._n_params = count_parameters(location)
        self.valve_id = ""
        if valve:
            from pathlib import Path

            from cotbench.valve.apply import valve_fingerprint

            self.valve_id = f"{Path(valve).name}@{valve_fingerprint(valve)}"
        self._served: set[str] | None = None
        self._roots: dict[str, str | None] = {}

    @classmethod
    def from_config(cls, config) -> "OpenAIBackend":
        return cls(config.model, config.valve, config.base_url, config.served_model, config.alpha_model,
                   config.max_concurrency, config.request_timeout_s, config.max_retries, config.count_tokens,
                   config.api_key_env)

    # -- the Backend protocol
    def render(self, messages: Messages) -> tuple[str, bool]:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), False
        return render_plain(messages), True

    def n_params(self) -> int:
        return self._n_params

    def describe(self) -> dict:
        # not the URL: the same server moved to another port must keep its samples; the served name: another
        # model behind the same --model label must not reuse them
        return {"backend": "openai", "served_model": self.served_model,
                "alpha_model": self.alpha_model if self.valve_id else None, "count_tokens": self.count_tokens}

    def model_identity(self) -> str:
        """What generates here (keys.py): the served name, and the server's own id of the model behind it
        where /v1/models gives one, not the tokenizer --model names, nor the server's address."""
        self._list_served()
        root = self._roots.get(self.served_model)
        return f"served:{self.served_model}" + (f"@{root}" if root and root != self.served_model else "")

    def close(self) -> None:
        pass

    def served_name(self, alpha: float | None) -> str:
        if alpha is None or not self.valve_id:
            return self.served_model
        name = adapter_name(alpha, self.alpha_model)
        if float(alpha) == 0.0 and self._served is not None and name not in self._served:
            return self.served_model  # no zero adapter served: the base model itself
        return name

    def generate(self, requests: Sequence[GenerationRequest]) -> Iterator[list[Generation]]:
        if not requests:
            return
        self._list_served()
        self._check_served({self.served_name(r.alpha) for r in requests})
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        thread = threading.Thread(target=lambda: asyncio.run(self._run_all(requests, out, stop)), daemon=True)
        thread.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield [item]
        finally:
            stop.set()  # the consumer left (an error, Ctrl-C): requests still running are abandoned
            thread.join(timeout=5)

    # -- the server
    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=self.max_retries,
                           timeout=self.request_timeout_s)

    def _list_served(self) -> None:
        """The server's model list, once (it also tells whether a zero adapter for α = 0 is served)."""
        from openai import APIConnectionError, APIStatusError, OpenAI

        if self._served is not None:
            return
        try:
            client = OpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=self.max_retries,
                            timeout=min(60.0, self.request_timeout_s))
            models = list(client.models.list())
            self._served = {m.id for m in models}
            # vLLM and SGLang give each served name the model it loaded ("root"); others leave it out
            self._roots = {m.id: getattr(m, "root", None) for m in models}
        except APIConnectionError as exc:
            raise CotbenchError(f"no OpenAI-compatible server answers at {self.base_url} ({exc}). Start it "
                                "(`cotbench valve export ... --serve` prints a vllm serve command) or fix "
                                "--base-url.") from None
        except APIStatusError as exc:
            raise CotbenchError(f"{self.base_url}/models answered {exc.status_code}: {exc.message}") from None

    def _check_served(self, names: set[str]) -> None:
        missing = sorted(names - self._served)
        if missing:
            raise CotbenchError(f"the server at {self.base_url} serves no model named {', '.join(missing)} "
                                f"(it serves: {', '.join(sorted(self._served)) or 'nothing'}). Serve the α-scaled "
                                "adapters under those names (cotbench valve export --serve prints how), or set "
                                "--alpha-model / --served-model to the names it has.")

    async def _run_all(self, requests, out: queue.Queue, stop: threading.Event) -> None:
        try:
            async with self._client() as client:
                gate = asyncio.Semaphore(self.max_concurrency)
                tasks = [asyncio.create_task(self._one(client, gate, r, out, stop)) for r in requests]
                try:
                    for finished in asyncio.as_completed(tasks):
                        await finished
                        if stop.is_set():
                            break
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException as exc:  # handed to the consumer, raised there
            out.put(exc)
        finally:
            out.put(_DONE)

    async def _one(self, client, gate: asyncio.Semaphore, request: GenerationRequest, out: queue.Queue,
                   stop: threading.Event) -> None:
        from openai import APIConnectionError, APIStatusError, APITimeoutError

        s = request.sampling
        async with gate:
            if stop.is_set():
                return
            started = time.perf_counter()
            try:
                reply = await client.completions.create(
                    model=self.served_name(request.alpha), prompt=request.prompt, max_tokens=s.max_new_tokens,
                    temperature=s.temperature, top_p=s.top_p, seed=request_seed(s.seed, request.request_id, 4), stop=list(s.stop) or None,
                    extra_body=None if request.add_special_tokens else {"add_special_tokens": False})
            except APITimeoutError:
                raise CotbenchError(f"a request to {self.base_url} took more than {self.request_timeout_s:g} s "
                                    f"({self.max_retries} retries): raise --request-timeout, or lower "
                                    "--max-concurrency") from None
            except APIConnectionError as exc:
                raise CotbenchError(f"the server at {self.base_url} stopped answering ({exc}; {self.max_retries} "
                                    "retries). Every finished sample is stored: restart the server and rerun the "
                                    "same command to go on.") from None
            except APIStatusError as exc:
                raise CotbenchError(f"{self.base_url} refused a request for {self.served_name(request.alpha)!r}: "
                                    f"{exc.status_code} {exc.message}") from None
        choice = reply.choices[0]
        text = choice.text or ""
        usage = reply.usage
        if usage is not None and usage.completion_tokens is not None:
            n_generated, n_prompt = usage.completion_tokens, usage.prompt_tokens
        elif self.count_tokens == "tokenizer":
            eos = 1 if choice.finish_reason == "stop" and not s.stop else 0  # the EOS the server does not return
            n_generated = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + eos
            n_prompt = len(self.tokenizer(request.prompt, add_special_tokens=request.add_special_tokens)["input_ids"])
        else:
            raise CotbenchError(f"the server at {self.base_url} returned no token usage, so generated tokens cannot "
                                "be counted exactly. Pass --count-tokens tokenizer to count the text with the "
                                "model's tokenizer (the report says so).")
        finish = "length" if choice.finish_reason == "length" else "stop"
        out.put(Generation(request.request_id, text, int(n_prompt or 0), int(n_generated), finish,
                           time.perf_counter() - started))
