"""Fine-tune a sequence classifier (DistilBERT by default) on labeled texts.

A plain PyTorch loop rather than transformers' Trainer: dynamic padding with
length-grouped batches (short posts do not pay for long ones), class weights for
imbalanced labels, a stable validation split with early stopping on macro-F1, a fixed
seed, and bf16/fp16 autocast on CUDA.

A multiple-choice question (`multiple`) gets one sigmoid a label instead of the softmax:
a binary cross-entropy weighted by each label's negatives over positives, early stopping
on its macro-F1 at 0.5, and thresholds chosen on the validation posts by
backend.model.thresholds (saved beside the weights, THRESHOLDS_FILE).

Small sets need optimizer steps, not epochs: 50 posts at batch 16 are 4 steps an epoch,
and a few epochs of those leave the head untrained. So the run lasts `epochs` epochs or
`min_steps` steps, whichever is more; it is judged on validation about ten times over
the run (each `eval_every` epochs) and stops after `patience` judgements without a better
macro-F1, keeping the best.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from backend.domain.roles import JUDGE_SHARE, VALIDATION_SHARE, split_roles
from backend.domain.taxonomy import answer_key
from backend.model import runtime, thresholds
from backend.model.runtime import autocast_dtype

THRESHOLDS_FILE = "thresholds.json"  # a multiple-choice fine-tune's per-label thresholds


@dataclass(frozen=True)
class TrainConfig:
    base_model: str
    epochs: int = 4
    min_steps: int = 150  # the step budget: a small set runs more epochs to reach it
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 256
    seed: int = 42
    validation_share: float = VALIDATION_SHARE  # picks the epoch (early stopping)
    judge_share: float = JUDGE_SHARE  # never trained on, never picks the epoch: judges promotion
    patience: int = 3  # validation judgements without a better macro-F1 before stopping
    evaluations: int = 10  # about how many validation judgements a run makes


@dataclass
class TrainResult:
    metrics: dict
    validation_texts: list[str]
    validation_labels: list[str]
    validation_predictions: list[str]
    # The judge posts: held apart from training and from early stopping.
    judge_texts: list[str] = field(default_factory=list)
    judge_labels: list[str] = field(default_factory=list)
    judge_predictions: list[str] = field(default_factory=list)
    trained_on: list[str] = field(default_factory=list)  # the keys (task ids) it learned from


Progress = Callable[[dict], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_validation(keys: list[str], *, share: float) -> tuple[list[int], list[int]]:
    """Indexes (train, validation) by a hash of each example's key (its task id): a post
    stays on the same side in every run, so a later run can score the serving version on
    validation posts it never trained on."""
    train, val, _ = split_roles(keys, validation_share=share, judge_share=0.0)
    return train, val


def length_grouped_batches(
    lengths: list[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Batches of similar length, in random order: shuffle, sort within large chunks,
    cut into batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 32
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def pad_batch(ids: list[list[int]], pad_id: int, device: torch.device) -> dict:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return {
        "input_ids": input_ids.to(device, non_blocking=True),
        "attention_mask": mask.to(device, non_blocking=True),
    }


def predict_logits(
    model, encoded: list[list[int]], pad_id: int, device: torch.device, batch_size: int
) -> np.ndarray:
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out = np.zeros((len(encoded), model.config.num_labels), dtype=np.float32)
    dtype = autocast_dtype(device)
    model.eval()
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
    ):
        for start in range(0, len(order), batch_size * 2):
            batch = order[start : start + batch_size * 2]
            logits = model(**pad_batch([encoded[i] for i in batch], pad_id, device)).logits
            out[batch] = logits.float().cpu().numpy()
    return out


def predict_ids(
    model, encoded: list[list[int]], pad_id: int, device: torch.device, batch_size: int
) -> np.ndarray:
    return predict_logits(model, encoded, pad_id, device, batch_size).argmax(-1)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(logits / 2))  # without exp's overflow


def fine_tune(
    texts: list[str],
    labels: Sequence[str] | Sequence[frozenset[str]],
    *,
    label_names: list[str],
    config: TrainConfig,
    out_dir: Path,
    keys: list[str] | None = None,
    progress: Progress | None = None,
    multiple: bool = False,
) -> TrainResult:
    """Train on (texts, labels), save the best epoch's model and tokenizer to out_dir.
    `keys` (task ids) decide the validation split; the texts do when none are given.
    `multiple`: each label is a set (a multiple-choice question); the result's labels and
    predictions are then answer_key strings of sets."""
    started = time.monotonic()
    report = progress or (lambda _event: None)
    seed_everything(config.seed)
    device = runtime.device()
    label_id = {name: i for i, name in enumerate(label_names)}
    if multiple:
        hot = np.zeros((len(labels), len(label_names)), dtype=np.float32)
        for i, chosen in enumerate(labels):
            hot[i, [label_id[name] for name in chosen]] = 1.0
        y: list = list(hot)
    else:
        y = [label_id[label] for label in labels]  # type: ignore[index]

    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    model = AutoModelForSequenceClassification.from_pretrained(
        config.base_model,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id=label_id,
        problem_type="multi_label_classification" if multiple else "single_label_classification",
        ignore_mismatched_sizes=True,
    ).to(device)
    pad_id = tokenizer.pad_token_id or 0
    encoded = tokenizer(
        runtime.clip(texts, config.max_length), truncation=True, max_length=config.max_length
    )["input_ids"]

    train_idx, val_idx, judge_idx = split_roles(
        keys or texts, validation_share=config.validation_share, judge_share=config.judge_share
    )
    loss_fn: torch.nn.Module
    if multiple:
        # Each label's negatives over its positives: a rare yes costs as much as the noes.
        positives = np.sum([y[i] for i in train_idx], axis=0) if train_idx else 0
        negatives = len(train_idx) - positives
        pos_weight = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
        loss_fn = torch.nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(pos_weight, dtype=torch.float32, device=device)
        )
    else:
        counts = Counter(y[i] for i in train_idx)
        # Inverse-frequency class weights: a rare label costs as much as a common one.
        weights = torch.tensor(
            [
                len(train_idx) / (len(label_names) * counts[c]) if counts[c] else 0.0
                for c in range(len(label_names))
            ],
            device=device,
        )
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    # The fused kernel: one pass over all parameters instead of a loop per tensor.
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=0.01, fused=True
    )
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    eval_every = max(1, math.ceil(epochs / config.evaluations))
    total_steps = steps_per_epoch * epochs
    warmup = max(1, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))),
    )
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    rng = random.Random(config.seed)
    lengths = [len(encoded[i]) for i in train_idx]

    best_score, best_epoch, best_judgement = -1.0, 0, 0
    best_state: dict | None = None
    history = []
    samples = steps = judgements = 0
    train_seconds = 0.0
    losses: list[torch.Tensor] = []
    for epoch in range(1, epochs + 1):
        model.train()
        epoch_start = time.monotonic()
        for batch in length_grouped_batches(lengths, config.batch_size, rng):
            rows = [train_idx[i] for i in batch]
            inputs = pad_batch([encoded[i] for i in rows], pad_id, device)
            target = torch.tensor(np.array([y[i] for i in rows]), device=device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(**inputs).logits
            loss = loss_fn(logits.float(), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.detach())
            samples += len(rows)
            steps += 1
        train_seconds += time.monotonic() - epoch_start
        if epoch % eval_every and epoch != epochs:
            continue
        mean_loss = float(torch.stack(losses).mean()) if losses else 0.0
        losses = []
        judgements += 1
        entry: dict[str, float] = {"epoch": epoch, "step": steps, "loss": round(mean_loss, 4)}
        if val_idx:
            logits = predict_logits(
                model, [encoded[i] for i in val_idx], pad_id, device, config.batch_size
            )
            truth = np.array([y[i] for i in val_idx]).astype(int)
            # Sets at 0.5 (scored by subset accuracy), or the likeliest label.
            predicted = (sigmoid(logits) >= 0.5).astype(int) if multiple else logits.argmax(-1)
            entry["val_accuracy"] = round(float(accuracy_score(truth, predicted)), 4)
            entry["val_macro_f1"] = round(
                float(
                    f1_score(
                        truth,
                        predicted,
                        average="macro",
                        labels=None if multiple else list(range(len(label_names))),
                        zero_division=0,
                    )
                ),
                4,
            )
        history.append(entry)
        report({"phase": "epoch", **entry, "epochs": epochs, "steps": total_steps})
        score = entry.get("val_macro_f1", -mean_loss)
        if score > best_score:
            best_score, best_epoch, best_judgement = score, epoch, judgements
            best_state = copy.deepcopy(model.state_dict()) if val_idx else None
        elif judgements - best_judgement >= config.patience:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    chosen = np.full(len(label_names), thresholds.DEFAULT_THRESHOLD)
    if multiple:
        if val_idx:
            trained = np.array([y[i] for i in train_idx])
            proba = sigmoid(
                predict_logits(
                    model, [encoded[i] for i in val_idx], pad_id, device, config.batch_size
                )
            )
            chosen, _ = thresholds.choose(
                proba,
                np.array([y[i] for i in val_idx]) > 0.5,
                learnable=[len(np.unique(trained[:, k])) == 2 for k in range(len(label_names))],
            )
        (out_dir / THRESHOLDS_FILE).write_text(json.dumps([float(t) for t in chosen]))

    def answer(label: str | Iterable[str]) -> str:
        """A label, or a set's answer_key (a multiple-choice question)."""
        return label if isinstance(label, str) else answer_key(frozenset(label)) or ""

    def predicted_labels(rows: list[int]) -> list[str]:
        if not rows:
            return []
        logits = predict_logits(
            model, [encoded[i] for i in rows], pad_id, device, config.batch_size
        )
        if multiple:
            yes = sigmoid(logits) >= chosen
            return [
                answer([n for n, on in zip(label_names, row, strict=True) if on]) for row in yes
            ]
        return [label_names[i] for i in logits.argmax(-1)]

    best_entry = next((h for h in history if h["epoch"] == best_epoch), history[-1])
    metrics = {
        "kind": "fine-tune",
        "n_train": len(train_idx),
        "n_validation": len(val_idx),
        "n_judge": len(judge_idx),
        "epochs_run": history[-1]["epoch"],
        "steps_run": steps,
        "step_budget": total_steps,
        "best_epoch": best_epoch,
        "val_accuracy": best_entry.get("val_accuracy"),
        "val_macro_f1": best_entry.get("val_macro_f1"),
        "history": history,
        "train_seconds": round(train_seconds, 3),
        "total_seconds": round(time.monotonic() - started, 3),
        "samples_per_second": round(samples / train_seconds, 2) if train_seconds else None,
        "device": str(device),
        "autocast": str(dtype).replace("torch.", "") if dtype else None,
    }
    if multiple:
        metrics["thresholds"] = dict(zip(label_names, chosen.tolist(), strict=True))
    return TrainResult(
        metrics,
        [texts[i] for i in val_idx],
        [answer(labels[i]) for i in val_idx],
        predicted_labels(val_idx),
        [texts[i] for i in judge_idx],
        [answer(labels[i]) for i in judge_idx],
        predicted_labels(judge_idx),
        trained_on=[(keys or texts)[i] for i in train_idx],
    )
