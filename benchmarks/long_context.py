"""YaRN beyond the trained length, and nothing changed within it (recipe.md §5.1, issue 14).

A small Qwen2ForCausalLM is trained here, on CPU, at a short length (``--train-len``, 128 tokens) on
needle-in-a-haystack rows in the format of ``coderforge.evals.needle`` (standard-library code with a
``def needle_<hex>(): return <5 digits>`` inserted at a random depth, then ``assert needle_<hex>() == ``
and the value), with next-token loss on the whole row and the answer tokens weighted up. It is saved
the way the repo-level stage saves a model (``coderforge.train.model.released_config``: no rope
scaling, ``max_position_embeddings`` = the trained length) and then evaluated through the evaluate
step's own code (``coderforge.evals.serving.generation`` / ``load_model`` with or without
``eval.long_context``, ``coderforge.evals.needle``):

* needle accuracy at 0.5x, 1x, 2x and 4x the trained length, five depths, ``--eval-seeds`` test haystacks
  (found/n with 95 % Wilson intervals): as saved (the evaluate step refuses prompts past its length),
  without YaRN (run past its length anyway) and with YaRN (``eval.long_context``: factor ``--factor``
  over the trained length) with the default betas (32/1), with betas matched to Qwen's shares of
  kept/interpolated dimension pairs, and with the betas chosen on ``--dev-seeds`` other haystacks
  from the grid ``--grid-fast`` x ``--grid-slow`` (recipe values ``eval.long_context.beta_fast/beta_slow``);
* next-token loss of held-out standard-library files (files never in the training haystacks) per
  position band, on windows of 4x the trained length, without and with each YaRN;
* short inputs (windows of the trained length): held-out loss and needle accuracy within the
  trained length with YaRN off (must equal the trained model exactly: the logits are compared) and
  with each YaRN on for every input (what saving YaRN into the config did before).

Why the betas (``yarn_analysis``): they count turns of a RoPE dimension pair over the trained length.
At 128 tokens (head_dim 64, base 10K) the fastest pair turns 20 times, so the default beta_fast 32 puts
every pair on the interpolation ramp and breaks the local (previous-token) attention even within the
trained length. Betas matched to Qwen's *shares* keep pairs that turned less than once in training; at
4x their angles were never seen. Keeping only pairs that turn several times (beta_fast a few) and
interpolating those under about half a turn (beta_slow 0.5) works at 2x and 4x; YaRN's attention
scaling (0.1 ln 4 + 1, transformers' default) is needed too (without it 4x fails).

    .venv/bin/python benchmarks/long_context.py [--work DIR [--reuse]] [--train-len 128] [--steps 8000]

Writes ``benchmarks/results/long_context.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
from yarn_analysis import correction_range, pick_betas, qwen_share_betas, rotations, wilson  # noqa: E402

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TOKENIZER_FILES = ("textwrap.py", "bisect.py", "heapq.py", "fnmatch.py", "colorsys.py", "keyword.py", "shlex.py",
                   "difflib.py", "argparse.py", "dataclasses.py", "functools.py", "csv.py", "string.py")


def stdlib_split() -> tuple[list[Path], list[Path]]:
    """(training haystack files, held-out files): every 10th standard-library module is held out."""
    files = sorted(p for p in STDLIB.glob("*.py") if p.is_file())
    return [p for i, p in enumerate(files) if i % 10], [p for i, p in enumerate(files) if i % 10 == 0]


def read(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


class NeedleRows:
    """Training rows in the evaluation's format, haystacks from random line windows of ``files``."""

    def __init__(self, tok, files: list[Path], seed: int):
        self.tok, self.rng = tok, random.Random(seed)
        self.lines: list[tuple[str, int]] = []
        for p in files:
            for line in read(p).splitlines(keepends=True):
                self.lines.append((line, len(tok.encode(line, add_special_tokens=False))))

    def row(self, length: int) -> tuple[list[int], list[int]]:
        """(token ids, answer mask) of at most ``length`` tokens, the answer whole."""
        for _ in range(100):
            ids, mask = self._row(length)
            if len(ids) <= length:
                return ids, mask
        raise ValueError(f"no needle row fits in {length} tokens")

    def _row(self, length: int) -> tuple[list[int], list[int]]:
        rng, tok = self.rng, self.tok
        name = f"needle_{rng.getrandbits(32):08x}"
        value = rng.randrange(10_000, 100_000)
        needle = f"\n\ndef {name}():\n    return {value}\n\n\n"
        question = f"\n\n# {name} is defined above.\nassert {name}() == "
        budget = length - len(tok.encode(needle + question, add_special_tokens=False)) - 12
        start, hay, used = rng.randrange(len(self.lines)), [], 0
        for k in range(len(self.lines)):
            line, cost = self.lines[(start + k) % len(self.lines)]
            if used + cost > budget:
                break
            hay.append(line)
            used += cost
        at = round(rng.random() * len(hay))
        prompt = tok.encode("".join(hay[:at]) + needle + "".join(hay[at:]) + question, add_special_tokens=False)
        answer = tok.encode(str(value), add_special_tokens=False) + [tok.eos_token_id]
        return prompt + answer, [0] * len(prompt) + [1] * len(answer)


