"""The label taxonomy, read from a Label Studio label config.

The label config is the one source of truth: annotators read each Choice's `hint` as its
decision rule, and the LLM prompt is built from the same text. Nothing here knows the
names of any particular labels.
"""

from __future__ import annotations

import functools
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from label_studio_sdk.label_interface import LabelInterface


class TaxonomyError(ValueError):
    """The label config has no usable classification over a text, or a <Choices> that is
    not one (the message names it)."""


@dataclass(frozen=True)
class Label:
    name: str
    rule: str  # the decision rule annotators read; "" when the config gives none
    alias: str = ""  # Choice alias: what Label Studio stores in results instead of name

    @property
    def stored(self) -> str:
        return self.alias or self.name


@dataclass(frozen=True)
class Taxonomy:
    """One question about a post: a <Choices> over a <Text>."""

    from_name: str  # the Choices control
    to_name: str  # the Text object it labels
    text_field: str  # the task data key holding the text ("text" for value="$text")
    labels: tuple[Label, ...]
    instructions: str  # Header text shown above the post, if any
    multiple: bool = False  # choice="multiple": any number of labels, none included
    required: bool = False  # Label Studio makes annotators answer it
    # Every question of the config, where it asks several or a multiple-choice one: the
    # LLM answers them all in one request (backend.llm.questions). () for a config whose
    # only question is single-choice (asked with the one-question prompt).
    form: tuple[Taxonomy, ...] = field(default=(), repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    def result(self, label: str) -> list[dict]:
        """A Label Studio prediction result choosing `label`."""
        if label not in self.names:
            raise ValueError(f"{label!r} is not one of {self.names}")
        return [
            {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "choices",
                "value": {"choices": [self._stored[label]]},
            }
        ]

    @functools.cached_property
    def _stored(self) -> dict[str, str]:
        return {label.name: label.stored for label in self.labels}

    @functools.cached_property
    def _by_stored(self) -> dict[str, str]:
        # Results carry the alias where the config gives one; a name is accepted too.
        return {
            **{label.name: label.name for label in self.labels},
            **{label.stored: label.name for label in self.labels},
        }

    def result_of_set(self, labels: Sequence[str]) -> list[dict]:
        """A Label Studio result choosing every label in `labels` (a multiple-choice
        answer; in the config's order; an empty set is an answer too)."""
        unknown = [label for label in labels if label not in self.names]
        if unknown:
            raise ValueError(f"{unknown} are not among {self.names}")
        chosen = [self._stored[name] for name in self.names if name in set(labels)]
        return [
            {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "choices",
                "value": {"choices": chosen},
            }
        ]

    def labels_of(self, result: list[dict]) -> frozenset[str] | None:
        """The labels chosen for this question in an annotation or prediction result;
        None when the result does not answer it (or names a label the config lacks)."""
        for region in result if isinstance(result, list) else []:
            if not isinstance(region, dict) or region.get("from_name") != self.from_name:
                continue
            value = region.get("value")
            choices = value.get("choices") if isinstance(value, dict) else None
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                continue
            names = [self._by_stored.get(choice) for choice in choices]
            if all(name is not None for name in names):
                return frozenset(name for name in names if name is not None)
        return None

    def label_of(self, result: list[dict]) -> str | None:
        """The single label chosen in an annotation or prediction result, if any."""
        for region in result if isinstance(result, list) else []:
            if not isinstance(region, dict) or region.get("from_name") != self.from_name:
                continue
            value = region.get("value") if isinstance(region, dict) else None
            choices = value.get("choices") if isinstance(value, dict) else None
            if isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], str):
                name = self._by_stored.get(choices[0])
                if name is not None:
                    return name
        return None


def answer_key(answer: str | frozenset[str] | None) -> str | None:
    """An answer as one string, equal exactly where the answers are (a set's labels in
    sorted order), so that a multiple-choice question's sets are judged right or wrong as
    a single-choice question's labels are: the whole set right, or wrong."""
    if answer is None or isinstance(answer, str):
        return answer
    return json.dumps(sorted(answer))


def set_of_key(key: str) -> frozenset[str]:
    """The set an answer_key string stands for."""
    return frozenset(json.loads(key))


def _headers(config: str) -> str:
    try:
        root = ET.fromstring(config)
    except ET.ParseError:
        return ""
    return " ".join(h.get("value", "").strip() for h in root.iter("Header") if h.get("value"))


MAX_CONFIG_CHARS = 256 * 1024  # real configs are a few kB; a huge one costs seconds and GBs


def parse_questions(config: object) -> tuple[Taxonomy, ...]:
    """Every question of `config`: each <Choices> over a <Text> object, in config order,
    single or multiple choice. Raises TaxonomyError naming a <Choices> that is not a text
    classification (per-region choices, choices over another object, choices taken from
    the task's data) rather than leaving it unanswered without a word."""
    _check_size(config)
    assert isinstance(config, str)
    return _parse(config)


