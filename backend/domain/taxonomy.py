"""The label taxonomy, read from a Label Studio label config.

The label config is the one source of truth: annotators read each Choice's `hint` as its
decision rule, and the LLM prompt is built from the same text. Nothing here knows the
names of any particular labels.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface


class TaxonomyError(ValueError):
    """The label config has no usable single-choice classification over a text."""


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
    from_name: str  # the Choices control
    to_name: str  # the Text object it labels
    text_field: str  # the task data key holding the text ("text" for value="$text")
    labels: tuple[Label, ...]
    instructions: str  # Header text shown above the post, if any

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


def _headers(config: str) -> str:
    try:
        root = ET.fromstring(config)
    except ET.ParseError:
        return ""
    return " ".join(h.get("value", "").strip() for h in root.iter("Header") if h.get("value"))


MAX_CONFIG_CHARS = 256 * 1024  # real configs are a few kB; a huge one costs seconds and GBs


def parse_taxonomy(config: object) -> Taxonomy:
    """Find the first single-choice Choices over a Text object in `config`."""
    if not isinstance(config, str):
        raise TaxonomyError(f"the label config must be an XML string, not {type(config).__name__}")
    if not config.strip():
        raise TaxonomyError("the label config is empty")
    if len(config) > MAX_CONFIG_CHARS:
        raise TaxonomyError(
            f"the label config has {len(config)} characters; at most "
            f"{MAX_CONFIG_CHARS} are accepted"
        )
    return _parse(config)


@functools.lru_cache(maxsize=64)
def _parse(config: str) -> Taxonomy:
    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises several types for bad XML
        raise TaxonomyError(f"the label config cannot be parsed: {exc}") from None
    for control in interface.controls:
        if control.tag != "Choices" or control.is_multiple_choice:
            continue
        for to_name in control.to_name or []:
            try:
                obj = interface.get_object(to_name)
            except Exception:  # the SDK raises when toName names no object
                obj = None
            value = (obj.value or "") if obj is not None else ""
            if obj is None or obj.tag != "Text" or not value.startswith("$"):
                continue
            labels = tuple(
                # The SDK keys choices by alias when there is one: the name is the
                # value annotators read (and the prompt shows), the alias what results
                # store.
                Label(
                    name=(tag.attr or {}).get("value") or key,
                    rule=(tag.attr or {}).get("hint", "").strip(),
                    alias=((tag.attr or {}).get("alias") or "").strip(),
                )
                for key, tag in control.labels_attrs.items()
            )
            if len(labels) < 2:
                raise TaxonomyError(f"Choices {control.name!r} needs at least two choices")
            return Taxonomy(
                from_name=control.name,
                to_name=to_name,
                text_field=value[1:],
                labels=labels,
                instructions=_headers(config),
            )
    raise TaxonomyError(
        "the label config needs a single-choice <Choices> whose toName is a <Text> "
        'object with value="$field"'
    )