def build_tokenizer(out: Path, vocab: int):
    from transformers import AutoTokenizer

    from coderforge.tokens.tokenizer import save_hf, train_bpe

    save_hf(train_bpe([read(STDLIB / n) for n in TOKENIZER_FILES], vocab, 2), out, model_max_length=1 << 20)
    return AutoTokenizer.from_pretrained(out)


def train(args, tok, rows: NeedleRows, model_dir: Path, log) -> tuple[dict, object]:
    import torch
    import torch.nn.functional as F

    from coderforge.train.model import build_model, qwen2_config_dict, released_config

    torch.manual_seed(args.seed)
    explicit = {"num_hidden_layers": args.layers, "hidden_size": args.hidden, "num_attention_heads": args.heads,
                "num_key_value_heads": args.heads, "intermediate_size": args.hidden * 2, "tie_word_embeddings": True}
    conf = qwen2_config_dict("custom", len(tok), args.train_len, args.rope_theta, explicit=explicit)
    conf.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = build_model(conf)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    curve, t0, step, acc = [], time.time(), 0, 0.0
    model.train()
    for step in range(1, args.steps + 1):
        length = random.Random(args.seed * 1_000_003 + step).randrange(3 * args.train_len // 4, args.train_len + 1)
        batch = [rows.row(length) for _ in range(args.batch)]
        n = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), n), tok.pad_token_id)
        weight = torch.zeros(len(batch), n)
        for i, (r, ans) in enumerate(batch):
            ids[i, :len(r)] = torch.tensor(r)
            weight[i, :len(r)] = 1.0 + (args.answer_weight - 1.0) * torch.tensor(ans, dtype=torch.float)
        logits = model(input_ids=ids).logits[:, :-1]
        loss_tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        w = weight[:, 1:].reshape(-1)
        loss = (loss_tok * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            acc = quick_needle(model, tok, args)
            curve.append({"step": step, "loss": round(loss.item(), 4), "needle_acc_within": acc,
                          "seconds": round(time.time() - t0, 1)})
            log(f"step {step} loss {loss.item():.3f} within-length needle {acc:.2f} ({time.time() - t0:.0f} s)")
            model.train()
            if acc >= args.target and step >= args.min_steps:
                break
    model.eval()
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cpath = model_dir / "config.json"
    saved = json.loads(cpath.read_text())
    cpath.write_text(json.dumps(released_config(saved, args.train_len), indent=2))  # as the repo stage saves it
    return {"steps": step, "seconds": round(time.time() - t0, 1), "curve": curve, "final_within_acc": acc,
            "params": sum(p.numel() for p in model.parameters()), "config": explicit,
            "saved_config": {k: json.loads(cpath.read_text()).get(k) for k in
                             ("rope_parameters", "rope_scaling", "max_position_embeddings")}}, model


def quick_needle(model, tok, args) -> float:
    from coderforge.evals.needle import evaluate_needle
    from coderforge.generate import TransformersBackend

    model.eval()
    backend = TransformersBackend("", tokenizer=tok, model=model, batch_size=16)
    with tempfile.TemporaryDirectory() as d:
        m, _ = evaluate_needle(backend, [args.train_len // 2, args.train_len], [0.0, 0.5, 1.0], Path(d),
                               seed=10_000)
    return m["needle_accuracy"]


def needle_table(cfg, model_dir: Path, tok, lengths, depths, seeds, long_context, forced: bool) -> dict:
    """Found/n (95 % Wilson interval) per length over ``seeds`` x ``depths`` tasks, through the evaluate
    step's backend with ``long_context`` (one length per call: similar prompt lengths)."""
    from coderforge.evals.needle import evaluate_needle
    from coderforge.evals.serving import generation

    out = {}
    with generation(cfg, model_dir, "bench", tokenizer=tok, long_context=long_context) as gen, \
            tempfile.TemporaryDirectory() as d:
        for length in lengths:
            found = n = refused = 0
            for s in seeds:
                m, _ = evaluate_needle(gen.backend, [length], depths, Path(d), seed=s, tokenizer=tok,
                                       context_limit=None if forced else gen.context_limit)
                found += round(m["needle_accuracy"] * m["needle_n"])
                n += int(m["needle_n"])
                refused += int(m.get("needle_prompt_too_long", 0))
            out[str(length)] = {"accuracy": round(found / n, 4), "found": found, "n": n, "ci95": wilson(found, n),
                                "refused": refused}
    return out


def heldout_windows(tok, files: list[Path], window: int, count: int) -> list[list[int]]:
    ids: list[int] = []
    for p in files:
        ids += tok.encode(read(p), add_special_tokens=False) + [tok.eos_token_id]
        if len(ids) >= window * count:
            break
    return [ids[i * window:(i + 1) * window] for i in range(min(count, len(ids) // window))]


def position_loss(model, windows: list[list[int]], bands: list[tuple[int, int]]) -> dict:
    import torch
    import torch.nn.functional as F

    sums = {b: 0.0 for b in bands}
    counts = {b: 0 for b in bands}
    with torch.no_grad():
        for w in windows:
            x = torch.tensor([w])
            logits = model(input_ids=x).logits[0, :-1]
            loss = F.cross_entropy(logits, x[0, 1:], reduction="none")
            for lo, hi in bands:
                seg = loss[lo:hi - 1] if lo == 0 else loss[lo - 1:hi - 1]  # predicting tokens lo..hi-1
                sums[(lo, hi)] += seg.sum().item()
                counts[(lo, hi)] += seg.numel()
    return {f"{lo}-{hi}": round(sums[(lo, hi)] / max(1, counts[(lo, hi)]), 4) for lo, hi in bands}


def evaluate(args, model_dir: Path, tok, trained_model, log) -> dict:
    import torch

    from coderforge.config import LongContextSection, load_recipe
    from coderforge.evals.serving import load_model

    L = args.train_len
    cfg = load_recipe(ROOT.parent / "configs" / "tiny.yaml",
                      overrides=["eval.backend=transformers", "eval.batch_size=8"])

    def yarn(**betas) -> LongContextSection:  # what a recipe's eval.long_context sets
        return LongContextSection(enabled=True, yarn_factor=args.factor, **betas)

    off = LongContextSection()
    depths = [0.0, 0.25, 0.5, 0.75, 1.0]
    dev_seeds = list(range(args.dev_seeds))  # choose the betas on these haystacks ...
    test_seeds = list(range(1000, 1000 + args.eval_seeds))  # ... and report on these
    lengths = [L // 2, L, 2 * L, int(args.factor * L)]
    t0 = time.time()
    head_dim = args.hidden // args.heads
    shares = qwen_share_betas(head_dim, args.rope_theta, L)
    grid = {}
    for fast in args.grid_fast:
        for slow in args.grid_slow:
            if fast > slow:
                t = needle_table(cfg, model_dir, tok, lengths[2:], depths, dev_seeds,
                                 yarn(beta_fast=fast, beta_slow=slow), forced=False)
                grid[(fast, slow)] = {k: v["accuracy"] for k, v in t.items()}
    fast, slow = pick_betas(grid)
    log(f"beta grid on dev seeds ({time.time() - t0:.0f} s): chose beta_fast {fast}, beta_slow {slow}")
    variants = {"with_yarn": yarn(), "with_yarn_qwen_shares": yarn(beta_fast=shares["beta_fast"],
                                                                   beta_slow=shares["beta_slow"]),
                "with_yarn_chosen_betas": yarn(beta_fast=fast, beta_slow=slow)}
    ranges = {"yarn_defaults": correction_range(32, 1, head_dim, args.rope_theta, L),
              "yarn_qwen_shares": correction_range(shares["beta_fast"], shares["beta_slow"], head_dim,
                                                   args.rope_theta, L),
              "yarn_chosen_betas": correction_range(fast, slow, head_dim, args.rope_theta, L),
              "qwen2.5_coder_repo_model": correction_range(32, 1, 128, 1e6, 32768)}
    needle = {"lengths": lengths, "depths": depths, "seeds": test_seeds,
              "as_saved": needle_table(cfg, model_dir, tok, lengths, depths, test_seeds, off, forced=False),
              "without_yarn": needle_table(cfg, model_dir, tok, lengths, depths, test_seeds, off, forced=True),
              **{k: needle_table(cfg, model_dir, tok, lengths, depths, test_seeds, lc, forced=False)
                 for k, lc in variants.items()}}
    log(f"needle done ({time.time() - t0:.0f} s): {json.dumps(needle)}")
    _, held = stdlib_split()
    long_w = heldout_windows(tok, held, int(args.factor * L), args.ppl_windows)
    short_w = heldout_windows(tok, held, L, args.ppl_windows * 4)
    bands = [(0, L), (L, 2 * L), (2 * L, int(args.factor * L))]
    plain = load_model(model_dir, off)
    models = {k: load_model(model_dir, lc) for k, lc in variants.items()}
    ppl = {"windows": len(long_w), "window_tokens": int(args.factor * L),
           "without_yarn": position_loss(plain, long_w, bands),
           **{k: position_loss(m, long_w, bands) for k, m in models.items()}}
    short = {"windows": len(short_w), "window_tokens": L, "loss_off": position_loss(plain, short_w, [(0, L)])[f"0-{L}"],
             **{f"loss_{k}_always_on": position_loss(m, short_w, [(0, L)])[f"0-{L}"] for k, m in models.items()}}
    with torch.no_grad():  # off = the trained model exactly
        x = torch.tensor(short_w[:4])
        ref = trained_model(input_ids=x).logits
        short["max_abs_logit_diff_off_vs_trained"] = float((plain(input_ids=x).logits - ref).abs().max())
        for k, m in models.items():
            short[f"max_abs_logit_diff_{k}_vs_trained"] = float((m(input_ids=x).logits - ref).abs().max())
    short["needle_within_off"] = {k: needle["as_saved"][str(k)] for k in lengths[:2]}
    for k in variants:
        short[f"needle_within_{k}_always_on"] = {n: needle[k][str(n)] for n in lengths[:2]}
    log(f"loss done: {json.dumps(ppl)} {json.dumps(short)}")
    return {"needle": needle, "heldout_loss_by_position": ppl, "short_context": short,
            "beta_grid_dev": {"seeds": dev_seeds, "chosen": {"beta_fast": fast, "beta_slow": slow},
                              "accuracy": {f"{f}/{s_}": v for (f, s_), v in grid.items()}},
            "yarn_dimension_pairs": {"head_dim": head_dim, "kept_below_and_interpolated_above": {
                k: [round(a, 2), round(b, 2)] for k, (a, b) in ranges.items()}, "qwen_share_betas": shares,
                "rotations_over_trained_length": [round(r, 3) for r in rotations(head_dim, args.rope_theta, L)]},
            "eval_seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-len", type=int, default=128)
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--rope-theta", type=float, default=10_000.0)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--min-steps", type=int, default=4000)
    ap.add_argument("--target", type=float, default=0.95, help="stop once the within-length needle accuracy "
                                                               "reaches this (after --min-steps)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--answer-weight", type=float, default=10.0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-seeds", type=int, default=20, help="test haystacks (x 5 depths per length)")
    ap.add_argument("--dev-seeds", type=int, default=8, help="haystacks (x 5 depths) the betas are chosen on")
    ap.add_argument("--grid-fast", type=float, nargs="+", default=[2, 3, 4, 6, 8, 12])
    ap.add_argument("--grid-slow", type=float, nargs="+", default=[0.25, 0.5, 1])
    ap.add_argument("--ppl-windows", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="keep the model here (default: a temporary dir)")
    ap.add_argument("--reuse", action="store_true", help="with --work: evaluate the model trained there before")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "long_context.json")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    random.seed(args.seed)

    def log(msg: str) -> None:
        print(f"[long_context] {msg}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        tok = build_tokenizer(work / "tokenizer", args.vocab)
        train_files, held = stdlib_split()
        rows = NeedleRows(tok, train_files, args.seed)
        log(f"{len(rows.lines)} haystack lines from {len(train_files)} files; {len(held)} files held out")
        if args.reuse and (work / "training.json").exists():  # evaluate a model this script trained before
            from coderforge.evals.serving import load_model

            training, model = json.loads((work / "training.json").read_text()), load_model(work / "model")
            training["reused"] = True
        else:
            training, model = train(args, tok, rows, work / "model", log)
            (work / "training.json").write_text(json.dumps(training, indent=2))
        result = {"benchmark": "long_context", "args": {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in vars(args).items()},
                  "machine": {"python": platform.python_version(), "torch": torch.__version__,
                              "cpus": torch.get_num_threads()},
                  "training": training, **evaluate(args, work / "model", tok, model, log)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