@dataclass(frozen=True)
class Form:
    """Every question a label config asks about one post, in config order. The primary
    one (the first single-choice question) is the one a model is trained for; the LLM
    pre-labels them all."""

    questions: tuple[Taxonomy, ...]

    @classmethod
    def of(cls, question: Taxonomy) -> Form:
        """The form `question` was parsed from."""
        if not question.form:
            return cls((question,))
        return cls(tuple(replace(q, form=question.form) for q in question.form))

    @property
    def primary(self) -> Taxonomy | None:
        return next((q for q in self.questions if not q.multiple), None)

    @property
    def others(self) -> tuple[Taxonomy, ...]:
        primary = self.primary
        return tuple(
            q for q in self.questions if primary is None or q.from_name != primary.from_name
        )

    @property
    def text_field(self) -> str:
        return self.questions[0].text_field


def parse_form(config: object) -> Form:
    """The config's questions; raises TaxonomyError when there is none."""
    questions = parse_questions(config)
    if not questions:
        raise TaxonomyError(
            'the label config needs a <Choices> whose toName is a <Text> object with value="$field"'
        )
    return Form(questions)


def parse_taxonomy(config: object) -> Taxonomy:
    """The config's first single-choice question (the one the backend pre-labels, trains
    and evaluates)."""
    questions = parse_questions(config)
    for question in questions:
        if not question.multiple:
            return question
    multiple = ", ".join(f"<Choices name={q.from_name!r}>" for q in questions)
    raise TaxonomyError(
        "the label config needs a single-choice <Choices> whose toName is a <Text> "
        'object with value="$field"'
        + (f"; multiple-choice questions ({multiple}) are not trained on yet" if multiple else "")
    )


def _check_size(config: object) -> None:
    if not isinstance(config, str):
        raise TaxonomyError(f"the label config must be an XML string, not {type(config).__name__}")
    if not config.strip():
        raise TaxonomyError("the label config is empty")
    if len(config) > MAX_CONFIG_CHARS:
        raise TaxonomyError(
            f"the label config has {len(config)} characters; at most "
            f"{MAX_CONFIG_CHARS} are accepted"
        )


def _true(attrs: dict, name: str) -> bool:
    return str(attrs.get(name, "")).strip().lower() == "true"


@functools.lru_cache(maxsize=64)
def _parse(config: str) -> tuple[Taxonomy, ...]:
    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises several types for bad XML
        raise TaxonomyError(f"the label config cannot be parsed: {exc}") from None
    questions = []
    for control in interface.controls:
        if control.tag != "Choices":
            continue
        questions.append(_question(interface, control, _headers(config)))
    fields = sorted({q.text_field for q in questions})
    if len(fields) > 1:
        # One request answers every question about one post.
        raise TaxonomyError(
            f"the label config's questions are about different task fields ({fields}); "
            f"all of its <Choices> must label the same text"
        )
    if len(questions) > 1 or any(q.multiple for q in questions):
        form = tuple(questions)
        return tuple(replace(q, form=form) for q in form)
    return tuple(questions)


def _question(interface: LabelInterface, control, instructions: str) -> Taxonomy:
    attrs = control.attr or {}
    where = f"<Choices name={control.name!r}>"
    if _true(attrs, "perRegion"):
        raise TaxonomyError(
            f"{where} is per region (perRegion): it labels spans, not whole posts; "
            f"only whole-text classification is supported"
        )
    if str(attrs.get("value", "")).startswith("$"):
        raise TaxonomyError(
            f"{where} takes its choices from the task data (value=...): the labels must "
            f"be listed in the config"
        )
    to_names = control.to_name or []
    if len(to_names) != 1:
        raise TaxonomyError(f"{where} must label exactly one object (toName), not {to_names}")
    try:
        obj = interface.get_object(to_names[0])
    except Exception:  # the SDK raises when toName names no object
        obj = None
    value = (obj.value or "") if obj is not None else ""
    if obj is None or obj.tag != "Text" or not value.startswith("$"):
        raise TaxonomyError(
            f"{where} must label a <Text> object whose value is a task field "
            f'(value="$field"); toName={to_names[0]!r} is not one'
        )
    labels = tuple(
        # The SDK keys choices by alias when there is one: the name is the value
        # annotators read (and the prompt shows), the alias what results store.
        Label(
            name=(tag.attr or {}).get("value") or key,
            rule=(tag.attr or {}).get("hint", "").strip(),
            alias=((tag.attr or {}).get("alias") or "").strip(),
        )
        for key, tag in control.labels_attrs.items()
    )
    if len(labels) < 2:
        raise TaxonomyError(f"{where} needs at least two choices")
    return Taxonomy(
        from_name=control.name,
        to_name=to_names[0],
        text_field=value[1:],
        labels=labels,
        instructions=instructions,
        multiple=bool(control.is_multiple_choice),
        required=_true(attrs, "required"),
    )
