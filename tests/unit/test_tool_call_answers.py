"""Votes over tool calls compare function names and arguments, not the text around them."""

from types import SimpleNamespace

from scorers import MathAnswers
from server.routes import ToolCallAnswers


class FakeToolParser:
    """What vLLM's parser returns: the calls it found in a text (here: `name(json)` lines)."""

    def extract_tool_calls(self, text, request):
        calls = [SimpleNamespace(function=SimpleNamespace(name=line.split("(", 1)[0], arguments=line.split("(", 1)[1][:-1]))
                 for line in text.splitlines() if line.endswith(")") and "(" in line]
        return SimpleNamespace(tools_called=bool(calls), tool_calls=calls, content=None if calls else text)


def test_tool_calls_vote_by_name_and_canonical_arguments_else_by_the_final_answer():
    answers = ToolCallAnswers(FakeToolParser(), request=None, text_answers=MathAnswers())
    paris = answers.extract('get_weather({"city": "Paris", "unit": "C"})')
    assert answers.equivalent(paris, answers.extract('Let me check.\nget_weather({"unit":"C","city":"Paris"})'))
    assert not answers.equivalent(paris, answers.extract('get_weather({"city": "Rome"})'))
    assert not answers.equivalent(paris, answers.extract("The answer is 5."))
    assert answers.equivalent(answers.extract("The answer is 5."), answers.extract("So it is 5.0"))
