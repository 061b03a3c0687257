"""The ``valve`` model for lm-eval: its HF model plus ``valve=`` and ``alpha=`` in ``--model_args``.

Generation goes through cotbench's own backend, so prompts produce the same outputs and the same exact
token counts as ``cotbench run``; loglikelihood requests use lm-eval's code unchanged. Without
``--apply_chat_template`` lm-eval hands a chat model plain text (an Instruct model then often answers with its
EOS alone); this model applies the chat template itself then, as ``cotbench run`` does.
"""
from __future__ import annotations

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from cotbench.backends.hf import HFBackend
from cotbench.backends.loading import resolve_model
from cotbench.lmeval.glue import marker
from cotbench.records import GenerationRequest, SamplingSettings


@register_model("valve")
class ValveLM(HFLM):
    def __init__(self, pretrained: str, valve: str | None = None, alpha: float | str = 1.0, **kwargs):
        source = resolve_model(str(pretrained))  # also 'smollm2' and .gguf files, as in `cotbench run`
        if source.gguf_file:
            kwargs.setdefault("gguf_file", source.gguf_file)
        kwargs.pop("params_b", None)  # read by the tasks (through metadata), not by the model
        super().__init__(pretrained=source.location, **kwargs)
        try:
            self.alpha = float(alpha)
        except ValueError:
            from cotbench.errors import ConfigError

            raise ConfigError(f"alpha {alpha!r} is not a number (model_args ...,alpha=0.5)") from None
        batch = self.batch_size if isinstance(self.batch_size, int) else "auto"
        self.cotbench = HFBackend.from_loaded(self._model, self.tokenizer, source.display_name, valve, batch)
        self._model = self.cotbench.model  # valve layers included: loglikelihoods run through it too

    def _model_call(self, inps, attn_mask=None, labels=None):
        """Loglikelihood forwards at the asked α too (generation sets its own strengths per row)."""
        self.cotbench.set_alpha(self.alpha)
        return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        self._templated_by_lm_eval = True  # lm-eval runs with --apply_chat_template
        return super().apply_chat_template(chat_history, add_generation_prompt)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        batch = []
        template_here = not getattr(self, "_templated_by_lm_eval", False) and bool(self.tokenizer.chat_template)
        for i, request in enumerate(requests):
            context, gen_kwargs = request.args
            if template_here:  # the prompt `cotbench run` builds: the task's text as the user's turn
                context, _ = self.cotbench.render([{"role": "user", "content": context}])
            gen_kwargs = dict(gen_kwargs)
            sampling = SamplingSettings(
                max_new_tokens=int(gen_kwargs.get("max_gen_toks", self.max_gen_toks)),
                temperature=float(gen_kwargs.get("temperature", 0.0)) if gen_kwargs.get("do_sample") else 0.0,
                top_p=float(gen_kwargs.get("top_p", 1.0)), seed=int(gen_kwargs.get("seed", 0) or 0),
                stop=tuple(s for s in gen_kwargs.get("until", []) or [] if s))
            batch.append(GenerationRequest(str(i), context, self.alpha if self.cotbench.valve_id else None, sampling))
        outputs = {}
        for done in self.cotbench.generate(batch):  # the backend sets α per request group
            outputs.update({g.request_id: g for g in done})
        return [outputs[str(i)].text + marker(outputs[str(i)].n_generated_tokens, outputs[str(i)].finish_reason)
                for i in range(len(batch))]

