"""Grading: ``extract`` picks the answer (per protocol), ``verify`` checks equivalence, ``pool`` runs it off-thread."""
# Bumped whenever a verdict could change; stored verdicts of another version are graded again on resume.
GRADER_VERSION = 2

from cotbench.grading.extract import PROTOCOLS, Extraction, extract_answer
from cotbench.grading.grader import DEFAULT_PROTOCOL, grade
from cotbench.grading.verify import equivalent

__all__ = ["GRADER_VERSION", "grade", "extract_answer", "equivalent", "Extraction", "PROTOCOLS", "DEFAULT_PROTOCOL"]
