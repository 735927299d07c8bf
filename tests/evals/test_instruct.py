"""Instruct-mode prompting: the chat-template rendering of a problem, and the code taken back out of an
answer (fences, prose, several blocks, unterminated fences, no fences)."""

from __future__ import annotations

from coderforge.evals import instruct
from coderforge.evals.execution import humaneval_problems, load_jsonl_problems
from coderforge.tokens.tokenizer import CHATML_TEMPLATE, chatml
from tests.evals.conftest import build_tiny_model


def test_render_uses_the_chat_template_with_a_prefilled_fence(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "m"))
    assert not tok.chat_template
    assert instruct.ensure_chat_template(tok, "tiny") is True and tok.chat_template == CHATML_TEMPLATE
    assert instruct.ensure_chat_template(tok) is False  # already has one: left alone
    p = humaneval_problems(1)[0]
    text = instruct.render(tok, "python", p.prompt)
    system = "You are an intelligent programming assistant to produce Python algorithmic solutions"
    user = ("Complete the following Python function. Return the complete function, with the imports it needs, "
            f"in one ```python code block.\n\n```python\n{p.prompt.strip(chr(10))}\n```")
    expected = chatml([{"role": "system", "content": system}, {"role": "user", "content": user}],
                      add_generation_prompt=True)
    assert text == expected + "```python\n"
    assert text.endswith("<|im_start|>assistant\n```python\n")
    assert instruct.render(tok, "python", p.prompt, prefill=False) == expected


def test_user_turns_per_language_and_task_kind():
    cpp = load_jsonl_problems("tests/evals/data/multipl_e_cpp.jsonl", language="cpp")[0]
    turn = instruct.user_turn("cpp", cpp.prompt)
    assert turn.startswith("Complete the following C++ function.") and "```cpp\n#include<assert.h>" in turn
    assert instruct.messages("java", "x")[0]["content"].endswith("produce Java algorithmic solutions")
    # an MBPP prompt (a docstring with the task and a test, no function) asks for a function
    mbpp = '"""\nWrite a function to find the shared elements of two lists.\nassert f([1], [1]) == [1]\n"""\n'
    turn = instruct.user_turn("python", mbpp)
    assert turn.startswith("Write a Python function for the following task.")
    assert turn.endswith("Write a function to find the shared elements of two lists.\nassert f([1], [1]) == [1]")


def test_extract_code_from_answers():
    ex = instruct.extract_code
    prose = "Sure! Here it is:\n\n```python\ndef f(x):\n    return x + 1\n```\n\nIt adds one.\n"
    assert ex(prose, "python") == "def f(x):\n    return x + 1\n"
    # prefilled fence, generation stopped at the closing one: an unterminated block runs to the end
    answer = instruct.answer_text("def f(x):\n    return 2\n", "python")
    assert answer.startswith("```python\n") and ex(answer, "python") == "def f(x):\n    return 2\n"
    # the right language's block wins over an output block and another language's
    mixed = "```text\n3\n```\n```js\nconsole.log(1)\n```\n```py\nprint(1)\n```\n"
    assert ex(mixed, "python") == "print(1)\n"
    assert ex(mixed, "javascript") == "console.log(1)\n"
    # no block in the language: another programming language's block; then any; no fences: all of it
    assert ex("```c++\nint f();\n```", "java") == "int f();\n"
    assert ex("```text\nonly output\n```", "python") == "only output\n"
    assert ex("def g():\n    pass", "python") == "def g():\n    pass\n"
    assert ex(instruct.answer_text("\n\n\n", "python"), "python") == ""  # an empty (prefilled) block: no code
    # untagged blocks count as the language; longer fences hold inner ones; tildes work
    assert ex("````\nx = '```'\n````", "python") == "x = '```'\n"
    assert ex("~~~cpp\nint x;\n~~~\n", "cpp") == "int x;\n"
    assert ex("```Python title\nA = 1\n```", "python") == "A = 1\n"
