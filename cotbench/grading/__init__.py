"""Grading: ``extract`` picks the answer, ``normalize`` and ``numbers`` and ``symbolic`` check equivalence
(``verify`` orders the checks), ``guard`` refuses work that cannot finish, ``sandbox`` runs the symbolic part
where it can be killed, ``pool`` grades beside generation, ``config`` holds the protocols, ``identity`` says
which grader judged a verdict."""
from cotbench.grading.config import PROTOCOLS, GradingConfig
from cotbench.grading.extract import Extraction
from cotbench.grading.grader import DEFAULT_PROTOCOL, Explanation, explain, gold_answers, grade, same_answer
from cotbench.grading.identity import grader_id


def extract_answer(response: str, protocol: "str | GradingConfig" = DEFAULT_PROTOCOL) -> Extraction:
    """The answer a protocol's extractors read from a response (no gold: choice letters are not considered)."""
    from cotbench.grading.config import resolve
    from cotbench.grading.extract import run_extractors

    return run_extractors(response, resolve(protocol).extractors)


__all__ = ["grade", "same_answer", "explain", "Explanation", "extract_answer", "gold_answers", "grader_id", "GradingConfig",
           "PROTOCOLS", "DEFAULT_PROTOCOL", "Extraction"]
