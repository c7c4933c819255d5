"""Unit tests for backend.domain.taxonomy: reading the label set from a Label Studio config."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from backend.domain.taxonomy import (
    Form,
    Label,
    Taxonomy,
    TaxonomyError,
    parse_form,
    parse_questions,
    parse_taxonomy,
)

LABEL_CONFIG = Path(__file__).resolve().parents[2] / "label_config.xml"
MAIN_LABELS = ("seeking_support", "health_claim", "personal_experience")

SENTIMENT = """
<View>
  <Text name="review" value="$review"/>
  <Choices name="sentiment" toName="review">
    <Choice value="negative"/>
    <Choice value="neutral"/>
    <Choice value="positive"/>
  </Choices>
</View>
"""


def _hints(xml: str) -> dict[str, str]:
    """The hint text of each Choice, read with a plain regex (independent of the SDK)."""
    return {
        value: hint.strip()
        for value, hint in re.findall(r'<Choice value="([^"]+)"\s+hint="([^"]*)"', xml)
    }


@pytest.fixture(scope="module")
def main_taxonomy() -> Taxonomy:
    return parse_taxonomy(LABEL_CONFIG.read_text())


# --- the project's label config ---------------------------------------------------


def test_main_config_labels_in_order(main_taxonomy):
    assert main_taxonomy.names == MAIN_LABELS
    assert all(isinstance(label, Label) for label in main_taxonomy.labels)


def test_main_config_rules_equal_hints(main_taxonomy):
    hints = _hints(LABEL_CONFIG.read_text())
    assert set(hints) == set(MAIN_LABELS)
    for label in main_taxonomy.labels:
        assert label.rule, f"{label.name} has an empty rule"
        assert label.rule == hints[label.name]
    assert main_taxonomy.labels[0].rule.startswith("Rule 1, checked first:")
    assert main_taxonomy.labels[1].rule.startswith("Rule 2:")
    assert main_taxonomy.labels[2].rule.startswith("Rule 3:")


def test_main_config_names_and_field(main_taxonomy):
    assert main_taxonomy.text_field == "text"
    assert main_taxonomy.from_name == "label"
    assert main_taxonomy.to_name == "text"


def test_main_config_header_becomes_instructions(main_taxonomy):
    assert main_taxonomy.instructions.startswith("Read the whole post, then check the rules")


# --- a different taxonomy ------------------------------------------------------------


def test_other_config_works_unchanged():
    taxonomy = parse_taxonomy(SENTIMENT)
    assert taxonomy.names == ("negative", "neutral", "positive")
    assert [label.rule for label in taxonomy.labels] == ["", "", ""]
    assert taxonomy.text_field == "review"
    assert taxonomy.from_name == "sentiment"
    assert taxonomy.to_name == "review"
    assert taxonomy.instructions == ""


def test_skips_multiple_choice_and_takes_first_single_choice():
    config = """
    <View>
      <Text name="body" value="$body"/>
      <Choices name="tags" toName="body" choice="multiple">
        <Choice value="x"/><Choice value="y"/>
      </Choices>
      <Choices name="topic" toName="body" choice="single">
        <Choice value="sport"/><Choice value="politics"/>
      </Choices>
    </View>
    """
    taxonomy = parse_taxonomy(config)
    assert taxonomy.from_name == "topic"
    assert taxonomy.names == ("sport", "politics")
    assert taxonomy.text_field == "body"


# Label Studio's "Multi-Label Text Classification" template, and a second question beside.
MULTI_LABEL = """
<View>
  <Text name="text" value="$text"/>
  <View style="box-shadow: 2px 2px 5px #999; padding: 20px; margin-top: 2em">
    <Header value="Choose text sentiment"/>
    <Choices name="sentiment" toName="text" choice="single" showInline="true" required="true">
      <Choice value="Positive"/>
      <Choice value="Negative"/>
      <Choice value="Neutral"/>
    </Choices>
    <Choices name="topics" toName="text" choice="multiple">
      <Choice value="Politics" alias="pol" hint="elections, parties, government"/>
      <Choice value="Sports"/>
      <Choice value="Business"/>
    </Choices>
  </View>
