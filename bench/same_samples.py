"""Do deliberate and vLLM's own server sample the same texts under the same --seed?

Starts each server in turn with `bench.vllm_suite`'s command lines (one engine at a time), sends
the same unseeded temperature-1 requests in the same order, and prints both servers' texts; exit
status 1 if they differ. Unseeded samples follow the engine's global random stream, so anything
deliberate does to the engine before serving (a sampled warm-up) shows up here.

    python -m bench.same_samples
"""

from __future__ import annotations

import sys
from pathlib import Path

from openai import OpenAI

from bench.vllm_suite import default_model_dir, server_commands, start_server, stop_server
from bench.vllm_suite_plugin import SERVED_MODEL_NAME

REQUESTS = 4
PORTS = {"vllm": 8001, "deliberate": 8002}


def sampled_texts(url: str) -> list[str]:
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    return [client.chat.completions.create(
        model=SERVED_MODEL_NAME, messages=[{"role": "user", "content": "Tell me a fact."}], max_tokens=16,
        temperature=1.0, logprobs=True, top_logprobs=5).choices[0].message.content for _ in range(REQUESTS)]


def main() -> int:
    commands = server_commands(default_model_dir(), PORTS["vllm"], PORTS["deliberate"])
    texts = {}
    for name, port in PORTS.items():
        url = f"http://127.0.0.1:{port}"
        server = start_server(commands[name], url, Path(f"/tmp/same-samples-{name}.log"))
        try:
            texts[name] = sampled_texts(url)
        finally:
            stop_server(server)
    for index, (ours, theirs) in enumerate(zip(texts["deliberate"], texts["vllm"])):
        print(f"{index}: {'same' if ours == theirs else 'DIFFERENT'}\n  vLLM:       {theirs!r}\n  deliberate: {ours!r}")
    return 0 if texts["deliberate"] == texts["vllm"] else 1


if __name__ == "__main__":
    sys.exit(main())
