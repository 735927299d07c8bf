"""Instruct-mode prompting of SFT/DPO models: the problem as a user turn, rendered with the model's chat
template, and the code taken back out of the answer.

The protocol is Qwen2.5-Coder's EvalPlus one (recipe.md §8.1): a system turn naming the language
("You are an intelligent programming assistant to produce Python algorithmic solutions"), a user turn
asking for the completed function with the problem's prompt in a fenced block, and (``prefill``) the
assistant turn opened with the code fence, generation stopping at the closing fence. Problems without
a function header (MBPP: a task description and its tests) ask for a function solving the task.

``extract_code(answer, language)`` takes the first fenced block tagged with the language (or untagged);
failing that the first block of another programming language; an unterminated last fence runs to the
end of the answer; an answer without fences is taken as code, one whose blocks are all empty has none.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("coderforge.evals")

DISPLAY = {"python": "Python", "javascript": "JavaScript", "java": "Java", "cpp": "C++"}
FENCE = {"python": "python", "javascript": "javascript", "java": "java", "cpp": "cpp"}
TAGS = {
    "python": {"python", "py", "python3", "py3"},
    "javascript": {"javascript", "js", "node", "nodejs", "cjs", "mjs"},
    "java": {"java"},
    "cpp": {"cpp", "c++", "cxx", "cc", "hpp", "h", "c"},
}
NON_CODE = {"text", "txt", "plain", "plaintext", "output", "console", "shell", "bash", "sh", "json", "markdown",
            "md", "diff", "stdout", "log"}
SYSTEM = "You are an intelligent programming assistant to produce {language} algorithmic solutions"
COMPLETE = ("Complete the following {language} function. Return the complete function, with the imports it "
            "needs, in one ```{fence} code block.\n\n```{fence}\n{prompt}\n```")
WRITE = ("Write a {language} function for the following task. Return it in one ```{fence} code block.\n\n"
         "{task}")
_FENCE_LINE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^`\n]*?)[ \t]*$")
_PY_DEF = re.compile(r"^\s*(?:async\s+)?def\s+\w+\s*\(", re.M)


def _task_text(prompt: str) -> str:
    """An MBPP-style prompt (a docstring holding the task and a test) as plain text."""
    text = prompt.strip()
    for quote in ('"""', "'''"):
        if text.startswith(quote) and text.endswith(quote) and len(text) >= 6:
            text = text[3:-3].strip()
    return text


def user_turn(language: str, prompt: str) -> str:
    name, fence = DISPLAY.get(language, language), FENCE.get(language, language)
    if language == "python" and not _PY_DEF.search(prompt):
        return WRITE.format(language=name, fence=fence, task=_task_text(prompt))
    return COMPLETE.format(language=name, fence=fence, prompt=prompt.strip("\n"))


def messages(language: str, prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM.format(language=DISPLAY.get(language, language))},
            {"role": "user", "content": user_turn(language, prompt)}]


def prefill_text(language: str) -> str:
    return f"```{FENCE.get(language, language)}\n"


def ensure_chat_template(tokenizer, source: str = "") -> bool:
    """Give ``tokenizer`` the repository's ChatML template when it has none; True when it had to."""
    if getattr(tokenizer, "chat_template", None):
        return False
    from coderforge.tokens.tokenizer import CHATML_TEMPLATE

    log.warning("evaluate: the tokenizer of %s has no chat template; using the ChatML template", source or "?")
    tokenizer.chat_template = CHATML_TEMPLATE
    return True


def render(tokenizer, language: str, prompt: str, prefill: bool = True) -> str:
    """The text sent to the model: the conversation with a generation prompt (and the opening fence)."""
    text = tokenizer.apply_chat_template(messages(language, prompt), tokenize=False, add_generation_prompt=True)
    return text + (prefill_text(language) if prefill else "")


def answer_text(generation: str, language: str, prefill: bool = True) -> str:
    """The assistant's answer: the prefilled fence (when used) and what the model generated."""
    return (prefill_text(language) if prefill else "") + generation


def _blocks(text: str) -> list[tuple[str, str, bool]]:
    """(tag, code, closed) of the fenced blocks of ``text``."""
    out, lines = [], text.replace("\r\n", "\n").split("\n")
    open_at, fence, tag = -1, "", ""
    for i, line in enumerate(lines):
        m = _FENCE_LINE.match(line)
        if not m:
            continue
        if open_at < 0:
            open_at, fence, tag = i, m.group(1), m.group(2).split()[0].lower() if m.group(2) else ""
        elif not m.group(2) and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            out.append((tag, "\n".join(lines[open_at + 1:i]), True))
            open_at = -1
    if open_at >= 0:
        out.append((tag, "\n".join(lines[open_at + 1:]), False))
    return out


def extract_code(answer: str, language: str) -> str:
    """The code of ``answer`` for ``language`` (see the module docstring)."""
    fenced = _blocks(answer)
    if not fenced:
        return answer.strip("\n") + "\n"
    blocks = [b for b in fenced if b[1].strip()]
    if not blocks:  # fences around nothing: no code
        return ""
    tags = TAGS.get(language, {language})
    right = [b for b in blocks if b[0] in tags or not b[0]]
    other = [b for b in blocks if b[0] and b[0] not in tags and b[0] not in NON_CODE]
    pick = (right or other or blocks)[0]
    return pick[1].strip("\n") + "\n"
