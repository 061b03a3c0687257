"""Grading: ``extract`` picks the answer (per protocol), ``verify`` checks equivalence, ``pool`` runs it off-thread."""
from cotbench.grading.extract import PROTOCOLS, Extraction, extract_answer
from cotbench.grading.grader import DEFAULT_PROTOCOL, grade
from cotbench.grading.verify import equivalent

__all__ = ["grade", "extract_answer", "equivalent", "Extraction", "PROTOCOLS", "DEFAULT_PROTOCOL"]
