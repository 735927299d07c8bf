"""Running untrusted code: resource limits, Linux namespaces, verdicts."""

from coderforge.sandbox.core import default_workers, run_many, run_program
from coderforge.sandbox.isolation import probe
from coderforge.sandbox.languages import available_languages
from coderforge.sandbox.verdict import VERDICTS, Verdict

__all__ = ["Verdict", "VERDICTS", "run_program", "run_many", "probe", "available_languages", "default_workers"]
