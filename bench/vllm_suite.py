"""vLLM's own OpenAI-server tests, from vLLM's sdist, against a server that is already running.

Each test module of the sdist launches `vllm serve` with a model and flags of its own. Here the
tests run against one server started beforehand (vLLM's or deliberate's) with the flags that
`flags` prints, so the same selection runs on both and the results compare one to one:

    python -m bench.vllm_suite flags                     # the two servers' command lines
    python -m bench.vllm_suite run --url http://127.0.0.1:8001 --out bench/results/vllm_suite/vllm.json
    python -m bench.vllm_suite run --url http://127.0.0.1:8002 --out bench/results/vllm_suite/deliberate.json
    python -m bench.vllm_suite compare bench/results/vllm_suite/vllm.json bench/results/vllm_suite/deliberate.json

or all of it in one go, one server at a time (about an hour here):

    python -m bench.vllm_suite both --out-dir bench/results/vllm_suite --server-only

Sampled outcomes (a test that checks what the model happened to write) differ between two runs
of the same server, as batches form differently; `--times K` with test ids after `--` runs them K
times on each server and compares pass rates:

    python -m bench.vllm_suite both --out-dir DIR --times 10 -- tests/entrypoints/openai/...::test_x

`run` copies the sdist's tests into a scratch directory (the sdist's `vllm/` source must not shadow
the installed package) and runs pytest there with `bench/vllm_suite_plugin.py`, which attaches the
tests to the URL, deselects what one server cannot stand for and writes the report. Arguments
after `--` go to pytest (`-k chat`, `-x`, a test path under tests/entrypoints/...).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import vllm_suite_plugin as plugin

REPO = Path(__file__).resolve().parent.parent
TEST_DIRS = ["tests/entrypoints/openai", "tests/entrypoints/serve"]
# The Makefile's ENGINE_ARGS, the seed the tests' own launcher gives every server, and the engine
# defaults deliberate chooses on a CPU (block size, no chunked prefill), spelled out for both.
ENGINE_FLAGS = ["--max-model-len", "2048", "--enforce-eager", "--dtype", "bfloat16", "--seed", "0",
                "--block-size", "32", "--no-enable-chunked-prefill"]


def default_model_dir() -> str:
    from server.default_model import prepare_default_model

    return str(prepare_default_model())


def server_commands(model_dir: str, vllm_port: int, deliberate_port: int) -> dict[str, str]:
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"), **plugin.SERVER_ENV}
    python = shlex.quote(str(Path(sys.executable)))
    prefix = " ".join(f"{name}={value}" for name, value in env.items())
    flags = shlex.join([*ENGINE_FLAGS, *plugin.server_flags()])
    return {
        "vllm": f"{prefix} {python} -m vllm.entrypoints.openai.api_server --model {shlex.quote(model_dir)} "
                f"--host 127.0.0.1 --port {vllm_port} {flags}",
        "deliberate": f"{prefix} {python} -m server serve {shlex.quote(model_dir)} "
                      f"--host 127.0.0.1 --port {deliberate_port} {flags}",
    }


def check_health(url: str) -> None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            if response.status == 200:
                return
    except OSError as error:
        raise SystemExit(f"no server answers at {url}/health ({error}); start one with the flags `flags` prints")
    raise SystemExit(f"{url}/health answered {response.status}")


def prepare_workspace(vllm_src: Path, workspace: Path) -> None:
    """The sdist's tests and its pytest settings (markers), without its `vllm/` source tree."""
    if not (vllm_src / "tests" / "utils.py").is_file():
        raise SystemExit(f"{vllm_src} holds no vLLM sdist tests (tests/utils.py)")
    shutil.copytree(vllm_src / "tests", workspace / "tests",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(vllm_src / "pyproject.toml", workspace / "pyproject.toml")


def run(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/").removesuffix("/v1")
    if not args.collect_only:
        check_health(url)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # a report left from an earlier run must not pass for this one
    workspace = Path(tempfile.mkdtemp(prefix="vllm-suite-"))
    try:
        prepare_workspace(Path(args.vllm_src), workspace)
        # Test paths after `--` replace the default directories rather than add to them.
        chosen = [arg for arg in args.pytest_args if arg.startswith("tests/")] or TEST_DIRS
        options = [arg for arg in args.pytest_args if not arg.startswith("tests/")]
        command = [sys.executable, "-m", "pytest", "-p", "bench.vllm_suite_plugin", *chosen,
                   "--vllm-suite-url", url, "--vllm-suite-model-dir", args.model or default_model_dir(),
                   "--vllm-suite-report", str(out), "-q", "-rN", "-p", "no:cacheprovider",
                   *(["--vllm-suite-server-only"] if args.server_only else []),
                   *(["--collect-only"] if args.collect_only else []), *options]
        env = dict(os.environ)
        # No network here: a download fails at once instead of retrying. The repository goes on
        # the path after the workspace (pytest's cwd comes first) so `tests` stays vLLM's.
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        print("$", shlex.join(command), flush=True)
        returncode = subprocess.call(command, cwd=workspace, env=env)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    # Failing tests are results (pytest exits 1), not a failure of the harness.
    return 0 if returncode in (0, 1) and out.is_file() else returncode or 1


def compare(args: argparse.Namespace) -> int:
    baseline, candidate = (json.loads(Path(path).read_text()) for path in (args.baseline, args.candidate))
    base_tests, cand_tests = baseline["tests"], candidate["tests"]
    if set(base_tests) != set(cand_tests):
        print(f"warning: the selections differ ({len(set(base_tests) - set(cand_tests))} tests only in "
              f"{args.baseline}, {len(set(cand_tests) - set(base_tests))} only in {args.candidate})")
    for name, report in ((args.baseline, baseline), (args.candidate, candidate)):
        print(f"{name} ({report['url']}):")
        for kind, counts in report["counts_by_kind"].items():
            print(f"  {kind:6} " + ", ".join(f"{n} {outcome}" for outcome, n in counts.items()))
    passed = [nodeid for nodeid, test in base_tests.items() if test["outcome"] == "passed"]
    lost = [nodeid for nodeid in passed if cand_tests.get(nodeid, {}).get("outcome") != "passed"]
    gained = [nodeid for nodeid, test in cand_tests.items()
              if test["outcome"] == "passed" and base_tests.get(nodeid, {}).get("outcome") != "passed"]
    print(f"\n{len(passed) - len(lost)} of the {len(passed)} tests that passed on {args.baseline} "
          f"passed on {args.candidate}; {len(gained)} passed only on {args.candidate}.")
    if lost:
        print(f"\npassed on {args.baseline}, not on {args.candidate}:")
        for nodeid in lost:
            print(f"  {base_tests[nodeid]['kind']:6} {cand_tests.get(nodeid, {}).get('outcome', 'absent'):8} {nodeid}")
    return 1 if lost else 0


def start_server(command: str, url: str, log: Path, timeout_s: float = 600) -> subprocess.Popen:
    print(f"$ {command}\n  (log: {log})", flush=True)
    server = subprocess.Popen(command, shell=True, cwd=REPO, start_new_session=True,
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was healthy; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return server
        except OSError:
            time.sleep(2)
    stop_server(server)
    raise SystemExit(f"the server was not healthy after {timeout_s:.0f} s; see {log}")


def stop_server(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGINT)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def both(args: argparse.Namespace) -> int:
    """vLLM's server, then deliberate's, each started with `flags`' command line, never both at once."""
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    commands = server_commands(args.model or default_model_dir(), args.vllm_port, args.deliberate_port)
    ports = {"vllm": args.vllm_port, "deliberate": args.deliberate_port}
    reports = {"vllm": [], "deliberate": []}
    for name in reports:
        url = f"http://127.0.0.1:{ports[name]}"
        server = start_server(commands[name], url, out_dir / f"{name}.log")
        try:
            for round_index in range(args.times):
                report = out_dir / (f"{name}.json" if args.times == 1 else f"{name}-{round_index}.json")
                returncode = run(argparse.Namespace(url=url, out=str(report), vllm_src=args.vllm_src,
                                                    model=args.model, server_only=args.server_only,
                                                    collect_only=False, pytest_args=args.pytest_args))
                if returncode:
                    return returncode
                reports[name].append(report)
        finally:
            stop_server(server)
    if args.times == 1:
        return compare(argparse.Namespace(baseline=str(reports["vllm"][0]), candidate=str(reports["deliberate"][0])))
    return pass_rates(reports)


def pass_rates(reports: dict[str, list[Path]]) -> int:
    """Each test's passes out of the runs, per server; 1 if vLLM's passed one more often."""
    tests = {name: [json.loads(path.read_text())["tests"] for path in paths] for name, paths in reports.items()}
    names = sorted({test for run in tests["vllm"] for test in run})
    worse = 0
    print(f"{'vLLM':>6} {'deliberate':>10}  test")
    for test in names:
        passed = {name: sum(run.get(test, {}).get("outcome") == "passed" for run in runs)
                  for name, runs in tests.items()}
        print(f"{passed['vllm']:>3}/{len(tests['vllm'])} {passed['deliberate']:>7}/{len(tests['deliberate'])}  {test}")
        worse += passed["deliberate"] < passed["vllm"]
    return 1 if worse else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vllm_suite", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    flags = commands.add_parser("flags", help="print the command lines of both servers")
    flags.add_argument("--model", help="model directory (default: the embedded SmolLM2-135M-Instruct)")
    flags.add_argument("--vllm-port", type=int, default=8001)
    flags.add_argument("--deliberate-port", type=int, default=8002)

    run_parser = commands.add_parser("run", help="run the tests against a running server")
    run_parser.add_argument("--url", required=True, help="the server's root URL, e.g. http://127.0.0.1:8001")
    run_parser.add_argument("--out", required=True, help="the JSON report to write")
    run_parser.add_argument("--vllm-src", default=os.environ.get("VLLM_SRC", "/tmp/vllm-src"),
                            help="the unpacked vLLM 0.32.0 sdist (default $VLLM_SRC or /tmp/vllm-src)")
    run_parser.add_argument("--model", help="the served model's directory (default: the embedded model)")
    run_parser.add_argument("--server-only", action="store_true", help="skip the tests that use no server")
    run_parser.add_argument("--collect-only", action="store_true",
                            help="only list the selection (no server needed)")
    run_parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")

    both_parser = commands.add_parser("both", help="start each server in turn, run the tests on it, compare")
    both_parser.add_argument("--out-dir", required=True, help="where vllm.json, deliberate.json and the logs go")
    both_parser.add_argument("--vllm-port", type=int, default=8001)
    both_parser.add_argument("--deliberate-port", type=int, default=8002)
    both_parser.add_argument("--vllm-src", default=os.environ.get("VLLM_SRC", "/tmp/vllm-src"),
                             help="the unpacked vLLM 0.32.0 sdist")
    both_parser.add_argument("--model", help="model directory (default: the embedded model)")
    both_parser.add_argument("--server-only", action="store_true", help="skip the tests that use no server")
    both_parser.add_argument("--times", type=int, default=1, help="runs per server (then pass rates are compared)")
    both_parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")

    compare_parser = commands.add_parser("compare", help="tests passed on the first report, not on the second")
    compare_parser.add_argument("baseline", help="report of vLLM's server")
    compare_parser.add_argument("candidate", help="report of deliberate's server")

    args = parser.parse_args(argv)
    if args.command == "flags":
        for name, command in server_commands(args.model or default_model_dir(),
                                             args.vllm_port, args.deliberate_port).items():
            print(f"# {name}\n{command}\n")
        return 0
    return {"run": run, "both": both, "compare": compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
