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
    global _PROTOCOL
    _PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever vLLM or its engine processes print goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    lines: "queue.Queue" = queue.Queue()
    threading.Thread(target=_read_stdin, args=(lines,), daemon=True).start()
    first = lines.get()
    if first is None:
        _die_with_parent()
    init = first["init"]
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        kwargs = dict(model=init["model"], dtype=init["dtype"], seed=init.get("seed", 0), **init.get("engine_args", {}))
        if init.get("loras"):
            kwargs.update(enable_lora=True, max_lora_rank=init["max_lora_rank"], max_loras=len(init["loras"]))
        started = time.perf_counter()
        llm = LLM(**kwargs)
        engine = llm.llm_engine
        loras = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(init.get("loras", {}).items())}
    except Exception as exc:  # reported to the parent, which raises it as a CotbenchError
        import traceback

        traceback.print_exc()  # to stderr, which the parent's terminal shows
        _send({"error": f"vLLM could not start: {type(exc).__name__}: {exc}"[:4000]})
        return
    import vllm

    _send({"ready": {"vllm": vllm.__version__, "load_s": round(time.perf_counter() - started, 2)}})
    begun: dict[str, float] = {}
    waiting_for_end = False
    while True:
        if waiting_for_end and not engine.has_unfinished_requests():
            _send({"idle": True})  # everything asked so far is done
            waiting_for_end = False
        block = not engine.has_unfinished_requests()
        try:
            item = lines.get(block=block, timeout=None if block else 0)
        except queue.Empty:
            item = "none"
        while item != "none":
            if item is None:
                _die_with_parent()
            if item.get("end"):
                waiting_for_end = True
            else:
                params = SamplingParams(max_tokens=item["max_tokens"], temperature=item["temperature"],
                                        top_p=item["top_p"], seed=item["seed"], stop=item["stop"] or None)
                engine.add_request(item["id"], item["prompt"], params, lora_request=loras.get(item["lora"]))
                begun[item["id"]] = time.perf_counter()
            try:
                item = lines.get_nowait()
            except queue.Empty:
                item = "none"
        if engine.has_unfinished_requests():  # one engine step: every finished request goes out at once
            for out in engine.step():
                if out.finished:
                    choice = out.outputs[0]
                    _send({"id": out.request_id, "token_ids": list(choice.token_ids), "text": choice.text,
                           "finish_reason": "length" if choice.finish_reason == "length" else "stop",
                           "n_prompt_tokens": len(out.prompt_token_ids or []),
                           "latency_s": time.perf_counter() - begun.pop(out.request_id, time.perf_counter())})


if __name__ == "__main__":
    main()
