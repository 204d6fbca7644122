"""User-editable Jinja2 templates and where they render.

- :mod:`~zsgen.templates.sandbox`: the limited sandbox (Jinja2's immutable sandbox, ``StrictUndefined``, the render
  budget :data:`~zsgen.templates.sandbox.LIMITS`). Prompt templates and item-text templates (:mod:`zsgen.itemtext`)
  both render in it.
- :mod:`~zsgen.templates.header`: the ``{#- zsgen ... -#}`` header every prompt template opens with.
- :mod:`~zsgen.templates.defuse`: role markers, chat-token defusing and the sanitising of variables.
- :mod:`~zsgen.templates.library`: :class:`PromptTemplate` and :class:`PromptLibrary`.
- :mod:`~zsgen.templates.checks`: the checks of ``zsgen prompts check``.
- :mod:`~zsgen.templates.worker`: rendering user-edited templates where they cannot stall the process that asked.

The layering is one-way: sandbox, header and defuse know nothing of each other's users; the library builds on the
three, the checks on the library. Nothing here imports the reranker or the LLM backends, which build on this package.
"""

from zsgen.templates.checks import TemplateProblem, check_dir, check_template_file, sample_variables
from zsgen.templates.defuse import CHAT_TOKEN, defuse_chat_token
from zsgen.templates.header import KNOWN_VARIABLES, OUTPUT_FORMATS, ROLES, TEMPLATE_SUFFIX, OutputFormat
from zsgen.templates.library import PromptLibrary, PromptTemplate
from zsgen.templates.sandbox import LIMITS, TemplateLimitError

__all__ = [
    "CHAT_TOKEN",
    "KNOWN_VARIABLES",
    "LIMITS",
    "OUTPUT_FORMATS",
    "ROLES",
    "TEMPLATE_SUFFIX",
    "OutputFormat",
    "PromptLibrary",
    "PromptTemplate",
    "TemplateLimitError",
    "TemplateProblem",
    "check_dir",
    "check_template_file",
    "defuse_chat_token",
    "sample_variables",
]
