"""The vLLM engine process behind ``--backend vllm`` (run by path, in the Python that has vLLM installed).

Standalone on purpose: it imports only the standard library and vLLM, so it runs in a virtual environment of
its own (vLLM pins its own torch and transformers). It speaks JSON lines:
- in:  {"init": {...}}, then requests {"id", "prompt", "lora", "max_tokens", "temperature", "top_p", "seed",
  "stop"}, then {"end": true} (a batch is complete: finish what is queued);
- out: {"ready": {...}}, then one line per finished request {"id", "token_ids", "text", "finish_reason",
  "n_prompt_tokens", "latency_s"}, {"idle": true} when everything asked so far is done, or {"error": "..."}.
Finished requests are written the moment the engine reports them, so the parent stores each at once. When
its stdin closes (the parent ended, however it ended) it kills its process group, the engine's own
processes included.
"""
import json
import os
import queue
import signal
import sys
import threading
import time

# Run by path, this file's folder is first on sys.path, and cotbench's own backends/vllm.py would shadow vllm.
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]


_PROTOCOL = None  # the parent's pipe; fd 1 itself is pointed at stderr, for vLLM's processes and prints


def _send(obj) -> None:
    _PROTOCOL.write(json.dumps(obj) + "\n")
    _PROTOCOL.flush()


def _read_stdin(lines: "queue.Queue") -> None:
    for line in sys.stdin:
        lines.put(json.loads(line))
    lines.put(None)  # EOF: the parent is gone


def _die_with_parent() -> None:
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os._exit(0)


def main() -> None:
    lines = _take_protocol()
    first = lines.get()
    if first is None:
        _die_with_parent()
    started = time.perf_counter()
    try:
        engine, loras, params_type = _start_engine(first["init"])
    except Exception as exc:  # reported to the parent, which raises it as a CotbenchError
        import traceback

        traceback.print_exc()  # to stderr, which the parent's terminal shows
        _send({"error": f"vLLM could not start: {type(exc).__name__}: {exc}"[:4000]})
        return
    import vllm

    _send({"ready": {"vllm": vllm.__version__, "load_s": round(time.perf_counter() - started, 2)}})
    _serve(engine, loras, params_type, lines)


def _take_protocol() -> "queue.Queue":
    """Keep fd 1 for the protocol, point everything else printed at stderr, and read stdin on a thread."""
    global _PROTOCOL
    _PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever vLLM or its engine processes print goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    lines: "queue.Queue" = queue.Queue()
    threading.Thread(target=_read_stdin, args=(lines,), daemon=True).start()
    return lines


def _start_engine(init: dict):
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    kwargs = dict(model=init["model"], dtype=init["dtype"], seed=init.get("seed", 0), **init.get("engine_args", {}))
    if init.get("loras"):
        kwargs.update(enable_lora=True, max_lora_rank=init["max_lora_rank"], max_loras=len(init["loras"]))
    engine = LLM(**kwargs).llm_engine
    loras = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(init.get("loras", {}).items())}
    return engine, loras, SamplingParams


def _serve(engine, loras: dict, params_type, lines: "queue.Queue") -> None:
    """Take every request that has arrived, run one engine step, send what finished; block only when idle."""
    begun: dict[str, float] = {}
    waiting_for_end = False
    while True:
        if waiting_for_end and not engine.has_unfinished_requests():
            _send({"idle": True})  # everything asked so far is done
            waiting_for_end = False
        for item in _arrived(lines, block=not engine.has_unfinished_requests()):
            if item.get("end"):
                waiting_for_end = True
                continue
            params = params_type(max_tokens=item["max_tokens"], temperature=item["temperature"],
                                 top_p=item["top_p"], seed=item["seed"], stop=item["stop"] or None)
            engine.add_request(item["id"], item["prompt"], params, lora_request=loras.get(item["lora"]))
            begun[item["id"]] = time.perf_counter()
        if engine.has_unfinished_requests():  # one engine step: every finished request goes out at once
            for out in engine.step():
                if out.finished:
                    _send(_finished(out, time.perf_counter() - begun.pop(out.request_id, time.perf_counter())))


def _arrived(lines: "queue.Queue", block: bool) -> list:
    """The messages waiting (at least one when ``block``); the parent's EOF ends this process."""
    items = []
    try:
        items.append(lines.get(block=block, timeout=None) if block else lines.get_nowait())
        while True:
            items.append(lines.get_nowait())
    except queue.Empty:
        pass
    if None in items:
        _die_with_parent()
    return items


def _finished(out, latency_s: float) -> dict:
    choice = out.outputs[0]
    return {"id": out.request_id, "token_ids": list(choice.token_ids), "text": choice.text,
            "finish_reason": "length" if choice.finish_reason == "length" else "stop",
            "n_prompt_tokens": len(out.prompt_token_ids or []), "latency_s": latency_s}


if __name__ == "__main__":
    main()
