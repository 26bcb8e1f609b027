"""The search tree every strategy builds: best-of-N is a root with N children, MCTS goes deeper.

A node holds only its own continuation; the text the model saw at a node is the prompt
followed by `path_ids()`, which keeps extending a node exact in token space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator


@dataclass(eq=False)
class Node:
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    visits: int = 0
    value_sum: float = 0.0
    score: float | None = None
    terminal: bool = False
    answer: str | None = None
    children: list[Node] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False)

    @property
    def value(self) -> float:
        """Mean backed-up value; 0 for a node never visited."""
        return self.value_sum / self.visits if self.visits else 0.0

    def add_child(self, **fields) -> Node:
        child = Node(parent=self, **fields)
        self.children.append(child)
        return child

    def path_ids(self) -> list[int]:
        """Token ids from the root down to and including this node."""
        chain = []
        node: Node | None = self
        while node is not None:
            chain.append(node.token_ids)
            node = node.parent
        return [token for ids in reversed(chain) for token in ids]

    def walk(self) -> Iterator[Node]:
        """This node and all its descendants, depth first."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def to_dict(self) -> dict:
        """Compact form: fields still at their defaults are left out."""
        data: dict = {}
        if self.token_ids:
            data["ids"] = list(self.token_ids)
        if self.text:
            data["text"] = self.text
        if self.visits:
            data["visits"] = self.visits
        if self.value_sum:
            data["value_sum"] = self.value_sum
        if self.score is not None:
            data["score"] = self.score
        if self.terminal:
            data["terminal"] = True
        if self.answer is not None:
            data["answer"] = self.answer
        if self.children:
            data["children"] = [child.to_dict() for child in self.children]
        return data

    @classmethod
    def from_dict(cls, data: dict, parent: Node | None = None) -> Node:
        node = cls(
            token_ids=list(data.get("ids", [])),
            text=data.get("text", ""),
            visits=data.get("visits", 0),
            value_sum=data.get("value_sum", 0.0),
            score=data.get("score"),
            terminal=data.get("terminal", False),
            answer=data.get("answer"),
            parent=parent,
        )
        node.children = [cls.from_dict(child, node) for child in data.get("children", [])]
        return node


@dataclass(eq=False)
class Tree:
    root: Node = field(default_factory=Node)

    def nodes(self) -> Iterator[Node]:
        return self.root.walk()

    def leaves(self) -> list[Node]:
        return [node for node in self.nodes() if not node.children and node is not self.root]

    def to_dict(self) -> dict:
        return {"root": self.root.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> Tree:
        return cls(Node.from_dict(data["root"]))