</View>
"""


def test_every_question_of_a_config_in_order_single_or_multiple():
    sentiment, topics = parse_questions(MULTI_LABEL)
    assert (sentiment.from_name, sentiment.multiple, sentiment.required) == (
        "sentiment",
        False,
        True,
    )
    assert sentiment.names == ("Positive", "Negative", "Neutral")
    assert (topics.from_name, topics.multiple, topics.required) == ("topics", True, False)
    assert topics.names == ("Politics", "Sports", "Business")
    assert topics.labels[0] == Label("Politics", "elections, parties, government", "pol")
    assert {q.text_field for q in (sentiment, topics)} == {"text"}
    assert sentiment.instructions == topics.instructions == "Choose text sentiment"
    # The single-question view the backend serves today: the first single choice.
    assert parse_taxonomy(MULTI_LABEL) == sentiment
    assert parse_questions(LABEL_CONFIG.read_text()) == (parse_taxonomy(LABEL_CONFIG.read_text()),)


def test_a_form_of_several_questions_is_asked_in_one_request():
    """Every question of a multi-question config carries the whole form (the LLM answers
    them in one request); a one-question single-choice config carries none, so it keeps
    its one-question prompt and cache keys."""
    form = parse_form(MULTI_LABEL)
    sentiment, topics = form.questions
    assert sentiment.form == topics.form and [q.from_name for q in sentiment.form] == [
        "sentiment",
        "topics",
    ]
    assert form.primary == sentiment and form.others == (topics,)
    assert Form.of(sentiment) == form  # a run that holds the primary finds the rest
    only = parse_form(LABEL_CONFIG.read_text())
    assert only.questions[0].form == () and only.others == () and Form.of(only.primary) == only
    multi_label = parse_form(MULTI_LABEL.replace('choice="single"', 'choice="multiple"'))
    assert multi_label.primary is None and len(multi_label.others) == 2
    (alone,) = parse_form(
        '<View><Text name="text" value="$text"/><Choices name="tags" toName="text" '
        'choice="multiple"><Choice value="a"/><Choice value="b"/></Choices></View>'
    ).questions
    assert alone.form == (replace(alone, form=()),)  # asked as a form: it answers a list


def test_a_multiple_choice_answer_round_trips_through_aliases():
    topics = parse_questions(MULTI_LABEL)[1]
    (region,) = topics.result_of_set(["Sports", "Politics"])
    # In the config's order, by the stored value (the alias where there is one).
    assert region["value"] == {"choices": ["pol", "Sports"]} and region["from_name"] == "topics"
    assert topics.labels_of([region]) == frozenset({"Politics", "Sports"})
    assert topics.labels_of(topics.result_of_set([])) == frozenset()  # "none of them"
    # Another question's region, an unknown choice, or no region: no answer.
    assert topics.labels_of(parse_questions(MULTI_LABEL)[0].result("Positive")) is None
    unknown = [{**region, "value": {"choices": ["pol", "Weather"]}}]
    assert topics.labels_of(unknown) is None and topics.labels_of([]) is None
    with pytest.raises(ValueError, match="Weather"):
        topics.result_of_set(["Weather"])


# --- unusable configs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ('<View><Text name="t" value="$text"><Choices', "cannot be parsed"),
        (
            '<View><Labels name="ner" toName="text"><Label value="PER"/><Label value="ORG"/>'
            '</Labels><Text name="text" value="$text"/></View>',
            "single-choice",
        ),
        (
            '<View><Text name="text" value="$text"/><Choices name="c" toName="text" '
            'choice="multiple"><Choice value="a"/><Choice value="b"/></Choices></View>',
            "single-choice .*multiple-choice questions \\(<Choices name='c'>\\) are not",
        ),
        (
            '<View><Image name="img" value="$image"/><Choices name="c" toName="img">'
            '<Choice value="a"/><Choice value="b"/></Choices></View>',
            "<Choices name='c'> must label a <Text> object",
        ),
        (
            '<View><Text name="text" value="$text"/><Choices name="c" toName="text" '
            'perRegion="true"><Choice value="a"/><Choice value="b"/></Choices></View>',
            "per region",
        ),
        (
            '<View><Text name="text" value="$text"/><Choices name="c" toName="text" '
            'value="$options"/></View>',
            "from the task data",
        ),
        (
            '<View><Text name="text" value="$text"/><Choices name="c" toName="text">'
            '<Choice value="only"/></Choices></View>',
            "at least two choices",
        ),
    ],
    ids=[
        "empty",
        "blank",
        "malformed",
        "ner-only",
        "multiple",
        "image",
        "per-region",
        "dynamic",
        "one-choice",
    ],
)
def test_unusable_configs_raise_taxonomy_error(config, message):
    with pytest.raises(TaxonomyError, match=message):
        parse_taxonomy(config)


def test_taxonomy_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_taxonomy("")


# --- result() and label_of() -----------------------------------------------------------


def test_result_shape(main_taxonomy):
    assert main_taxonomy.result("health_claim") == [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["health_claim"]},
        }
    ]


def test_result_unknown_label_raises(main_taxonomy):
    with pytest.raises(ValueError, match="banana"):
        main_taxonomy.result("banana")
    with pytest.raises(ValueError):
        main_taxonomy.result("Health_Claim")


def test_label_of_round_trip(main_taxonomy):
    for name in MAIN_LABELS:
        assert main_taxonomy.label_of(main_taxonomy.result(name)) == name


def test_label_of_ignores_other_controls(main_taxonomy):
    result = [
        {
            "from_name": "other",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["health_claim"]},
        },
    ]
    assert main_taxonomy.label_of(result) is None
    result.append(
        {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["personal_experience"]},
        }
    )
    assert main_taxonomy.label_of(result) == "personal_experience"


def test_label_of_rejects_multiple_and_unknown(main_taxonomy):
    def region(choices):
        return {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": choices},
        }

    assert main_taxonomy.label_of([region(["health_claim", "seeking_support"])]) is None
    assert main_taxonomy.label_of([region(["banana"])]) is None
    assert main_taxonomy.label_of([region([])]) is None
    assert main_taxonomy.label_of([{"from_name": "label", "value": None}]) is None
    assert main_taxonomy.label_of([]) is None
    assert main_taxonomy.label_of(None) is None
    # A later valid region of the same control still counts.
    assert main_taxonomy.label_of([region(["banana"]), region(["seeking_support"])]) == (
        "seeking_support"
    )


ALIASED = """
<View>
  <Text name="post" value="$text"/>
  <Choices name="label" toName="post">
    <Choice value="Seeking support" alias="seeking_support" hint="asks for help"/>
    <Choice value="Health claim" alias="hc"/>
    <Choice value="personal_experience"/>
  </Choices>
