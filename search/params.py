"""Parameters every strategy accepts, and how every strategy's parameters are checked.

A parameter's range or choices are declared with its default (`bounded`, `one_of`), so the
checks and the server's published schema come from one place. Errors name the field as the
client wrote it ("search.n"), so the server can answer 400 with `param` set.
"""

from __future__ import annotations

import json
from dataclasses import Field, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from search.types import InvalidSearchParam, shown

# Each strategy's greedy margin as bench/fit_margins.py fitted it on the tune half, with how.
MARGINS_FILE = Path(__file__).with_name("greedy_margins.json")

ANSWER_FORMATS = ("auto", "number", "boxed", "choice", "text")

def bounded(default, low, high, low_inclusive: bool = True, doc: str = ""):
    """A numeric parameter: its default and its range (and what it means, for the schema)."""
    return field(default=default, metadata={"range": (low, high, low_inclusive), "doc": doc})


def documented(default, doc: str):
    """A parameter with no range or choices, with what it means for the schema."""
    return field(default=default, metadata={"doc": doc})


def one_of(default: str, choices: tuple[str, ...]):
    """A parameter that takes one of a few names."""
    return field(default=default, metadata={"choices": tuple(choices)})


def rules(params_class: type, name: str) -> dict:
    """A field's declared range or choices, also when a subclass only changed its default."""
    for cls in params_class.__mro__:
        declared = getattr(cls, "__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata:
            return dict(declared.metadata)
    return {}


def check_field(params_class: type, declared: Field, value, name: str | None = None) -> None:
    """Checks `value` against the field's declared rules; errors name it `search.<name>` (the
    field's own name unless `name` gives its path, e.g. "prune.window")."""
    kind = str(declared.type)
    name = name or declared.name
    if value is None and "None" in kind:
        return
    if kind.startswith("bool"):
        return check_bool(name, value)
    declared_rules = rules(params_class, declared.name)
    if "range" in declared_rules:
        low, high, low_inclusive = declared_rules["range"]
        if kind.startswith("int"):
            return check_int(name, value, low, high)
        return check_number(name, value, low, high, low_inclusive)
    if "choices" in declared_rules:
        return check_choice(name, value, declared_rules["choices"])


def check_fields(params, path: str = "") -> None:
    """Every declared field of a params dataclass against its type and declared rules; errors
    name a field `search.<path><name>` (a path such as "prune." for settings inside a parameter)."""
    for declared in fields(params):
        check_field(type(params), declared, getattr(params, declared.name), path + declared.name)


def check_int(name: str, value, low: int, high: int) -> None:
    # bool is an int subclass; `"n": true` is a client mistake, not n=1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSearchParam(f"search.{name}", f"must be an integer, got {shown(value)}")
    if not low <= value <= high:
        raise InvalidSearchParam(f"search.{name}", f"must be between {low} and {high}, got {value}")


def check_number(name: str, value, low: float, high: float, low_inclusive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSearchParam(f"search.{name}", f"must be a number, got {shown(value)}")
    above_low = value >= low if low_inclusive else value > low
    if not (above_low and value <= high):
        bracket = "[" if low_inclusive else "("
        raise InvalidSearchParam(f"search.{name}", f"must be in {bracket}{low}, {high}], got {value}")


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise InvalidSearchParam(f"search.{name}", f"must be true or false, got {shown(value)}")


def check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidSearchParam(f"search.{name}", f"must be one of {', '.join(choices)}, got {shown(value)}")


@dataclass
class CommonParams:
    """What every strategy accepts. `scorer` is a name; the server resolves it to a Scorer."""

    n: int = bounded(8, 1, 64)
    # Tuned on the dev set with the embedded 135M model (bench/selection_sweep.py): its votes
    # gain at 0.3 and lose at 0.5-0.7, where a single sample is right half as often as greedy.
    # Larger models are usually sampled at 0.6-0.7 (the papers' settings); ask per request.
    temperature: float = bounded(0.3, 0.0, 2.0)
    top_p: float = bounded(1.0, 0.0, 1.0, low_inclusive=False)
    # A scorer's name, or a verifier to ask over HTTP: {"url": ..., "timeout_s": ...} (the server
    # checks the object, and which hosts it may call).
    scorer: str | dict | None = None
    answer_format: str = one_of("auto", ANSWER_FORMATS)
    # AlphaLLM's "first child is greedy": candidate 0 is the greedy answer, so ties (first-seen
    # wins) fall to it; a small model's samples are much worse than its greedy answer.
    include_greedy: bool = True
    # The final rule (search.voting.anchor_to_greedy): the answer moves away from greedy's only
    # when the search's choice has more support than greedy's by more than this.
    greedy_margin: float | None = bounded(
        None, 0.0, 1e6, doc="How much more support (vote share, score or value) than greedy's answer the "
                            "search's choice needs to answer instead of greedy; null: the margin fitted for "
                            "the strategy and scorer (search/greedy_margins.json), 0 where none was fitted.")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.scorer is not None and not (isinstance(self.scorer, str) and self.scorer
                                            or isinstance(self.scorer, dict)):
            raise InvalidSearchParam("search.scorer", "must be a scorer name or a verifier object "
                                                      f"{{\"url\": ...}}, got {shown(self.scorer)}")


@dataclass(frozen=True)
class PruneSettings:
    warmup: int = bounded(4, 1, 64, doc=(
        "Samples generated to their end first (in mcts and critic: the tree's first steps); their confidence "
        "sets the threshold."))
    # DeepConf-low, the setting of the paper's largest savings.
    percentile: float = bounded(90.0, 0.0, 100.0, doc=(
        "Percentile of the warm-up samples' lowest window confidence that later samples must stay above: "
        "90 keeps the most confident tenth (DeepConf-low), 10 keeps nine tenths (DeepConf-high)."))
    # The paper's 2048 tokens is a few percent of its 20k-60k token traces and would never fill
    # on our 64-512 token answers. On 32 tune problems (n=16, bench/RESULTS.md) a window of 16
    # tokens, a short sentence, spent 0.50x the unpruned tokens where 32 spent 0.61x, at
    # overlapping accuracy: it can stop a sample after its first sixteenth of 256.
    window: int = bounded(16, 1, 4096, doc="Tokens in the sliding window whose mean confidence is checked.")
    batch: int = bounded(0, 0, 64, doc=(
        "Samples drawn at once after the warm-up, the vote checked between batches, so a settled vote "
        "leaves the next ones undrawn (DeepConf's online loop draws one at a time); 0: all at once, "
        "the lowest latency. The step searches do not use it."))
    consensus: float = bounded(0.95, 0.0, 1.0, low_inclusive=False, doc=(
        "Stop every running sample once the confidence-weighted vote's leader holds this share (1: never); "
        "the step searches have no vote to settle and do not use it."))

    def __post_init__(self) -> None:
        check_fields(self, "prune.")


def prune_settings(value) -> PruneSettings | None:
    """`search.prune` as the client wrote it: true (the defaults), false or null (off), or an object."""
    if value is None or value is False:
        return None
    if value is True:
        return PruneSettings()
    if isinstance(value, PruneSettings):
        return value
    if not isinstance(value, dict):
        raise InvalidSearchParam("search.prune", f"must be true, false or an object, got {shown(value)}")
    known = {declared.name for declared in fields(PruneSettings)}
    for key in value:
        if key not in known:
            raise InvalidSearchParam(f"search.prune.{str(key)[:64]}", f"unknown; known: {', '.join(sorted(known))}")
    return PruneSettings(**value)


@dataclass
class PrunableParams(CommonParams):
    """The parameters of a strategy that draws independent samples, which it can prune."""

    prune: PruneSettings | None = field(default=None, metadata={
        "settings": PruneSettings,
        "doc": "Online confidence pruning (DeepConf): true for the defaults, or an object of its settings."})

    def __post_init__(self) -> None:
        self.prune = prune_settings(self.prune)
        super().__post_init__()


@lru_cache(maxsize=1)
def fitted_margins() -> dict:
    return json.loads(MARGINS_FILE.read_text())


def margin_key(strategy: str, scorer: str | None, support: str) -> str:
    return f"{strategy}/{scorer or '-'}/{support}"


def greedy_margin(params: CommonParams, strategy: str, scorer: str | None,
                  support: str) -> tuple[float, str, str]:
    """The margin the search's choice must beat greedy's support by, its margin_key, and where
    the margin comes from."""
    key = margin_key(strategy, scorer, support)
    if params.greedy_margin is not None:
        return params.greedy_margin, key, "search.greedy_margin"
    fitted = fitted_margins()["margins"].get(key)
    if fitted is None:
        return 0.0, key, "not fitted: 0"
    return fitted["margin"], key, f"fitted by {fitted_margins()['fitted_by']}"


@dataclass
class StepParams(PrunableParams):
    """What the step searches (mcts, critic) add: where one reasoning step ends."""

    step_delimiter: str = "\n\n"
    # A tree needs its children to differ; 0.7 as in AlphaLLM and ReST-MCTS*.
    temperature: float = 0.7

    def __post_init__(self) -> None:
        super().__post_init__()
        delimiter = self.step_delimiter
        if not isinstance(delimiter, str) or not 1 <= len(delimiter) <= 32:
            raise InvalidSearchParam("search.step_delimiter",
                                     f"must be a string of 1 to 32 characters, got {shown(delimiter)}")
