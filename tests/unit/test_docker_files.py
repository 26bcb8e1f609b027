"""The deployment files, checked without Docker: the images build on a base chosen at build time
(official by default, pinned to deliberate's vLLM), and the compose stack names configurable images
and a command for every service, so it runs on official images and on local stand-ins alike."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
ROOT = DOCKER.parent
REPLICAS = {"deliberate-a", "deliberate-b"}


def instructions(dockerfile: str) -> list[str]:
    text = (DOCKER / dockerfile).read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def pinned_vllm() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return next(req.split("==")[1] for req in extras["gpu"] if req.startswith("vllm=="))


@pytest.mark.parametrize("dockerfile, default", [
    ("Dockerfile.gpu", f"vllm/vllm-openai:v{pinned_vllm()}"),
    ("Dockerfile.cpu", "python:3.11-slim-bookworm"),
])
def test_each_image_builds_on_a_base_given_at_build_time(dockerfile, default):
    lines = instructions(dockerfile)
    assert lines[0] == f"ARG BASE_IMAGE={default}" and lines[1] == "FROM ${BASE_IMAGE}"
    assert sum(line.startswith("FROM ") for line in lines) == 1


def test_the_cpu_image_gets_torchs_cpu_build_and_bakes_in_the_model():
    lines = instructions("Dockerfile.cpu")
    torch = next(line for line in lines if "torch==" in line)
    assert "$TORCH_PIP_ARGS" in torch and any(line.startswith("ARG TORCH_PIP_ARGS=") for line in lines)
    assert any("prepare_default_model()" in line for line in lines)
    # pip's CA comes in as a build secret, never as a file in a layer.
    assert all("--mount=type=secret,id=pip_cert" in line for line in lines if "pip install" in line)


def compose(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def test_the_stack_names_its_images_and_commands_so_either_kind_runs():
    services = compose("compose.yaml")["services"]
    assert set(services) == REPLICAS | {"redis", "loadbalancer", "prometheus"}
    variables = {"redis": "REDIS_IMAGE", "loadbalancer": "NGINX_IMAGE", "prometheus": "PROMETHEUS_IMAGE",
                 "deliberate-a": "DELIBERATE_IMAGE", "deliberate-b": "DELIBERATE_IMAGE"}
    for name, service in services.items():
        assert re.fullmatch(r"\$\{%s:-[^}]+\}" % variables[name], service["image"]), name
        assert service.get("command"), name
    assert "--redis-url redis://redis:6379/0" in services["deliberate-a"]["command"]


@pytest.mark.parametrize("overlay", ["compose.gpu.yaml", "compose.cpu.yaml"])
def test_the_hardware_overlays_touch_only_the_replicas(overlay):
    assert set(compose(overlay)["services"]) == REPLICAS


def test_nginx_and_prometheus_reach_both_replicas():
    nginx = (DOCKER / "nginx.conf").read_text()
    assert set(re.findall(r"server (deliberate-[ab]):8000", nginx)) == REPLICAS
    assert "non_idempotent" in nginx  # a POST in flight on a stopped replica is retried on the other
    targets = compose("prometheus.yml")["scrape_configs"][0]["static_configs"][0]["targets"]
    assert {target.split(":")[0] for target in targets} == REPLICAS


def test_the_build_script_parses():
    assert subprocess.run(["bash", "-n", str(DOCKER / "build.sh")]).returncode == 0