</View>
"""


def test_alias_is_what_results_carry_and_annotations_count():
    taxonomy = parse_taxonomy(ALIASED)
    assert taxonomy.names == ("Seeking support", "Health claim", "personal_experience")
    # Label Studio stores the alias in annotations: they map back to the label, so they
    # count for training instead of silently dropping out.
    stored = [
        {"from_name": "label", "to_name": "post", "type": "choices", "value": {"choices": ["hc"]}}
    ]
    assert taxonomy.label_of(stored) == "Health claim"
    # Predictions carry the alias too, so Label Studio preselects the right choice.
    assert taxonomy.result("Seeking support")[0]["value"]["choices"] == ["seeking_support"]
    assert taxonomy.result("personal_experience")[0]["value"]["choices"] == ["personal_experience"]
    assert taxonomy.label_of(taxonomy.result("Health claim")) == "Health claim"
    assert taxonomy.labels[0].rule == "asks for help"


@pytest.mark.parametrize(
    "config",
    [
        ["<View/>"],
        {"xml": "<View/>"},
        42,
        None,
        "<View>" + " " * 300_000 + "</View>",
        '<View><Text name="t" value="$t"/><Choices name="c" toName="missing">'
        '<Choice value="a"/><Choice value="b"/></Choices></View>',
    ],
)
def test_hostile_configs_raise_taxonomy_error(config):
    with pytest.raises(TaxonomyError):
        parse_taxonomy(config)
