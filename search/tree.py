"""The search tree every strategy builds: best-of-N is a root with N children, MCTS goes deeper.

A node holds only its own continuation (in a step search, one reasoning step); the text the
model saw at a node is the prompt followed by `path_ids()`, which keeps extending a node exact
in token space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from search.types import CallTrace


@dataclass(eq=False)
class Node:
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)  # one per token id
    # The engine's self-certainty of each sampled token, when the search asked for it; a
    # delimiter the search appended itself was not sampled and has none.
    self_certainty: list[float] | None = None
    visits: int = 0
    value_sum: float = 0.0
    prior: float | None = None
    score: float | None = None
    terminal: bool = False
    answer: str | None = None
    call: CallTrace | None = None  # the engine call that generated this node's step
    pruned: bool = False  # its confidence fell below the tree's threshold: never grown further
    children: list[Node] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False)

    @property
    def value(self) -> float:
        """Mean backed-up value; 0 for a node never visited."""
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def depth(self) -> int:
        """Steps from the root: 0 for the root itself."""
        return len(self.path()) - 1

    def add_child(self, **fields) -> Node:
        child = Node(parent=self, **fields)
        self.children.append(child)
        return child

    def path(self) -> list[Node]:
        """The nodes from the root down to and including this one."""
        chain = []
        node: Node | None = self
        while node is not None:
            chain.append(node)
            node = node.parent
        return chain[::-1]

    def path_ids(self) -> list[int]:
        """Token ids from the root down to and including this node."""
        return [token for node in self.path() for token in node.token_ids]

    def path_text(self) -> str:
        return "".join(node.text for node in self.path())

    def path_logprobs(self) -> list[float]:
        return [logprob for node in self.path() for logprob in node.logprobs]

    def path_self_certainty(self) -> list[float] | None:
        """The recorded self-certainty of every sampled token from the root down; None when a
        step on the path has no record."""
        steps = self.path()[1:]
        if any(node.self_certainty is None for node in steps):
            return None
        return [value for node in steps for value in node.self_certainty]

    def address(self) -> str:
        """Child indices from the root, "0.2.1"; "" for the root. Names a node in a trace."""
        indices = [str(node.parent.children.index(node)) for node in self.path()[1:]]
        return ".".join(indices)

    def walk(self) -> Iterator[Node]:
        """This node and all its descendants, depth first."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def to_dict(self) -> dict:
        """Compact form: fields still at their defaults are left out."""
        data = self.own_dict()
        if self.children:
            data["children"] = [child.to_dict() for child in self.children]
        return data

    def own_dict(self) -> dict:
        """to_dict of this node alone, without its children."""
        data: dict = {}
        if self.token_ids:
            data["ids"] = list(self.token_ids)
        if self.text:
            data["text"] = self.text
        if self.logprobs:
            data["logprobs"] = list(self.logprobs)
        if self.self_certainty is not None:
            data["sc"] = list(self.self_certainty)
        if self.visits:
            data["visits"] = self.visits
        if self.value_sum:
            data["value_sum"] = self.value_sum
        if self.prior is not None:
            data["prior"] = self.prior
        if self.score is not None:
            data["score"] = self.score
        if self.terminal:
            data["terminal"] = True
        if self.answer is not None:
            data["answer"] = self.answer
        if self.call is not None:
            data["call"] = self.call.to_dict()
        if self.pruned:
            data["pruned"] = True
        return data

    def view(self) -> dict:
        """What a viewer draws of this node: own_dict without the per-token lists (the mean
        self-certainty instead), with its address."""
        data = {key: value for key, value in self.own_dict().items() if key not in ("ids", "logprobs", "sc")}
        if self.self_certainty:
            data["self_certainty"] = sum(self.self_certainty) / len(self.self_certainty)
        data["address"] = self.address()
        return data

    @classmethod
    def from_dict(cls, data: dict, parent: Node | None = None) -> Node:
        node = cls(
            token_ids=list(data.get("ids", [])),
            text=data.get("text", ""),
            logprobs=list(data.get("logprobs", [])),
            self_certainty=data.get("sc"),
            visits=data.get("visits", 0),
            value_sum=data.get("value_sum", 0.0),
            prior=data.get("prior"),
            score=data.get("score"),
            terminal=data.get("terminal", False),
            answer=data.get("answer"),
            call=CallTrace.from_dict(data["call"]) if "call" in data else None,
            pruned=data.get("pruned", False),
            parent=parent,
        )
        node.children = [cls.from_dict(child, node) for child in data.get("children", [])]
        return node


@dataclass(eq=False)
class Tree:
    root: Node = field(default_factory=Node)
    iterations: int = 0  # search iterations spent on this tree, over every run that grew it
    # Engine calls and generated tokens over every run that grew it: a run continuing the tree
    # counts its own calls' traces after them.
    engine_calls: int = 0
    spent_tokens: int = 0
    # Child indices from the root along greedy decoding's path, as far as the tree holds it.
    greedy_path: list[int] = field(default_factory=list)
    # The confidence a step must keep under search.prune, set by the tree's first steps.
    prune_threshold: float | None = None

    def nodes(self) -> Iterator[Node]:
        return self.root.walk()

    def leaves(self) -> list[Node]:
        return [node for node in self.nodes() if not node.children and node is not self.root]

    def to_dict(self) -> dict:
        data: dict = {"root": self.root.to_dict()}
        if self.iterations:
            data["iterations"] = self.iterations
        if self.engine_calls:
            data["engine_calls"] = self.engine_calls
        if self.spent_tokens:
            data["spent_tokens"] = self.spent_tokens
        if self.greedy_path:
            data["greedy_path"] = list(self.greedy_path)
        if self.prune_threshold is not None:
            data["prune_threshold"] = self.prune_threshold
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Tree:
        return cls(Node.from_dict(data["root"]), data.get("iterations", 0), data.get("engine_calls", 0),
                   data.get("spent_tokens", 0), list(data.get("greedy_path", [])), data.get("prune_threshold"))


class Growth:
    """What a tree gained since the last look, for a live view: the view of each node new since
    then (parents before children), and `[address, visits, value_sum, score]` of each earlier
    node whose stats changed. The first look sees the whole tree (a stored one included)."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self.seen: dict[Node, tuple] = {}

    def since_last(self) -> dict:
        new, moved = [], []
        for node in self.tree.nodes():
            stats = (node.visits, node.value_sum, node.score)
            if node not in self.seen:
                new.append(node.view())
            elif self.seen[node] != stats:
                moved.append([node.address(), *stats])
            self.seen[node] = stats
        return {"nodes": new, "stats": moved}
